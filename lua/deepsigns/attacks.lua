-- Attacks on watermarked models. Each returns an attacked copy; the input model is
-- never changed. Strength parameters follow deepsigns.md §5.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local U = require "deepsigns.util"
local optim = require "deepsigns.optim"
local train = require "deepsigns.train"

local AT = {}

local function check_model(m, who)
  if type(m) ~= "table" or type(m.forward) ~= "function" then error(who .. ": argument #1 must be a model", 3) end
end

local function check_rate(rate, who, hi)
  if type(rate) ~= "number" or rate ~= rate or rate < 0 or rate > (hi or 1) then
    error(string.format("%s: rate must be a number in [0, %g], got %s", who, hi or 1, tostring(rate)), 3)
  end
end

local function check_epochs(epochs, who, min)
  if math.type(epochs) ~= "integer" or epochs < (min or 0) then
    error(string.format("%s: epochs must be an integer >= %d, got %s", who, min or 0, tostring(epochs)), 3)
  end
end

-- The attacker's data: a data set with samples, or the `fraction` of it (split_seed).
local function attacker_data(data, opts, who)
  if type(data) ~= "table" or not data.x then error(who .. ": the attacker's data must be a data set", 3) end
  if #data == 0 then error(who .. ": the attacker's data set " .. tostring(data.name) .. " is empty", 3) end
  local f = opts.fraction or 1
  if type(f) ~= "number" or f <= 0 or f > 1 then error(who .. ": fraction must be in (0, 1], got " .. tostring(f), 3) end
  if f < 1 then
    local part = data:split(f, opts.split_seed or 12345)
    if #part == 0 then error(string.format("%s: a fraction of %g of %d samples leaves none", who, f, #data), 3) end
    return part
  end
  return data
end

-- An optimiser over params: "sgd" (momentum 0.9), "adam", or a function(params) that
-- returns one (an optimiser object cannot be given: it would hold the original model's
-- tensors, not the attacked copy's).
local function make_optimizer(params, opts, who)
  local name = opts.optimizer or "sgd"
  local opt
  if type(name) == "function" then
    opt = name(params)
    if type(opt) ~= "table" or type(opt.step) ~= "function" then error(who .. ": the optimizer function must return an optimiser", 3) end
    if #opt.params ~= #params then
      error(string.format("%s: the optimizer function's optimiser holds %d tensors for the %d being trained", who,
        #opt.params, #params), 3)
    end
    for i, p in ipairs(params) do
      if not rawequal(opt.params[i], p) then
        error(string.format("%s: the optimizer function's optimiser holds other tensors than the model being trained "
          .. "(parameter %d: %s, expected %s)", who, i, U.shape_str(opt.params[i]), U.shape_str(p)), 3)
      end
    end
    return opt
  end
  if name == "adam" then return optim.Adam(params, {lr = opts.lr or 1e-3}) end
  if name == "sgd" then return optim.SGD(params, {lr = opts.lr or 1e-2, momentum = opts.momentum or 0.9}) end
  if type(name) == "table" then
    error(who .. ": optimizer must be \"sgd\", \"adam\" or a function(params) returning an optimiser (an optimiser "
      .. "built beforehand would train the original model's tensors, not the attacked copy's)", 3)
  end
  error(who .. ': optimizer must be "sgd", "adam" or a function(params) returning an optimiser, got ' .. tostring(name), 3)
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

-- 1 where |p| >= thr (kept), 0 below (pruned); thr is nudged past the k-th smallest so
-- that ties with it are pruned too
local function keep_mask(p, thr)
  return core.ops.binary("ge", core.ops.unary("abs", p), thr + thr * 1e-7 + 1e-30)
end

local RETRAIN_OPTIONS = {"data", "epochs", "lr", "optimizer", "batch_size", "fraction", "split_seed", "progress", "log"}

-- Retrains every parameter of m on data with the pruned entries held at exactly 0.
local function retrain_pruned(m, masks, r, who)
  U.check_options(who .. ": retrain", r, RETRAIN_OPTIONS, 4)
  local d = attacker_data(r.data, r, who)
  local epochs = r.epochs or 1
  check_epochs(epochs, who, 1)
  local params = m:parameters()
  local opt = make_optimizer(params, {optimizer = r.optimizer or "adam", lr = r.lr or 1e-4}, who)
  for p, mask in pairs(masks) do opt:set_mask(p, mask) end
  train.train{model = m, data = d, epochs = epochs, batch_size = r.batch_size or 128, optimizer = opt,
    progress = r.progress or false, log = r.log}
end

local PRUNE_OPTIONS = {"rate", "scope", "biases", "retrain"}

--- Magnitude pruning: zero the fraction `rate` of smallest |w|, per layer or globally.
-- opts: rate (0.5), scope ("layer" | "global"), biases (false), retrain = {data=,
-- epochs=1, lr=1e-4, optimizer="adam", batch_size=128, fraction=1}: then retrain with the
-- pruned weights held at exactly 0 (Han et al.'s protocol, the paper's figure).
function AT.prune(model, opts)
  check_model(model, "attacks.prune")
  opts = U.check_options("attacks.prune", opts, PRUNE_OPTIONS)
  local rate, scope = opts.rate or 0.5, opts.scope or "layer"
  check_rate(rate, "attacks.prune")
  if scope ~= "layer" and scope ~= "global" then error('attacks.prune: scope must be "layer" or "global"', 2) end
  if opts.retrain ~= nil and type(opts.retrain) ~= "table" then
    error("attacks.prune: retrain must be an option table {data=, epochs=, lr=, optimizer=}", 2)
  end
  local m = model:clone()
  local list = prunable(m, opts.biases)
  local masks = {}
  if scope == "global" then
    local ts, total = {}, 0
    for i, e in ipairs(list) do ts[i] = e[2]; total = total + core.tensor.numel(e[2]) end
    local k = math.floor(rate * total + 0.5)
    if k >= 1 then
      local thr = core.ops.abs_kth(ts, k)
      for _, t in ipairs(ts) do masks[t] = keep_mask(t, thr) end
    end
  else
    for _, e in ipairs(list) do
      local k = math.floor(rate * core.tensor.numel(e[2]) + 0.5)
      if k >= 1 then masks[e[2]] = keep_mask(e[2], core.ops.abs_kth({e[2]}, k)) end
    end
  end
  for p, mask in pairs(masks) do core.ops.binary_("mul", p, p, mask) end
  if opts.retrain then retrain_pruned(m, masks, opts.retrain, "attacks.prune") end
  return m
end

--- The fraction of exact zeros in each prunable weight tensor: {name = fraction}.
function AT.sparsity(model)
  check_model(model, "attacks.sparsity")
  local out = {}
  for _, e in ipairs(prunable(model)) do
    local zeros = core.tensor.item(core.ops.sum(core.ops.binary("eq", e[2], 0)))
    out[e[1]] = zeros / core.tensor.numel(e[2])
  end
  return out
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
--- The last nn.Linear layer of a model (the fine-tuning modes' "last layer").
function AT.last_linear(model) return last_linear(model) end

local function reinit_linear(l)
  local bound = 1 / math.sqrt(l.in_features)
  core.tensor.copy(l.weight, core.rng.rand(core.tensor.size(l.weight), -bound, bound))
  if l.bias then core.tensor.copy(l.bias, core.rng.rand(core.tensor.size(l.bias), -bound, bound)) end
end

local FINETUNE_OPTIONS = {"mode", "epochs", "lr", "optimizer", "momentum", "fraction", "split_seed", "batch_size",
  "progress", "log"}

--- Fine-tuning: FTLL (last layer), FTAL (all layers), RTLL / RTAL (last layer
-- re-initialised first). opts: mode ("FTAL"), epochs (5), lr, optimizer ("sgd" | "adam" |
-- function(params)), fraction (of the data the attacker holds), batch_size.
function AT.finetune(model, data, opts)
  check_model(model, "attacks.finetune")
  opts = U.check_options("attacks.finetune", opts, FINETUNE_OPTIONS)
  local mode = opts.mode or "FTAL"
  local valid = {FTLL = true, FTAL = true, RTLL = true, RTAL = true}
  if not valid[mode] then error("attacks.finetune: mode must be FTLL, FTAL, RTLL or RTAL, got " .. tostring(mode), 2) end
  local epochs = opts.epochs or 5
  check_epochs(epochs, "attacks.finetune", 1)
  local d = attacker_data(data, opts, "attacks.finetune")
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
  train.train{model = m, data = d, epochs = epochs, batch_size = opts.batch_size or 128,
    optimizer = make_optimizer(params, opts, "attacks.finetune"), progress = opts.progress or false, log = opts.log}
  for _, p in ipairs(frozen) do A.set_requires_grad(p, true) end
  return m
end

local QUANTIZE_OPTIONS = {"bits", "finetune_epochs", "data", "lr"}

--- Uniform symmetric k-bit quantisation of every weight tensor (and bias); optionally
-- followed by finetune_epochs of FTAL on data.
function AT.quantize(model, opts)
  check_model(model, "attacks.quantize")
  opts = U.check_options("attacks.quantize", opts, QUANTIZE_OPTIONS)
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

local NOISE_OPTIONS = {"sigma", "biases"}

--- Gaussian noise: w += N(0, (sigma * std(w))^2) on every weight tensor.
function AT.noise(model, opts)
  check_model(model, "attacks.noise")
  opts = U.check_options("attacks.noise", opts, NOISE_OPTIONS)
  local sigma = opts.sigma or 0.1
  if type(sigma) ~= "number" or sigma < 0 or sigma ~= sigma then error("attacks.noise: sigma must be a number >= 0", 2) end
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
  local ok, l = pcall(m.layer, m, which)
  if not ok then error(who .. ": " .. U.strip_location(l), 3) end
  if l.__name ~= "nn.Linear" then error(who .. ": layer " .. tostring(which) .. " must be an nn.Linear (got " .. l.__name .. ")", 3) end
  if l.activation ~= nil and l.activation ~= "relu" then error(who .. ": only ReLU hidden layers keep their function under scaling", 3) end
  return l
end

local PERMUTE_OPTIONS = {"layer", "seed", "scale"}

--- Neuron permutation (and, with scale=true, positive rescaling) of a hidden
-- Linear+ReLU layer: function-preserving, the accuracy is unchanged exactly
-- (up to rounding for scaling). opts: layer, seed, scale (true or {lo, hi}).
function AT.permute(model, opts)
  check_model(model, "attacks.permute")
  opts = U.check_options("attacks.permute", opts, PERMUTE_OPTIONS)
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
    if not (type(lo) == "number" and type(hi) == "number" and lo > 0 and hi >= lo) then
      error("attacks.permute: scale range must be positive", 2)
    end
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

local FINEPRUNE_OPTIONS = {"layer", "rate", "epochs", "lr", "optimizer", "samples", "fraction", "split_seed",
  "batch_size"}

--- Fine-pruning: zero the units of `layer` with the lowest mean activation on the
-- attacker's data (rate = fraction of units), then fine-tune with them held at zero
-- (their weight rows and biases masked in the optimiser). opts: layer, rate (0.8),
-- epochs (1), lr (1e-3), optimizer ("adam"), samples (2000).
function AT.fineprune(model, data, opts)
  check_model(model, "attacks.fineprune")
  opts = U.check_options("attacks.fineprune", opts, FINEPRUNE_OPTIONS)
  if opts.layer == nil then error("attacks.fineprune: option 'layer' is required", 2) end
  local rate = opts.rate or 0.8
  check_rate(rate, "attacks.fineprune")
  local epochs = opts.epochs or 1
  check_epochs(epochs, "attacks.fineprune")
  local d = attacker_data(data, opts, "attacks.fineprune")
  local m = model:clone()
  local l = linear_layer(m, opts.layer, "attacks.fineprune")
  local n = math.min(#d, opts.samples or 2000)
  local acts = m:activations(core.tensor.narrow(d.x, 1, 1, n), l)
  local means = core.tensor.flat(core.ops.sum(acts, 1))
  local order = {}
  for i = 1, #means do order[i] = i end
  table.sort(order, function(a, b) return means[a] < means[b] or (means[a] == means[b] and a < b) end)
  local k = math.floor(rate * #means + 0.5)
  local units = core.tensor.full({#means}, 1)
  for i = 1, k do core.tensor.set(units, order[i], 0) end
  local masks = {[l.weight] = core.tensor.contiguous(core.tensor.expand(core.tensor.reshape(units, {#means, 1}),
    core.tensor.size(l.weight)))}
  if l.bias then masks[l.bias] = units end
  for p, mask in pairs(masks) do core.ops.binary_("mul", p, p, mask) end
  if epochs > 0 then
    local opt = make_optimizer(m:parameters(), {optimizer = opts.optimizer or "adam", lr = opts.lr or 1e-3},
      "attacks.fineprune")
    for p, mask in pairs(masks) do opt:set_mask(p, mask) end
    train.train{model = m, data = d, epochs = epochs, batch_size = opts.batch_size or 128, optimizer = opt, progress = false}
  end
  m.pruned_units = k
  return m
end

local DISTILL_OPTIONS = {"T", "epochs", "lr", "optimizer", "fraction", "split_seed", "batch_size"}

--- Distillation into a fresh student from the teacher's soft labels at temperature T
-- (loss scaled by T^2, as Hinton et al.). opts: T (3), epochs (5), lr, fraction.
function AT.distill(teacher, student, data, opts)
  check_model(teacher, "attacks.distill")
  check_model(student, "attacks.distill")
  opts = U.check_options("attacks.distill", opts, DISTILL_OPTIONS)
  local temp = opts.T or 3
  if type(temp) ~= "number" or temp <= 0 then error("attacks.distill: T must be a number > 0", 2) end
  local epochs = opts.epochs or 5
  check_epochs(epochs, "attacks.distill", 1)
  local d = attacker_data(data, opts, "attacks.distill")
  local s = student:clone()
  teacher:eval()
  local F = require "deepsigns.functional"
  local loss = function(logits, _, x)
    local soft = A.no_grad(function() return core.nn.softmax(core.ops.binary("div", teacher(x), temp), false) end)
    return F.cross_entropy(logits / temp, soft) * (temp * temp)
  end
  train.train{model = s, data = d, epochs = epochs, batch_size = opts.batch_size or 128,
    optimizer = make_optimizer(s:parameters(), {optimizer = opts.optimizer or "adam", lr = opts.lr or 1e-3},
      "attacks.distill"), loss = loss, progress = false}
  return s
end

local OVERWRITE_OPTIONS = {"scheme", "seed", "layer", "key", "bits", "ntargets", "variant", "keys_per_class", "epochs",
  "lr", "batch_size", "K", "null_models", "p", "rounds", "embed", "fraction", "split_seed"}

--- Overwriting: the attacker embeds a fresh mark of the same scheme. Returns the
-- attacked model and the attacker's key. opts: scheme ("whitebox"|"blackbox"),
-- seed, layer (white-box; default the owner's key's), bits, K, epochs, and key options.
-- A black-box overwrite follows the paper: the attacker fine-tunes his keys into the
-- model (blackbox.keygen with embed = "finetune"; opts.embed = "training" retrains
-- the model round after round, a stronger attack).
function AT.overwrite(model, data, opts)
  check_model(model, "attacks.overwrite")
  opts = U.check_options("attacks.overwrite", opts, OVERWRITE_OPTIONS)
  local scheme = opts.scheme or "whitebox"
  local d = attacker_data(data, opts, "attacks.overwrite")
  local m = model:clone()
  if scheme == "whitebox" then
    local wb = require "deepsigns.watermark.whitebox"
    local layer = opts.layer or (opts.key and opts.key.layer)
    if layer == nil then error("attacks.overwrite: give the layer (or the owner's key) for a white-box overwrite", 2) end
    local key = wb.keygen{model = m, layer = layer, data = d, bits = opts.bits or (opts.key and opts.key.bits) or 32,
      ntargets = opts.ntargets or 1, variant = opts.variant or (opts.key and opts.key.variant) or "paper",
      seed = opts.seed or 4242, keys_per_class = opts.keys_per_class}
    wb.embed{model = m, key = key, data = d, epochs = opts.epochs or 2, batch_size = opts.batch_size,
      optimizer = optim.Adam(m:parameters(), {lr = opts.lr or 1e-3}), progress = false}
    return m, key
  elseif scheme == "blackbox" then
    local bb = require "deepsigns.watermark.blackbox"
    local key = bb.keygen{model = m, data = d, K = opts.K or 20, seed = opts.seed or 4242, epochs = opts.epochs or 2,
      null_models = opts.null_models, p = opts.p, rounds = opts.rounds, embed = opts.embed or "finetune"}
    return m, key
  end
  error('attacks.overwrite: scheme must be "whitebox" or "blackbox"', 2)
end

return AT
