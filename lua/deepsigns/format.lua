-- Readable printing of tensors (Torch7 style): one number format per tensor,
-- large tensors summarised with "...", and a footer with type and shape.
local core = require "deepsigns.core"

local F = {}
local SUMMARY_AT, EDGE = 1000, 3

local shape_str = require("deepsigns.util").shape_str

-- One format for all shown values: integers, fixed or scientific.
local function number_format(values)
  local all_int, maxabs, minabs = true, 0, math.huge
  for _, v in ipairs(values) do
    if v ~= v or v == math.huge or v == -math.huge then goto continue end
    if v ~= math.floor(v) then all_int = false end
    local a = math.abs(v)
    if a > maxabs then maxabs = a end
    if a > 0 and a < minabs then minabs = a end
    ::continue::
  end
  if all_int and maxabs < 1e9 then
    local w = #string.format("%d", math.floor(maxabs)) + 1
    return function(v)
      if v ~= v then return string.format("%" .. w .. "s", "nan") end
      if v == math.huge or v == -math.huge then return string.format("%" .. w .. "s", v > 0 and "inf" or "-inf") end
      return string.format("%" .. w .. "d", math.floor(v))
    end, w
  end
  if maxabs >= 1e5 or (minabs < 1e-4 and minabs ~= math.huge) then
    return function(v) return string.format("%11.4e", v) end, 11
  end
  local w = #string.format("%.4f", maxabs) + 1
  return function(v) return string.format("%" .. w .. ".4f", v) end, w
end

-- positions to show along a dimension of size n (nil marks the "..." gap)
local function positions(n, summarise)
  local p = {}
  if summarise and n > 2 * EDGE then
    for i = 1, EDGE do p[#p + 1] = i end
    p[#p + 1] = false
    for i = n - EDGE + 1, n do p[#p + 1] = i end
  else
    for i = 1, n do p[i] = i end
  end
  return p
end

-- collect shown values (for the format) by walking the shown positions
local function gather(t, shape, summarise, out, prefix)
  local d = #prefix + 1
  if d > #shape then
    out[#out + 1] = core.tensor.get(t, table.unpack(prefix))
    return
  end
  for _, i in ipairs(positions(shape[d], summarise)) do
    if i then
      prefix[d] = i
      gather(t, shape, summarise, out, prefix)
      prefix[d] = nil
    end
  end
end

local function matrix_lines(t, shape, summarise, fmt, prefix, lines)
  local nd = #shape
  local rows = nd >= 2 and shape[nd - 1] or 1
  local cols = shape[nd]
  for _, r in ipairs(positions(rows, summarise)) do
    if not r then
      lines[#lines + 1] = " ..."
    else
      local parts = {}
      for _, c in ipairs(positions(cols, summarise)) do
        if not c then
          parts[#parts + 1] = " ..."
        else
          local idx = {table.unpack(prefix)}
          if nd >= 2 then idx[#idx + 1] = r end
          idx[#idx + 1] = c
          parts[#parts + 1] = fmt(core.tensor.get(t, table.unpack(idx)))
        end
      end
      lines[#lines + 1] = table.concat(parts, " ")
    end
  end
end

local function slices(t, shape, summarise, fmt, prefix, lines)
  local d = #prefix + 1
  if d >= #shape - 1 then
    local label = {}
    for i = 1, #prefix do label[i] = tostring(prefix[i]) end
    lines[#lines + 1] = "(" .. table.concat(label, ",") .. ",.,.) = "
    matrix_lines(t, shape, summarise, fmt, prefix, lines)
    lines[#lines + 1] = ""
    return
  end
  for _, i in ipairs(positions(shape[d], summarise)) do
    if not i then
      lines[#lines + 1] = "(...)"
      lines[#lines + 1] = ""
    else
      prefix[d] = i
      slices(t, shape, summarise, fmt, prefix, lines)
      prefix[d] = nil
    end
  end
end

function F.tensor(t)
  local shape = core.tensor.size(t)
  local footer = "[deepsigns.Tensor float32 " .. shape_str(shape) .. "]"
  local n = core.tensor.numel(t)
  if n == 0 then return "[empty]\n" .. footer end
  if #shape == 0 then
    local fmt = number_format({core.tensor.item(t)})
    return (fmt(core.tensor.item(t)):gsub("^%s+", "")) .. "\n" .. footer
  end
  local summarise = n > SUMMARY_AT
  local vals = {}
  gather(t, shape, summarise, vals, {})
  local fmt = number_format(vals)
  local lines = {}
  if #shape <= 2 then
    matrix_lines(t, shape, summarise, fmt, {}, lines)
  else
    slices(t, shape, summarise, fmt, {}, lines)
  end
  lines[#lines + 1] = footer
  return table.concat(lines, "\n")
end

return F
