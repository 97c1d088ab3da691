-- Realigning white-box extraction: undoes a permutation and positive rescaling of
-- the watermarked layer's units (function-preserving attacks that defeat naive
-- extraction) by matching the suspect's units to the reference activations that
-- the key stored for its trigger inputs when the mark was embedded.
local core = require "deepsigns.core"

local R = {}

-- columns standardised to zero mean and unit norm (dead units stay zero)
local function standardise(h)
  local n = core.tensor.size(h, 1)
  local mean = core.ops.binary("div", core.ops.sum(h, 1, true), n)
  local c = core.ops.binary("sub", h, mean)
  local norm = core.ops.unary("sqrt", core.ops.sum(core.ops.binary("mul", c, c), 1, true))
  core.ops.binary_("maximum", norm, norm, 1e-12)
  return core.ops.binary("div", c, norm)
end

-- match[j] = suspect unit for reference unit j, scale[j] = suspect / reference
function R.match(ref, sus)
  local m = core.tensor.size(ref, 2)
  if core.tensor.size(sus, 2) ~= m or core.tensor.size(sus, 1) ~= core.tensor.size(ref, 1) then
    error(string.format("realign: the suspect layer has %d units for %d reference units", core.tensor.size(sus, 2), m), 3)
  end
  local corr = core.tensor.flat(core.ops.matmul(core.tensor.transpose(standardise(ref), 1, 2), standardise(sus))) -- m x m
  local best, order = {}, {}
  for j = 1, m do
    local b = -math.huge
    for k = 1, m do local v = corr[(j - 1) * m + k]; if v > b then b = v end end
    best[j], order[j] = b, j
  end
  table.sort(order, function(a, b) return best[a] > best[b] or (best[a] == best[b] and a < b) end)
  local used, match = {}, {}
  for _, j in ipairs(order) do
    local bk, bv = nil, -math.huge
    for k = 1, m do
      local v = corr[(j - 1) * m + k]
      if not used[k] and v > bv then bk, bv = k, v end
    end
    match[j], used[bk] = bk, true
  end
  -- least-squares positive scale per matched pair: sus ~ s * ref
  local rt, st = core.tensor.totable(core.tensor.transpose(ref, 1, 2)), core.tensor.totable(core.tensor.transpose(sus, 1, 2))
  local scale = {}
  for j = 1, m do
    local r, s = rt[j], st[match[j]]
    local num, den = 0, 0
    for i = 1, #r do num = num + r[i] * s[i]; den = den + r[i] * r[i] end
    local v = den > 0 and num / den or 1
    scale[j] = v > 0 and v or 1
  end
  return match, scale
end

-- Per-target mean activations after realignment (s x M), as Key:target_means.
function R.target_means(model, key)
  if not key.reference_acts then
    error("whitebox.extract: realign needs reference activations in the key (keys made by whitebox.embed have them)", 3)
  end
  local h = key:activations(model, key.trigger_x)
  -- the trigger rows the reference activations were taken from (keys of earlier
  -- versions: the first ones)
  local rows = key.reference_rows
  local sus = rows and core.ops.index_select(h, rows) or core.tensor.narrow(h, 1, 1, core.tensor.size(key.reference_acts, 1))
  local match, scale = R.match(key.reference_acts, sus)
  local aligned = core.tensor.transpose(core.ops.index_select(core.tensor.contiguous(core.tensor.transpose(h, 1, 2)), match), 1, 2)
  aligned = core.ops.binary("div", aligned, core.tensor.reshape(core.tensor.from_table(scale), {1, #scale}))
  return key:target_means(model, aligned)
end

return R
