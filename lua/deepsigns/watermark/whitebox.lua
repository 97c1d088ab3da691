-- White-box DeepSigns: an N-bit signature hidden in the Gaussian-mixture density
-- of one hidden layer's activations, read back with a secret projection matrix A
-- and secret trigger inputs (deepsigns.md §2; doc/method.md). Two formulations:
--   "paper" (the default): the paper's loss1 over every class's learned mean (pull to the
--     own mean, capped push from all others) and loss2 on the target classes' means;
--   "reference": the authors' demo code (trainable centres, its four terms).
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"
local F = require "deepsigns.functional"
local class = require "deepsigns.class"
local cjson = require "cjson"
local L = require "deepsigns.watermark.losses"
local K = require "deepsigns.watermark.keyfile"
local stats = require "deepsigns.stats"
local U = require "deepsigns.util"

local WB = {}
WB.FORMAT = "deepsigns-wb-key"
WB.DEFAULT_ALPHA = 1e-3 -- detected when P(this many matching bits | unmarked) < alpha
WB.VARIANTS = {"paper", "reference"}
-- Each variant's loss weights when none are given: the paper variant's reach BER 0 with
-- 32 and 64 bits in 10 epochs on 8,000-image subsets of unseen data (doc/method.md); the
-- reference variant keeps the authors' gamma1 = gamma2 = 0.01.
WB.DEFAULTS = {paper = {lambda1 = 3e-4, lambda2 = 3e-3}, reference = {lambda1 = 0.01, lambda2 = 0.01}}
WB.CENTRE_LR = 1e-3

local Key = class("watermark.WhiteboxKey")
WB.Key = Key

local shape_str = U.shape_str

-- Layer output -> B x M features: flattened, or averaged per channel ("channel_mean").
local function features(acts, pool)
  local d = core.tensor.dim(acts)
  if pool == "channel_mean" and d == 4 then return F.global_avg_pool(acts) end
  if d == 2 then return acts end
  return T.methods.flatten(acts, 2)
end
--- A layer's output as B x M features: flattened, or with pool = "channel_mean" the
-- mean of each channel of a convolutional output (N x C x H x W -> N x C).
function WB.features(acts, pool) return features(acts, pool) end

--- A white-box key (made by whitebox.keygen or whitebox.load): the layer, the variant,
-- the target classes, the bits b, the projection matrix A, the trigger inputs, the
-- centres or class means, and the reference activations for realigned extraction.
function Key:__init(fields)
  for k, v in pairs(fields) do self[k] = v end
end

--- A one-line description of the key.
function Key:__tostring()
  return string.format("white-box key: %d bits in class%s %s, layer %s (width %d), %s variant, %d trigger inputs",
    self.bits, #self.targets > 1 and "es" or "", table.concat(self.targets, ","), tostring(self.layer), self.width,
    self.variant, core.tensor.size(self.trigger_y, 1))
end

--- The key's layer in a model.
-- @raise when the model has no such layer
function Key:layer_of(model)
  local ok, l = pcall(model.layer, model, self.layer)
  if not ok then
    error("whitebox: the key's layer " .. tostring(self.layer) .. " is not in the model: " .. U.strip_location(l), 3)
  end
  return l
end

--- The key layer's activations for inputs x (eval mode, no graph), as B x M features,
-- computed in batches of 500.
-- @raise when the layer's width is not the key's
function Key:activations(model, x)
  local layer = self:layer_of(model)
  local n, out = core.tensor.size(x, 1), {}
  for s = 1, n, 500 do
    local len = math.min(500, n - s + 1)
    out[#out + 1] = features(model:activations(core.tensor.narrow(x, 1, s, len), layer), self.pool)
  end
  local h = #out == 1 and out[1] or T.cat(out, 1)
  local m = core.tensor.size(h, 2)
  if m ~= self.width then
    error(string.format("whitebox: the key expects layer %s of width %d, the model's layer has width %d",
      tostring(self.layer), self.width, m), 3)
  end
  return h
end

-- The rows of h whose label in ys (a list) is class t, averaged: 1 x M.
local function mean_of(h, ys, t)
  local idx = {}
  for i, v in ipairs(ys) do if v == t then idx[#idx + 1] = i end end
  return core.ops.binary("div", core.ops.sum(core.ops.index_select(h, idx), 1, true), #idx)
end

--- The mean activation of the trigger inputs of each target class: s x M (h: their
-- activations, computed when not given). Extraction projects these.
function Key:target_means(model, h)
  h = h or self:activations(model, self.trigger_x)
  local ys, rows = core.tensor.flat(self.trigger_y), {}
  for k, t in ipairs(self.targets) do rows[k] = mean_of(h, ys, t) end
  return T.cat(rows, 1)
end

-- Every class's mean activation (C x M) from up to `per` samples of each class; a
-- class without samples gets the mean of all.
local function class_means(key, model, data, per)
  local rows, missing = {}, {}
  for c = 0, key.classes - 1 do
    local idx = data:indices_of(c)
    if #idx == 0 then
      missing[#missing + 1] = c + 1
    else
      local perm, pick = core.rng.randperm(#idx), {}
      for i = 1, math.min(per, #idx) do pick[i] = idx[perm[i]] end
      local h = key:activations(model, core.ops.index_select(data.x, pick))
      rows[c + 1] = core.ops.binary("div", core.ops.sum(h, 1, true), #pick)
    end
  end
  if #missing > 0 then
    local present = {}
    for c = 1, key.classes do if rows[c] then present[#present + 1] = rows[c] end end
    local all = core.ops.binary("div", core.ops.sum(T.cat(present, 1), 1, true), #present)
    for _, c in ipairs(missing) do rows[c] = all end
  end
  return T.cat(rows, 1)
end

local REGULARIZER_OPTIONS = {"lambda1", "lambda2", "centre_lr"}

--- The regularizer that embeds the key during training (a ds.train regularizer): its
-- loss reads the key's layer, and its optimiser trains the centres (reference) or the
-- class means (paper) beside the model. whitebox.embed uses it; give it to ds.train to
-- embed while training with other regularizers or a loop of your own.
-- @tparam[opt] table opts
-- @tparam[opt] number opts.lambda1 loss1's weight (default: the key's, else the variant's: paper 3e-4, reference 0.01)
-- @tparam[opt] number opts.lambda2 loss2's weight (paper 3e-3, reference 0.01)
-- @tparam[opt=1e-3] number opts.centre_lr the centres' (means') Adam learning rate
-- @usage ds.train{model = m, data = train, epochs = 10, regularizers = {key:regularizer()}}
function Key:regularizer(opts)
  opts = U.check_options("whitebox regularizer", opts, REGULARIZER_OPTIONS)
  local defaults = WB.DEFAULTS[self.variant]
  if not defaults then
    error("whitebox: the key's variant '" .. tostring(self.variant) .. "' is not one this version knows ("
      .. table.concat(WB.VARIANTS, ", ") .. ")", 2)
  end
  local l1 = opts.lambda1 or self.lambda1 or defaults.lambda1
  local l2 = opts.lambda2 or self.lambda2 or defaults.lambda2
  for name, v in pairs {lambda1 = l1, lambda2 = l2, centre_lr = opts.centre_lr or WB.CENTRE_LR} do
    if type(v) ~= "number" or v < 0 or v ~= v or v == math.huge then
      error("whitebox: " .. name .. " must be a finite number >= 0, got " .. tostring(v), 2)
    end
  end
  local key, pool, targets, a, b = self, self.pool, self.targets, self.A, self.b
  local params = self.variant == "reference" and self.centres or self.mu
  if params == nil or core.tensor.size(params, 1) ~= self.classes then
    error("whitebox: the key holds no " .. (self.variant == "reference" and "centres" or "class means")
      .. " for " .. self.classes .. " classes (a key of an earlier version can extract but not embed: make a new key)", 2)
  end
  A.set_requires_grad(params, true)
  local loss = self.variant == "reference" and L.reference or L.paper
  return {name = "watermark", layers = {self.layer},
    optimizer = require("deepsigns.optim").Adam({params}, {lr = opts.centre_lr or WB.CENTRE_LR}),
    loss = function(batch, acts)
      local h = T.methods.contiguous(features(acts[key.layer], pool))
      return loss(h, batch.y, params, a, b, targets, l1, l2)
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

-- The target classes: the given list, checked, or `nt` classes drawn among those with samples.
local function choose_targets(opts, data, counts)
  local classes, targets = data.classes, {}
  if opts.targets then
    if type(opts.targets) ~= "table" or #opts.targets == 0 then error("whitebox.keygen: targets must be a list of class ids", 0) end
    local seen = {}
    for _, t in ipairs(opts.targets) do
      if math.type(t) ~= "integer" or t < 0 or t >= classes then
        error(string.format("whitebox.keygen: target %s is not a class id in 0..%d", tostring(t), classes - 1), 0)
      end
      if (counts[t] or 0) == 0 then error(string.format("whitebox.keygen: target class %d has no samples in %s", t, data.name), 0) end
      if seen[t] then error("whitebox.keygen: target class " .. t .. " is given twice", 0) end
      seen[t] = true
      targets[#targets + 1] = t
    end
    return targets
  end
  local nt = opts.ntargets or 1
  local avail = {}
  for c = 0, classes - 1 do if (counts[c] or 0) > 0 then avail[#avail + 1] = c end end
  if math.type(nt) ~= "integer" or nt < 1 or nt > #avail then
    error(string.format("whitebox.keygen: ntargets must be in 1..%d", #avail), 0)
  end
  local perm = core.rng.randperm(#avail)
  for i = 1, nt do targets[i] = avail[perm[i]] end
  table.sort(targets)
  return targets
end

local KEYGEN_OPTIONS = {"model", "layer", "data", "bits", "targets", "ntargets", "keys_per_class", "variant", "pool",
  "seed", "b", "lambda1", "lambda2"}

--- A white-box key for a model's layer: random signature bits, a secret projection
-- matrix A (N(0, 1)), trigger inputs drawn from the target classes' samples, and the
-- class means (paper variant, from the model's activations) or random centres
-- (reference variant). The model is not changed: whitebox.embed marks it.
-- @tparam table opts
-- @param opts.model the model
-- @param opts.layer the layer a name ("fc2") or an index; its output is what the mark lives in
-- @param opts.data the training data (triggers and class means come from it)
-- @tparam[opt=32] integer opts.bits the signature length, split evenly over the targets
-- @tparam[opt] table opts.targets the target class ids, e.g. {0}
-- @tparam[opt=1] integer opts.ntargets without targets: this many classes drawn at random
-- @tparam[opt=500] integer opts.keys_per_class trigger inputs per target class
-- @tparam[opt="paper"] string opts.variant "paper" or "reference" (the authors' demo)
-- @tparam[opt="flatten"] string opts.pool "flatten", or "channel_mean" for convolutional layers
-- @tparam[opt=0] integer opts.seed the key's own generator seed (the global one is left as it was)
-- @param[opt] opts.b the bits: a "0101..." string, a table or a tensor (default: balanced random bits)
-- @tparam[opt] number opts.lambda1 stored in the key (default: the variant's)
-- @tparam[opt] number opts.lambda2 stored in the key
-- @return the key (key:save(path) writes it)
-- @raise for an unknown option, a missing layer, a target without samples, bits that do
-- not divide over the targets, NaN triggers, an empty data set
-- @usage local key = wb.keygen{model = model, layer = "fc2", data = train, bits = 32, targets = {0}}
function WB.keygen(opts)
  opts = U.check_options("whitebox.keygen", opts, KEYGEN_OPTIONS)
  local model, data, layer = opts.model, opts.data, opts.layer
  if type(model) ~= "table" or not model.forward then error("whitebox.keygen: option 'model' must be a model", 2) end
  if type(data) ~= "table" or not data.x then error("whitebox.keygen: option 'data' must be a data set", 2) end
  if #data == 0 then error("whitebox.keygen: the data set " .. tostring(data.name) .. " is empty", 2) end
  if layer == nil then error("whitebox.keygen: option 'layer' (a layer name or index) is required", 2) end
  local variant = opts.variant or "paper"
  if not WB.DEFAULTS[variant] then
    error("whitebox.keygen: variant must be \"paper\" or \"reference\", got " .. tostring(variant), 2)
  end
  local pool = opts.pool or "flatten"
  if pool ~= "flatten" and pool ~= "channel_mean" then error("whitebox.keygen: pool must be \"flatten\" or \"channel_mean\"", 2) end
  local seed = opts.seed or 0
  if math.type(seed) ~= "integer" then error("whitebox.keygen: seed must be an integer", 2) end
  local per = opts.keys_per_class or 500
  if math.type(per) ~= "integer" or per < 1 then error("whitebox.keygen: keys_per_class must be a positive integer", 2) end
  local ok, lay = pcall(model.layer, model, layer)
  if not ok then error("whitebox.keygen: " .. U.strip_location(lay), 2) end
  local probe = features(model:activations(core.tensor.narrow(data.x, 1, 1, 1), lay), pool)
  local width, classes = core.tensor.size(probe, 2), data.classes

  local saved = core.rng.state()
  core.rng.seed(seed)
  local ok2, key = pcall(function()
    local targets = choose_targets(opts, data, data:class_counts())
    local s, total = #targets, opts.bits or 32
    if math.type(total) ~= "integer" or total < 1 or total % s ~= 0 then
      error(string.format("whitebox.keygen: bits (%s) must be a positive multiple of the number of targets (%d)", tostring(total), s), 0)
    end
    local n = total // s
    local b = make_bits(opts.b, s, n)
    local a = core.rng.randn({width, n}, 0, 1)
    local xs_idx, ys = {}, {}
    for _, t in ipairs(targets) do
      local idx = data:indices_of(t)
      local perm = core.rng.randperm(#idx)
      for i = 1, math.min(per, #idx) do xs_idx[#xs_idx + 1] = idx[perm[i]]; ys[#ys + 1] = t end
    end
    local trigger_x = core.ops.index_select(data.x, xs_idx)
    if not core.ops.all_finite(trigger_x) then
      error("whitebox.keygen: the trigger inputs drawn from " .. tostring(data.name) .. " hold NaN or infinite values", 0)
    end
    local key = Key{layer = layer, variant = variant, pool = pool, targets = targets, bits = total, n = n,
      width = width, classes = classes, seed = seed, A = a, b = b, trigger_x = trigger_x,
      trigger_y = core.tensor.from_table(ys), input_shape = data:input_shape(), lambda1 = opts.lambda1,
      lambda2 = opts.lambda2}
    if variant == "reference" then
      key.centres = core.rng.rand({classes, width}, 0, 1)
    else
      key.mu = class_means(key, model, data, per)
    end
    return key
  end)
  core.rng.set_state(saved)
  if not ok2 then error(key, 2) end
  return key
end

-- The trigger rows that keep the reference activations for realigned extraction: up to
-- `limit`, spread evenly over the trigger set, so that every target class is in them.
local function reference_rows(key, limit)
  local n = core.tensor.size(key.trigger_x, 1)
  local rows = {}
  local step = math.max(1, n / limit)
  for i = 1, math.min(n, limit) do rows[i] = math.floor((i - 1) * step) + 1 end
  return rows
end

local EMBED_OPTIONS = {"model", "key", "data", "epochs", "optimizer", "lr", "lambda1", "lambda2", "centre_lr",
  "batch_size", "schedule", "regularizers", "test", "progress", "log", "on_epoch", "augment", "checkpoint", "fresh"}

--- Trains a model with the key's regularizer, from scratch or fine-tuning a trained
-- model, then records in the key the reference activations (for realigned extraction)
-- and the marked model's hash. Takes ds.train's options besides these.
-- @tparam table opts
-- @param opts.model
-- @param opts.key a key from whitebox.keygen
-- @param opts.data the training data
-- @tparam[opt=1] integer opts.epochs
-- @param[opt=Adam(lr)] opts.optimizer
-- @tparam[opt] number opts.lambda1 (default: the key's)
-- @tparam[opt] number opts.lambda2
-- @tparam[opt=1e-3] number opts.centre_lr
-- @treturn table the training history (ds.train's)
-- @usage wb.embed{model = model, key = key, data = train, epochs = 10}
function WB.embed(opts)
  opts = U.check_options("whitebox.embed", opts, EMBED_OPTIONS)
  local key, model = opts.key, opts.model
  if getmetatable(key) ~= Key then error("whitebox.embed: option 'key' must be a white-box key", 2) end
  if type(model) ~= "table" or not model.forward then error("whitebox.embed: option 'model' must be a model", 2) end
  if type(opts.data) ~= "table" or not opts.data.x then error("whitebox.embed: option 'data' must be a data set", 2) end
  if #opts.data == 0 then error("whitebox.embed: the data set " .. tostring(opts.data.name) .. " is empty", 2) end
  key:layer_of(model)
  local reg = key:regularizer{lambda1 = opts.lambda1, lambda2 = opts.lambda2, centre_lr = opts.centre_lr}
  key.lambda1, key.lambda2 = opts.lambda1 or key.lambda1, opts.lambda2 or key.lambda2
  local regs = {reg}
  for _, r in ipairs(opts.regularizers or {}) do regs[#regs + 1] = r end
  local history = require("deepsigns.train").train{model = model, data = opts.data, epochs = opts.epochs or 1,
    batch_size = opts.batch_size or 128, optimizer = opts.optimizer, lr = opts.lr, schedule = opts.schedule,
    regularizers = regs, test = opts.test, progress = opts.progress, log = opts.log, on_epoch = opts.on_epoch,
    augment = opts.augment, checkpoint = opts.checkpoint, fresh = opts.fresh}
  key:record(model)
  return history
end

--- Records the marked model in the key after embedding (whitebox.embed does; call it
-- after training with key:regularizer() in a loop of your own): the reference
-- activations of triggers of every target class, for realigned extraction, and the
-- SHA-256 of the model's weights. Stops training the centres or means.
function Key:record(model)
  local params = self.variant == "reference" and self.centres or self.mu
  if params then A.set_requires_grad(params, false); A.set_grad(params, nil) end
  self.reference_rows = reference_rows(self, 256)
  self.reference_acts = self:activations(model, core.ops.index_select(self.trigger_x, self.reference_rows))
  self.model_hash = K.model_hash(model)
  return self
end

local EXTRACT_OPTIONS = {"alpha", "realign"}

--- Reads the signature from a suspect model: the trigger inputs' mean activation per
-- target class, projected by A, thresholded at 0, compared with the key's bits.
-- @param model the suspect
-- @param key
-- @tparam[opt] table opts
-- @tparam[opt=1e-3] number opts.alpha the false-alarm level of `detected`
-- @tparam[opt=false] boolean opts.realign first undo a permutation and positive scaling
-- of the layer's units (function-preserving attacks), matching them to the key's
-- reference activations
-- @treturn table {ber, bits, errors, matches, n, p_value = P(at least this many bits match
-- | each matches with probability 1/2), detected = p_value < alpha, detected_paper = (BER = 0),
-- alpha}
-- @raise when the model lacks the layer, or its activations are not finite
-- @usage local r = wb.extract(suspect, key); print(r.ber, r.p_value, r.detected)
function WB.extract(model, key, opts)
  if getmetatable(key) ~= Key then error("whitebox.extract: argument #2 must be a white-box key", 2) end
  if type(model) ~= "table" or not model.forward then error("whitebox.extract: argument #1 must be a model", 2) end
  opts = U.check_options("whitebox.extract", opts, EXTRACT_OPTIONS)
  local alpha = opts.alpha or WB.DEFAULT_ALPHA
  if type(alpha) ~= "number" or alpha <= 0 or alpha >= 1 then error("whitebox.extract: alpha must be in (0, 1)", 2) end
  local mu
  if opts.realign then
    mu = require("deepsigns.watermark.realign").target_means(model, key)
  else
    local h = key:activations(model, key.trigger_x)
    if not core.ops.all_finite(h) then
      error("whitebox.extract: the suspect model's activations of the trigger inputs are not finite (NaN or infinite)", 2)
    end
    mu = key:target_means(model, h)
  end
  local z = core.ops.matmul(mu, key.A)
  local got = core.tensor.flat(core.ops.binary("gt", z, 0))
  local want = core.tensor.flat(key.b)
  local errors = 0
  for i = 1, #want do if got[i] ~= want[i] then errors = errors + 1 end end
  local n = #want
  local p = stats.binom_sf(n - errors, n, 0.5)
  return {ber = errors / n, bits = got, errors = errors, matches = n - errors, n = n, p_value = p,
    detected = p < alpha, detected_paper = errors == 0, alpha = alpha}
end

--- Bits (a list or a tensor of 0/1) as a "0101..." string.
function WB.bitstring(bits)
  local t = {}
  for i, v in ipairs(T.is_tensor(bits) and core.tensor.flat(bits) or bits) do t[i] = v == 1 and "1" or "0" end
  return table.concat(t)
end

--- Writes the key as a self-contained file (safetensors) carrying a SHA-256 of its
-- content and of the marked model's weights; returns the key. Keep it secret.
function Key:save(path)
  local tensors = {A = self.A, b = self.b, trigger_x = self.trigger_x, trigger_y = self.trigger_y}
  if self.centres then tensors.centres = self.centres end
  if self.mu then tensors.mu = self.mu end
  if self.reference_acts then tensors.reference_acts = self.reference_acts end
  local defaults = WB.DEFAULTS[self.variant] or {}
  K.save(path, tensors, {format = WB.FORMAT, layer = tostring(self.layer),
    layer_is_index = math.type(self.layer) == "integer" and "1" or "0", variant = self.variant, pool = self.pool,
    targets = cjson.encode(self.targets), bits = tostring(self.bits), seed = tostring(self.seed),
    classes = tostring(self.classes), width = tostring(self.width), input_shape = cjson.encode(self.input_shape),
    model_hash = self.model_hash or "", lambda1 = tostring(self.lambda1 or defaults.lambda1),
    lambda2 = tostring(self.lambda2 or defaults.lambda2),
    reference_rows = self.reference_rows and cjson.encode(self.reference_rows) or ""})
  return self
end

--- A key from the bytes of a key file (`path` names it in messages).
-- @raise for a file that was modified, truncated, is another kind of file, or inconsistent
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
    local tv = math.type(v) and math.tointeger(v)
    if not tv or tv < 0 or tv >= classes then bad("target " .. tostring(v) .. " is not a class id in 0.." .. classes - 1) end
    targets[i] = tv
  end
  if s < 1 or bits % s ~= 0 then bad("bits do not divide over the targets") end
  if not WB.DEFAULTS[md.variant] then
    bad("variant '" .. tostring(md.variant) .. "' is not one this version knows (" .. table.concat(WB.VARIANTS, ", ") .. ")")
  end
  local n = bits // s
  if shape_str(t.A) ~= width .. "x" .. n then bad("A is " .. shape_str(t.A) .. ", expected " .. width .. "x" .. n) end
  if shape_str(t.b) ~= s .. "x" .. n then bad("b is " .. shape_str(t.b) .. ", expected " .. s .. "x" .. n) end
  if core.tensor.dim(t.trigger_y) ~= 1 or core.tensor.size(t.trigger_x, 1) ~= core.tensor.size(t.trigger_y, 1) then
    bad("trigger inputs and labels differ in count")
  end
  for _, v in ipairs(core.tensor.flat(t.b)) do if v ~= 0 and v ~= 1 then bad("b holds a value other than 0 and 1") end end
  -- the means of the earlier paper formulation (one row per target) cannot embed: left out
  local mu = t.mu
  if mu and (core.tensor.dim(mu) ~= 2 or core.tensor.size(mu, 1) ~= classes) then mu = nil end
  local rows = md.reference_rows and md.reference_rows ~= "" and cjson.decode(md.reference_rows) or nil
  if rows then for i, v in ipairs(rows) do rows[i] = math.tointeger(v) end end
  local layer = md.layer_is_index == "1" and math.tointeger(tonumber(md.layer)) or md.layer
  return Key{layer = layer, variant = md.variant, pool = md.pool or "flatten", targets = targets, bits = bits, n = n,
    width = width, classes = classes, seed = num("seed"), A = t.A, b = t.b, trigger_x = t.trigger_x,
    trigger_y = t.trigger_y, centres = t.centres, mu = mu, reference_acts = t.reference_acts, reference_rows = rows,
    input_shape = cjson.decode(md.input_shape or "[]"), model_hash = md.model_hash ~= "" and md.model_hash or nil,
    lambda1 = tonumber(md.lambda1), lambda2 = tonumber(md.lambda2)}
end

local load = K.loader("whitebox.load", WB.decode)
--- Reads a key file written by key:save, checking its SHA-256.
-- @tparam string path
-- @raise for a missing, modified, truncated or foreign file
-- @usage local key = ds.watermark.whitebox.load("wb.key")
function WB.load(path) return load(path) end

return WB
