-- Attacks on watermarked models. Each returns an attacked copy; the input model
-- is never changed. Strength parameters follow deepsigns.md §5.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"

local AT = {}

local function check_model(m, who)
  if type(m) ~= "table" or type(m.forward) ~= "function" then error(who .. ": argument #1 must be a model", 3) end
end

local function check_rate(rate, who, hi)
  if type(rate) ~= "number" or rate < 0 or rate > (hi or 1) then
    error(string.format("%s: rate must be a number in [0, %g], got %s", who, hi or 1, tostring(rate)), 3)
  end
end

-- The weight matrices and kernels of a model (name, tensor), and biases if asked.
local function prunable(model, biases)
  local list = {}
  for name, p in model:named_parameters() do
    local is_weight = name:match("weight$") and core.tensor.dim(p) >= 2
    if is_weight or (biases and name:match("bias$")) then list[#list + 1] = {name, p} end
  end
  return list
end

local function zero_below(p, thr)
  core.ops.binary_("mul", p, p, core.ops.binary("ge", core.ops.unary("abs", p), thr))
end

-- Magnitude pruning: zero the fraction `rate` of smallest |w|, per layer or globally.
function AT.prune(model, opts)
  check_model(model, "attacks.prune")
  opts = opts or {}
  local rate, scope = opts.rate or 0.5, opts.scope or "layer"
  check_rate(rate, "attacks.prune")
  if scope ~= "layer" and scope ~= "global" then error('attacks.prune: scope must be "layer" or "global"', 2) end
  local m = model:clone()
  local list = prunable(m, opts.biases)
  if rate == 0 then return m end
  if scope == "global" then
    local ts, total = {}, 0
    for i, e in ipairs(list) do ts[i] = e[2]; total = total + core.tensor.numel(e[2]) end
    local k = math.floor(rate * total + 0.5)
    if k >= 1 then
      local thr = core.ops.abs_kth(ts, k)
      for _, t in ipairs(ts) do zero_below(t, math.nextafter and thr or thr + thr * 1e-7 + 1e-30) end
    end
  else
    for _, e in ipairs(list) do
      local k = math.floor(rate * core.tensor.numel(e[2]) + 0.5)
      if k >= 1 then
        local thr = core.ops.abs_kth({e[2]}, k)
        zero_below(e[2], thr + thr * 1e-7 + 1e-30) -- the k smallest, ties included
      end
    end
  end
  return m
end

-- The last Linear layer of a model (fine-tuning modes and distillation use it).
local function last_linear(model)
  local last
  local function walk(mm)
    if mm.__name == "nn.Linear" then last = mm end
    for _, c in ipairs(mm._children) do walk(c.module) end
  end
  walk(model)
  if not last then error("attacks: the model has no Linear layer", 3) end
  return last
end
AT.last_linear = last_linear

local function reinit_linear(l)
  local bound = 1 / math.sqrt(l.in_features)
  core.tensor.copy(l.weight, core.rng.rand(core.tensor.size(l.weight), -bound, bound))
  if l.bias then core.tensor.copy(l.bias, core.rng.rand(core.tensor.size(l.bias), -bound, bound)) end
end

local function attacker_data(data, opts)
  if type(data) ~= "table" or not data.x then error("attacks: the attacker's data must be a data set", 3) end
  local f = opts.fraction or 1
  if f < 1 then return (data:split(f, opts.split_seed or 12345)) end
  return data
end

local function make_optimizer(params, opts)
  local optim = require "deepsigns.optim"
  local name = opts.optimizer or "sgd"
  if type(name) == "table" then return name end
  if name == "adam" then return optim.Adam(params, {lr = opts.lr or 1e-3}) end
  if name == "sgd" then return optim.SGD(params, {lr = opts.lr or 1e-2, momentum = opts.momentum or 0.9}) end
  error('attacks: optimizer must be "sgd", "adam" or an optimiser', 3)
end

-- Fine-tuning: FTLL (last layer), FTAL (all layers), RTLL / RTAL (last layer
-- re-initialised first). opts: mode, epochs, lr, optimizer ("sgd"|"adam"), fraction.
function AT.finetune(model, data, opts)
  check_model(model, "attacks.finetune")
  opts = opts or {}
  local mode = opts.mode or "FTAL"
  local valid = {FTLL = true, FTAL = true, RTLL = true, RTAL = true}
  if not valid[mode] then error("attacks.finetune: mode must be FTLL, FTAL, RTLL or RTAL, got " .. tostring(mode), 2) end
  local d = attacker_data(data, opts)
  local m = model:clone()
  local last = last_linear(m)
  if mode:sub(1, 2) == "RT" then reinit_linear(last) end
  local params = mode:sub(3, 4) == "LL" and {last.weight, last.bias} or m:parameters()
  local frozen = {}
  if mode:sub(3, 4) == "LL" then -- only the last layer learns
    for _, p in ipairs(m:parameters()) do
      if p ~= last.weight and p ~= last.bias then A.set_requires_grad(p, false); frozen[#frozen + 1] = p end
    end
  end
  require("deepsigns.train").train{model = m, data = d, epochs = opts.epochs or 5, batch_size = opts.batch_size or 128,
    optimizer = make_optimizer(params, opts), progress = opts.progress or false, log = opts.log}
  for _, p in ipairs(frozen) do A.set_requires_grad(p, true) end
  return m
end

-- Uniform symmetric k-bit quantisation of every weight tensor (and bias).
function AT.quantize(model, opts)
  check_model(model, "attacks.quantize")
  opts = opts or {}
  local bits = opts.bits or 8
  if math.type(bits) ~= "integer" or bits < 2 or bits > 16 then error("attacks.quantize: bits must be an integer in 2..16", 2) end
  local m = model:clone()
  local levels = 2 ^ (bits - 1) - 1
  for _, p in ipairs(m:parameters()) do
    local mx = core.tensor.item(core.ops.max(core.ops.unary("abs", p)))
    if mx > 0 then
      local scale = mx / levels
      local q = core.ops.unary("round", core.ops.binary("div", p, scale))
      core.tensor.copy(p, core.ops.binary("mul", q, scale))
    end
  end
  if opts.finetune_epochs and opts.finetune_epochs > 0 then
    return AT.finetune(m, opts.data, {mode = "FTAL", epochs = opts.finetune_epochs, lr = opts.lr or 1e-3})
  end
  return m
end

-- Gaussian noise: w += N(0, (sigma * std(w))^2) on every weight tensor.
function AT.noise(model, opts)
  check_model(model, "attacks.noise")
  opts = opts or {}
  local sigma = opts.sigma or 0.1
  if type(sigma) ~= "number" or sigma < 0 then error("attacks.noise: sigma must be a number >= 0", 2) end
  local m = model:clone()
  for _, e in ipairs(prunable(m, opts.biases)) do
    local _, sd = core.ops.moments(e[2])
    core.ops.binary_("add", e[2], e[2], core.rng.randn(core.tensor.size(e[2]), 0, sigma * sd))
  end
  return m
end

-- The Linear that consumes a layer's units: the next Linear after it in the model.
local function next_linear(model, layer)
  local order = {}
  local function walk(mm)
    order[#order + 1] = mm
    for _, c in ipairs(mm._children) do walk(c.module) end
  end
  walk(model)
  local seen = false
  for _, mm in ipairs(order) do
    if seen and mm.__name == "nn.Linear" then return mm end
    if mm == layer then seen = true end
  end
  error("attacks: no Linear layer follows the attacked layer", 3)
end

local function linear_layer(m, which, who)
  local l = m:layer(which)
  if l.__name ~= "nn.Linear" then error(who .. ": layer " .. tostring(which) .. " must be an nn.Linear (got " .. l.__name .. ")", 3) end
  if l.activation ~= nil and l.activation ~= "relu" then error(who .. ": only ReLU hidden layers keep their function under scaling", 3) end
  return l
end

-- Neuron permutation (and, with scale=true, positive rescaling) of a hidden
-- Linear+ReLU layer: function-preserving, the accuracy is unchanged exactly
-- (up to rounding for scaling). opts: layer, seed, scale (true or {lo, hi}).
function AT.permute(model, opts)
  check_model(model, "attacks.permute")
  opts = opts or {}
  if opts.layer == nil then error("attacks.permute: option 'layer' is required", 2) end
  local m = model:clone()
  local l = linear_layer(m, opts.layer, "attacks.permute")
  local nxt = next_linear(m, l)
  local n = l.out_features
  local saved = core.rng.state()
  if opts.seed then core.rng.seed(opts.seed) end
  local perm = core.rng.randperm(n)
  local scales
  if opts.scale then
    local lo, hi = 0.5, 2
    if type(opts.scale) == "table" then lo, hi = opts.scale[1], opts.scale[2] end
    if not (lo > 0 and hi >= lo) then error("attacks.permute: scale range must be positive", 2) end
    scales = core.rng.rand({n}, lo, hi)
  end
  if opts.seed then core.rng.set_state(saved) end
  local w = core.ops.index_select(l.weight, perm)
  local b = l.bias and core.ops.index_select(l.bias, perm)
  local wn = core.tensor.transpose(core.ops.index_select(core.tensor.contiguous(core.tensor.transpose(nxt.weight, 1, 2)), perm), 1, 2)
  if scales then
    w = core.ops.binary("mul", w, core.tensor.reshape(scales, {n, 1}))
    if b then b = core.ops.binary("mul", b, scales) end
    wn = core.ops.binary("div", wn, core.tensor.reshape(scales, {1, n}))
  end
  core.tensor.copy(l.weight, w)
  if b then core.tensor.copy(l.bias, b) end
  core.tensor.copy(nxt.weight, wn)
  return m
end

-- Fine-pruning: zero the units of `layer` with the lowest mean activation on the
-- attacker's data (rate = fraction of units), then fine-tune with them held at zero.
function AT.fineprune(model, data, opts)
  check_model(model, "attacks.fineprune")
  opts = opts or {}
  if opts.layer == nil then error("attacks.fineprune: option 'layer' is required", 2) end
  local rate = opts.rate or 0.8
  check_rate(rate, "attacks.fineprune")
  local d = attacker_data(data, opts)
  local m = model:clone()
  local l = linear_layer(m, opts.layer, "attacks.fineprune")
  local n = math.min(#d, opts.samples or 2000)
  local acts = m:activations(core.tensor.narrow(d.x, 1, 1, n), l)
  local means = core.tensor.flat(core.ops.sum(acts, 1))
  local order = {}
  for i = 1, #means do order[i] = i end
  table.sort(order, function(a, b) return means[a] < means[b] or (means[a] == means[b] and a < b) end)
  local k = math.floor(rate * #means + 0.5)
  local mask = core.tensor.full({#means}, 1)
  for i = 1, k do core.tensor.set(mask, order[i], 0) end
  local function apply()
    core.ops.binary_("mul", l.weight, l.weight, core.tensor.reshape(mask, {#means, 1}))
    if l.bias then core.ops.binary_("mul", l.bias, l.bias, mask) end
  end
  apply()
  local epochs = opts.epochs or 1
  if epochs > 0 then
    require("deepsigns.train").train{model = m, data = d, epochs = epochs, batch_size = opts.batch_size or 128,
      optimizer = make_optimizer(m:parameters(), {optimizer = opts.optimizer, lr = opts.lr or 1e-3}),
      progress = false, on_epoch = function() apply() end,
      regularizers = {function() apply() end}}
    apply()
  end
  m.pruned_units = k
  return m
end

-- Distillation into a fresh student from the teacher's soft labels at temperature T
-- (loss scaled by T^2, as Hinton et al.). opts: T, epochs, lr, fraction.
function AT.distill(teacher, student, data, opts)
  check_model(teacher, "attacks.distill")
  check_model(student, "attacks.distill")
  opts = opts or {}
  local temp = opts.T or 3
  local d = attacker_data(data, opts)
  local s = student:clone()
  teacher:eval()
  local F = require "deepsigns.functional"
  local loss = function(logits, _, x)
    local soft = A.no_grad(function() return core.nn.softmax(core.ops.binary("div", teacher(x), temp), false) end)
    return F.cross_entropy(logits / temp, soft) * (temp * temp)
  end
  require("deepsigns.train").train{model = s, data = d, epochs = opts.epochs or 5, batch_size = opts.batch_size or 128,
    optimizer = make_optimizer(s:parameters(), {optimizer = opts.optimizer or "adam", lr = opts.lr or 1e-3}),
    loss = loss, progress = false}
  return s
end

-- Overwriting: the attacker embeds a fresh mark of the same scheme. Returns the
-- attacked model and the attacker's key. opts: scheme ("whitebox"|"blackbox"),
-- seed, layer (white-box; default the owner's), bits, K, epochs, and key options.
function AT.overwrite(model, data, opts)
  check_model(model, "attacks.overwrite")
  opts = opts or {}
  local scheme = opts.scheme or "whitebox"
  local d = attacker_data(data, opts)
  local m = model:clone()
  if scheme == "whitebox" then
    local wb = require "deepsigns.watermark.whitebox"
    local layer = opts.layer or (opts.key and opts.key.layer)
    if layer == nil then error("attacks.overwrite: give the layer (or the owner's key) for a white-box overwrite", 2) end
    local key = wb.keygen{model = m, layer = layer, data = d, bits = opts.bits or (opts.key and opts.key.bits) or 32,
      ntargets = opts.ntargets or 1, variant = opts.variant or (opts.key and opts.key.variant) or "paper",
      seed = opts.seed or 4242, keys_per_class = opts.keys_per_class}
    wb.embed{model = m, key = key, data = d, epochs = opts.epochs or 2, batch_size = opts.batch_size,
      optimizer = require("deepsigns.optim").Adam(m:parameters(), {lr = opts.lr or 1e-3}), progress = false}
    return m, key
  elseif scheme == "blackbox" then
    local bb = require "deepsigns.watermark.blackbox"
    local key = bb.keygen{model = m, data = d, K = opts.K or 20, seed = opts.seed or 4242, epochs = opts.epochs or 2,
      null_models = opts.null_models, p = opts.p, rounds = opts.rounds}
    return m, key
  end
  error('attacks.overwrite: scheme must be "whitebox" or "blackbox"', 2)
end

return AT
