-- White-box DeepSigns: an N-bit signature hidden in the Gaussian-mixture density
-- of one hidden layer's activations, read back with a secret projection matrix A
-- and secret trigger inputs. Two loss formulations (deepsigns.md §2):
--   "reference": the authors' demo (trainable centres c, L1..L4, gamma1 = gamma2 = 0.01);
--   "paper":     the v1 equations: loss1 around trainable target means mu_T (its separation
--                term capped so that it is bounded), loss2 through the target means.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"
local class = require "deepsigns.class"
local cjson = require "cjson"
local L = require "deepsigns.watermark.losses"
local K = require "deepsigns.watermark.keyfile"
local stats = require "deepsigns.stats"
local U = require "deepsigns.util"

local WB = {}
WB.FORMAT = "deepsigns-wb-key"
WB.DEFAULT_ALPHA = 1e-3 -- detected when P(this many matching bits | unmarked) < alpha

local Key = class("watermark.WhiteboxKey")
WB.Key = Key

local shape_str = U.shape_str

-- Layer output -> B x M features: flattened, or averaged per channel ("channel_mean").
local function features(acts, pool)
  local F = require "deepsigns.functional"
  local d = core.tensor.dim(acts)
  if pool == "channel_mean" and d == 4 then return F.global_avg_pool(acts) end
  if d == 2 then return acts end
  return T.methods.flatten(acts, 2)
end
WB.features = features

function Key:__init(fields)
  for k, v in pairs(fields) do self[k] = v end
end

function Key:__tostring()
  return string.format("white-box key: %d bits in class%s %s, layer %s (width %d), %s variant, %d trigger inputs",
    self.bits, #self.targets > 1 and "es" or "", table.concat(self.targets, ","), tostring(self.layer), self.width,
    self.variant, core.tensor.size(self.trigger_y, 1))
end

function Key:layer_of(model)
  local ok, l = pcall(model.layer, model, self.layer)
  if not ok then error("whitebox: the key's layer " .. tostring(self.layer) .. " is not in the model: "
    .. U.strip_location(l), 3) end
  return l
end

-- Activations of the key's layer for x (eval mode, no graph), as B x M features,
-- computed in batches.
function Key:activations(model, x)
  local layer = self:layer_of(model)
  local n, out = core.tensor.size(x, 1), {}
  for s = 1, n, 500 do
    local len = math.min(500, n - s + 1)
    out[#out + 1] = features(model:activations(core.tensor.narrow(x, 1, s, len), layer), self.pool)
  end
  return #out == 1 and out[1] or T.cat(out, 1)
end

-- Per-target mean activations of the trigger inputs: s x M
function Key:target_means(model)
  local h = self:activations(model, self.trigger_x)
  local m = core.tensor.size(h, 2)
  if m ~= self.width then
    error(string.format("whitebox: the key expects layer %s of width %d, the model's layer has width %d",
      tostring(self.layer), self.width, m), 3)
  end
  local rows = {}
  local ys = core.tensor.flat(self.trigger_y)
  for k, t in ipairs(self.targets) do
    local idx = {}
    for i, v in ipairs(ys) do if v == t then idx[#idx + 1] = i end end
    rows[k] = core.ops.sum(core.ops.index_select(h, idx), 1, true)
    core.ops.binary_("div", rows[k], rows[k], #idx)
  end
  return T.cat(rows, 1)
end

-- The regularizer that embeds the key during training (see ds.train): its loss reads
-- the key's layer, and its optimiser trains the centres (reference) or the target
-- means (paper) beside the model.
function Key:regularizer(opts)
  opts = opts or {}
  local l1, l2 = opts.lambda1 or self.lambda1 or 0.01, opts.lambda2 or self.lambda2 or 0.01
  local key, pool, targets, a, b = self, self.pool, self.targets, self.A, self.b
  local centres = self.variant == "reference" and self.centres or self.mu
  A.set_requires_grad(centres, true)
  local loss
  if self.variant == "reference" then
    loss = function(h, y) return L.reference(h, y, centres, a, b, targets, l1, l2) end
  else
    local map = {}
    for k = 1, self.classes do map[k] = 0 end
    for k, t in ipairs(targets) do map[t + 1] = k end
    loss = function(h, y) return L.paper(h, y, centres, a, b, map, l1, l2) end
  end
  return {name = "watermark", layers = {self.layer},
    optimizer = require("deepsigns.optim").Adam({centres}, {lr = opts.centre_lr or 1e-3}),
    loss = function(batch, acts)
      return loss(T.methods.contiguous(features(acts[key.layer], pool)), batch.y)
    end}
end

-- Bits as an s x N tensor from a table of 0/1, a "0101" string, or balanced random bits.
local function make_bits(given, s, n)
  if given ~= nil then
    local flat = {}
    if type(given) == "string" then
      for ch in given:gmatch(".") do
        if ch ~= "0" and ch ~= "1" then error("whitebox.keygen: bit string may only hold 0 and 1", 0) end
        flat[#flat + 1] = tonumber(ch)
      end
    elseif T.is_tensor(given) then flat = core.tensor.flat(given)
    elseif type(given) == "table" then flat = given
    else error("whitebox.keygen: b must be a bit string, a table or a tensor", 0) end
    if #flat ~= s * n then error(string.format("whitebox.keygen: %d bits given, expected %d", #flat, s * n), 0) end
    for i, v in ipairs(flat) do
      if v ~= 0 and v ~= 1 then error("whitebox.keygen: bit " .. i .. " is " .. tostring(v) .. ", not 0 or 1", 0) end
    end
    return core.tensor.reshape(core.tensor.from_table(flat), {s, n})
  end
  local rows = {}
  for k = 1, s do -- balanced: half ones per target, in random places
    local perm = core.rng.randperm(n)
    local row = {}
    for i = 1, n do row[perm[i]] = i <= n // 2 and 1 or 0 end
    if n % 2 == 1 then row[perm[n]] = core.rng.randint(0, 1) end
    rows[k] = row
  end
  return core.tensor.from_table(rows)
end

-- key = whitebox.keygen{model=, layer=, data=, bits=32, targets={0} | ntargets=1,
--   keys_per_class=500, variant="reference"|"paper", pool="flatten"|"channel_mean", seed=, b=}
-- `bits` is the total signature length, split evenly over the targets.
function WB.keygen(opts)
  if type(opts) ~= "table" then error("whitebox.keygen: expects an option table", 2) end
  local model, data, layer = opts.model, opts.data, opts.layer
  if type(model) ~= "table" or not model.forward then error("whitebox.keygen: option 'model' must be a model", 2) end
  if type(data) ~= "table" or not data.x then error("whitebox.keygen: option 'data' must be a data set", 2) end
  if layer == nil then error("whitebox.keygen: option 'layer' (a layer name or index) is required", 2) end
  local variant = opts.variant or "reference"
  if variant ~= "reference" and variant ~= "paper" then
    error("whitebox.keygen: variant must be \"reference\" or \"paper\", got " .. tostring(variant), 2)
  end
  local pool = opts.pool or "flatten"
  if pool ~= "flatten" and pool ~= "channel_mean" then error("whitebox.keygen: pool must be \"flatten\" or \"channel_mean\"", 2) end
  local seed = opts.seed or 0
  if math.type(seed) ~= "integer" then error("whitebox.keygen: seed must be an integer", 2) end
  local ok, lay = pcall(model.layer, model, layer)
  if not ok then error("whitebox.keygen: " .. U.strip_location(lay), 2) end
  local probe = features(model:activations(core.tensor.narrow(data.x, 1, 1, 1), lay), pool)
  local width = core.tensor.size(probe, 2)
  local classes = data.classes
  local counts = data:class_counts()

  local saved = core.rng.state()
  core.rng.seed(seed)
  local ok2, key = pcall(function()
    local targets = {}
    if opts.targets then
      if type(opts.targets) ~= "table" or #opts.targets == 0 then error("whitebox.keygen: targets must be a list of class ids", 0) end
      local seen = {}
      for _, t in ipairs(opts.targets) do
        if math.type(t) ~= "integer" or t < 0 or t >= classes then
          error(string.format("whitebox.keygen: target %s is not a class id in 0..%d", tostring(t), classes - 1), 0)
        end
        if counts[t + 1] == 0 then error(string.format("whitebox.keygen: target class %d has no samples in %s", t, data.name), 0) end
        if seen[t] then error("whitebox.keygen: target class " .. t .. " is given twice", 0) end
        seen[t] = true
        targets[#targets + 1] = t
      end
    else
      local nt = opts.ntargets or 1
      local avail = {}
      for c = 0, classes - 1 do if counts[c + 1] > 0 then avail[#avail + 1] = c end end
      if math.type(nt) ~= "integer" or nt < 1 or nt > #avail then
        error(string.format("whitebox.keygen: ntargets must be in 1..%d", #avail), 0)
      end
      local perm = core.rng.randperm(#avail)
      for i = 1, nt do targets[i] = avail[perm[i]] end
      table.sort(targets)
    end
    local s = #targets
    local total = opts.bits or 32
    if math.type(total) ~= "integer" or total < 1 or total % s ~= 0 then
      error(string.format("whitebox.keygen: bits (%s) must be a positive multiple of the number of targets (%d)", tostring(total), s), 0)
    end
    local n = total // s
    local b = make_bits(opts.b, s, n)
    local a = core.rng.randn({width, n}, 0, 1)
    local per = opts.keys_per_class or 500
    local xs_idx, ys = {}, {}
    for _, t in ipairs(targets) do
      local idx = data:indices_of(t)
      local perm = core.rng.randperm(#idx)
      for i = 1, math.min(per, #idx) do xs_idx[#xs_idx + 1] = idx[perm[i]]; ys[#ys + 1] = t end
    end
    local key = Key{layer = layer, variant = variant, pool = pool, targets = targets, bits = total, n = n,
      width = width, classes = classes, seed = seed, A = a, b = b,
      trigger_x = core.ops.index_select(data.x, xs_idx), trigger_y = core.tensor.from_table(ys),
      input_shape = data:input_shape(), lambda1 = opts.lambda1, lambda2 = opts.lambda2}
    if variant == "reference" then
      key.centres = core.rng.rand({classes, width}, 0, 1)
    else
      key.mu = key:target_means(model)
    end
    return key
  end)
  core.rng.set_state(saved)
  if not ok2 then error(key, 2) end
  return key
end

-- Trains `model` with the key's regularizer (from scratch or fine-tuning a trained
-- model); records the marked model's hash in the key. Returns the training history.
function WB.embed(opts)
  if type(opts) ~= "table" or getmetatable(opts.key) ~= Key then error("whitebox.embed: option 'key' must be a white-box key", 2) end
  local key, model = opts.key, opts.model
  if type(model) ~= "table" or not model.forward then error("whitebox.embed: option 'model' must be a model", 2) end
  key:layer_of(model)
  local reg = key:regularizer{lambda1 = opts.lambda1, lambda2 = opts.lambda2, centre_lr = opts.centre_lr}
  key.lambda1, key.lambda2 = opts.lambda1 or key.lambda1, opts.lambda2 or key.lambda2
  local regs = {reg}
  for _, r in ipairs(opts.regularizers or {}) do regs[#regs + 1] = r end
  local history = require("deepsigns.train").train{model = model, data = opts.data, epochs = opts.epochs or 1,
    batch_size = opts.batch_size or 128, optimizer = opts.optimizer, lr = opts.lr, schedule = opts.schedule,
    regularizers = regs, test = opts.test, progress = opts.progress, log = opts.log, on_epoch = opts.on_epoch,
    augment = opts.augment, checkpoint = opts.checkpoint, resume = opts.resume}
  for _, p in ipairs(reg.optimizer.params) do A.set_requires_grad(p, false); A.set_grad(p, nil) end
  -- reference activations of some triggers, for realigning extraction (secret too)
  local nref = math.min(core.tensor.size(key.trigger_x, 1), 256)
  key.reference_acts = key:activations(model, core.tensor.narrow(key.trigger_x, 1, 1, nref))
  key.model_hash = K.model_hash(model)
  return history
end

-- Reads the signature from a suspect model: {ber, bits, errors, matches, n, p_value, detected, alpha}.
-- p_value = P(at least this many bits match | each matches with probability 1/2).
function WB.extract(model, key, opts)
  if getmetatable(key) ~= Key then error("whitebox.extract: argument #2 must be a white-box key", 2) end
  if type(model) ~= "table" or not model.forward then error("whitebox.extract: argument #1 must be a model", 2) end
  opts = opts or {}
  local alpha = opts.alpha or WB.DEFAULT_ALPHA
  local mu
  if opts.realign then
    mu = require("deepsigns.watermark.realign").target_means(model, key)
  else
    mu = key:target_means(model)
  end
  local z = core.ops.matmul(mu, key.A)
  local got = core.tensor.flat(core.ops.binary("gt", z, 0))
  local want = core.tensor.flat(key.b)
  local errors = 0
  for i = 1, #want do if got[i] ~= want[i] then errors = errors + 1 end end
  local n = #want
  local p = stats.binom_sf(n - errors, n, 0.5)
  return {ber = errors / n, bits = got, errors = errors, matches = n - errors, n = n, p_value = p,
    detected = p < alpha, alpha = alpha}
end

-- Bits as a "0101" string.
function WB.bitstring(bits)
  local t = {}
  for i, v in ipairs(T.is_tensor(bits) and core.tensor.flat(bits) or bits) do t[i] = v == 1 and "1" or "0" end
  return table.concat(t)
end

function Key:save(path)
  local tensors = {A = self.A, b = self.b, trigger_x = self.trigger_x, trigger_y = self.trigger_y}
  if self.centres then tensors.centres = self.centres end
  if self.mu then tensors.mu = self.mu end
  if self.reference_acts then tensors.reference_acts = self.reference_acts end
  K.save(path, tensors, {format = WB.FORMAT, layer = tostring(self.layer),
    layer_is_index = math.type(self.layer) == "integer" and "1" or "0", variant = self.variant, pool = self.pool,
    targets = cjson.encode(self.targets), bits = tostring(self.bits), seed = tostring(self.seed),
    classes = tostring(self.classes), width = tostring(self.width), input_shape = cjson.encode(self.input_shape),
    model_hash = self.model_hash or "", lambda1 = tostring(self.lambda1 or 0.01), lambda2 = tostring(self.lambda2 or 0.01)})
  return self
end

-- A key from the bytes of a key file (`path` names it in messages).
function WB.decode(bytes, path)
  local t, md = K.decode(bytes, path, WB.FORMAT, {"A", "b", "trigger_x", "trigger_y", "layer", "targets", "width"})
  local function num(k)
    local v = math.tointeger(tonumber(md[k]))
    if not v then error(path .. ": key field '" .. k .. "' is not an integer", 0) end
    return v
  end
  local ok, targets = pcall(cjson.decode, md.targets)
  if not ok or type(targets) ~= "table" then error(path .. ": key field 'targets' is not a list", 0) end
  local width, bits, classes = num("width"), num("bits"), num("classes")
  local s = #targets
  local function bad(msg) error(path .. ": inconsistent key: " .. msg, 0) end
  for i, v in ipairs(targets) do -- JSON numbers come back as floats
    local t = math.type(v) and math.tointeger(v)
    if not t or t < 0 or t >= classes then bad("target " .. tostring(v) .. " is not a class id in 0.." .. classes - 1) end
    targets[i] = t
  end
  if s < 1 or bits % s ~= 0 then bad("bits do not divide over the targets") end
  local n = bits // s
  if shape_str(t.A) ~= width .. "x" .. n then bad("A is " .. shape_str(t.A) .. ", expected " .. width .. "x" .. n) end
  if shape_str(t.b) ~= s .. "x" .. n then bad("b is " .. shape_str(t.b) .. ", expected " .. s .. "x" .. n) end
  if core.tensor.dim(t.trigger_y) ~= 1 or core.tensor.size(t.trigger_x, 1) ~= core.tensor.size(t.trigger_y, 1) then bad("trigger inputs and labels differ in count") end
  for _, v in ipairs(core.tensor.flat(t.b)) do if v ~= 0 and v ~= 1 then bad("b holds a value other than 0 and 1") end end
  local layer = md.layer_is_index == "1" and math.tointeger(tonumber(md.layer)) or md.layer
  return Key{layer = layer, variant = md.variant, pool = md.pool or "flatten", targets = targets, bits = bits, n = n,
    width = width, classes = classes, seed = num("seed"), A = t.A, b = t.b, trigger_x = t.trigger_x,
    trigger_y = t.trigger_y, centres = t.centres, mu = t.mu, reference_acts = t.reference_acts,
    input_shape = cjson.decode(md.input_shape or "[]"), model_hash = md.model_hash ~= "" and md.model_hash or nil,
    lambda1 = tonumber(md.lambda1), lambda2 = tonumber(md.lambda2)}
end

WB.load = K.loader("whitebox.load", WB.decode)

return WB
