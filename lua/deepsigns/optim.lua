-- Optimisers (each step is one fused C pass per parameter) and learning-rate schedules.
local core = require "deepsigns.core"
local T = require "deepsigns.tensor"
local A = require "deepsigns.autograd"
local class = require "deepsigns.class"
local U = require "deepsigns.util"

local O = {}

local Optimizer = class("optim.Optimizer")
O.Optimizer = Optimizer

--- optim.Optimizer: the base of the optimisers. A subclass calls
-- Optimizer.__init(self, params, opts, defaults) (defaults: every option with its
-- default, "required" for none) and defines update(p, g, state, i) for one parameter.
function Optimizer:__init(params, opts, defaults)
  if type(params) ~= "table" or #params == 0 then
    error(self.__name .. ": expects a non-empty list of parameters (model:parameters())", 3)
  end
  for i, p in ipairs(params) do
    if not T.is_tensor(p) then error(self.__name .. ": parameter " .. i .. " is not a tensor", 3) end
    if not core.tensor.is_contiguous(p) then error(self.__name .. ": parameter " .. i .. " is not contiguous", 3) end
  end
  local names = {}
  for k in pairs(defaults) do names[#names + 1] = k end
  opts = U.check_options(self.__name, opts, names, 4)
  for k, v in pairs(defaults) do
    local x = opts[k]
    if x == nil then x = v end
    if x == "required" then error(self.__name .. ": option '" .. k .. "' is required", 3) end
    self[k] = x
  end
  if type(self.lr) ~= "number" or self.lr < 0 then error(self.__name .. ": lr must be a number >= 0", 3) end
  self.params = params
  self.state = {}
  self.iterations = 0
  self.initial_lr = self.lr
end

--- Sets every parameter's gradient buffer to zero (a parameter without one yet is left
-- without; the next backward makes it).
function Optimizer:zero_grad()
  for _, p in ipairs(self.params) do
    local g = A.grad(p)
    if g ~= nil then core.tensor.fill(g, 0) end
  end
end

--- Holds entries of parameter p at exactly zero (pruning): mask is a tensor of p's shape
-- holding 0 (held) and 1 (trained). Each step zeroes the held entries' gradient before
-- the update, so that moments and weight decay never move them, and multiplies p by the
-- mask after it. mask = nil releases p.
-- @raise for a tensor that is not a parameter of this optimiser, or a mask of another shape
-- @usage opt:set_mask(layer.weight, layer.weight:ne(0))
function Optimizer:set_mask(p, mask)
  local index
  for i, q in ipairs(self.params) do if rawequal(q, p) then index = i end end
  if not index then error(self.__name .. ":set_mask: the tensor is not one of this optimiser's parameters", 2) end
  if mask ~= nil then
    if not T.is_tensor(mask) or not core.tensor.same_shape(mask, p) then
      error(string.format("%s:set_mask: a mask of shape %s does not fit parameter %d of shape %s", self.__name,
        T.is_tensor(mask) and U.shape_str(mask) or type(mask), index, U.shape_str(p)), 2)
    end
    core.ops.binary_("mul", p, p, mask)
  end
  self.masks = self.masks or {}
  self.masks[index] = mask
end

--- One update of every parameter that has a gradient (in its .grad buffer).
function Optimizer:step()
  self.iterations = self.iterations + 1
  local masks = self.masks
  for i, p in ipairs(self.params) do
    local g = A.grad(p)
    if g ~= nil then
      if not core.tensor.is_contiguous(g) then g = core.tensor.clone(g) end
      local mask = masks and masks[i]
      if mask then core.ops.binary_("mul", g, g, mask) end
      self:update(p, g, self.state[i] or {}, i)
      if mask then core.ops.binary_("mul", p, p, mask) end
    end
  end
end

--- The optimiser's state for checkpoints: its tensors put into `into` under
-- prefix .. "<i>.<name>"; returns the plain values (iterations, lr, counters) as a table.
function Optimizer:state_tensors(prefix, into)
  local plain = {iterations = self.iterations, lr = self.lr, params = {}}
  for i, st in pairs(self.state) do
    local p = {}
    for k, v in pairs(st) do
      if T.is_tensor(v) then into[prefix .. i .. "." .. k] = v else p[k] = v end
    end
    plain.params[tostring(i)] = p
  end
  return plain
end

--- Restores the state state_tensors saved.
function Optimizer:load_state_tensors(prefix, tensors, plain)
  self.iterations, self.lr = plain.iterations or 0, plain.lr or self.lr
  self.state = {}
  for i = 1, #self.params do
    local st, any = {}, false
    for k, v in pairs((plain.params or {})[tostring(i)] or {}) do st[k] = math.tointeger(v) or v; any = true end
    for name, t in pairs(tensors) do
      local idx, k = name:match("^" .. prefix:gsub("%.", "%%.") .. "(%d+)%.(.+)$")
      if idx and tonumber(idx) == i then st[k] = core.tensor.clone(t); any = true end
    end
    if any then self.state[i] = st end
  end
end

-- SGD with momentum, dampening, Nesterov and (L2) weight decay, as PyTorch.
O.SGD = class("optim.SGD", Optimizer)
--- optim.SGD(params, opts): stochastic gradient descent with momentum, dampening,
-- Nesterov momentum and L2 weight decay, as PyTorch's.
-- @tparam table params model:parameters()
-- @tparam table opts
-- @tparam number opts.lr required
-- @tparam[opt=0] number opts.momentum
-- @tparam[opt=0] number opts.dampening
-- @tparam[opt=false] boolean opts.nesterov
-- @tparam[opt=0] number opts.weight_decay
-- @usage ds.optim.SGD(model:parameters(), {lr = 0.01, momentum = 0.9, nesterov = true})
function O.SGD:__init(params, opts)
  Optimizer.__init(self, params, opts, {lr = "required", momentum = 0, dampening = 0, nesterov = false,
    weight_decay = 0})
  if self.nesterov and (self.momentum <= 0 or self.dampening ~= 0) then
    error("optim.SGD: Nesterov momentum needs momentum > 0 and dampening 0", 2)
  end
end
function O.SGD:update(p, g, st, i)
  local first = false
  if self.momentum ~= 0 and not st.buf then
    st.buf = core.tensor.zeros(core.tensor.size(p)); self.state[i] = st; first = true
  end
  core.optim.sgd_step(p, g, st.buf, self.lr, self.momentum, self.dampening, self.nesterov, self.weight_decay, first)
end

-- Adam (L2 weight decay) and AdamW (decoupled), as PyTorch.
O.Adam = class("optim.Adam", Optimizer)
--- optim.Adam(params, opts): Adam with bias-corrected moments, as PyTorch's; L2 weight
-- decay, or decoupled (AdamW).
-- @tparam table params model:parameters()
-- @tparam[opt] table opts
-- @tparam[opt=1e-3] number opts.lr
-- @tparam[opt={0.9, 0.999}] table opts.betas
-- @tparam[opt=1e-8] number opts.eps
-- @tparam[opt=0] number opts.weight_decay
-- @tparam[opt=false] boolean opts.decoupled AdamW's decay
-- @usage ds.optim.Adam(model:parameters(), {lr = 1e-3})
function O.Adam:__init(params, opts)
  Optimizer.__init(self, params, opts, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0,
    decoupled = false})
end
function O.Adam:update(p, g, st, i)
  if not st.m then
    st.m, st.v, st.step = core.tensor.zeros(core.tensor.size(p)), core.tensor.zeros(core.tensor.size(p)), 0
    self.state[i] = st
  end
  st.step = st.step + 1
  core.optim.adam_step(p, g, st.m, st.v, self.lr, self.betas[1], self.betas[2], self.eps, self.weight_decay,
    self.decoupled, st.step)
end
--- Adam with decoupled weight decay (default 1e-2), as PyTorch's AdamW; options as Adam's.
function O.AdamW(params, opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.decoupled = true
  if o.weight_decay == nil then o.weight_decay = 1e-2 end
  return O.Adam(params, o)
end

-- RMSprop as Keras: sq = rho sq + (1-rho) g^2; w -= lr_t g / (sqrt(sq) + eps), with
-- Keras's time-based decay lr_t = lr / (1 + decay * iterations) (the DeepSigns demo's setting).
O.RMSprop = class("optim.RMSprop", Optimizer)
--- optim.RMSprop(params, opts): as Keras's, with its time-based decay lr / (1 + decay *
-- iterations) (the DeepSigns demo's optimiser).
-- @tparam table params
-- @tparam[opt] table opts
-- @tparam[opt=1e-3] number opts.lr
-- @tparam[opt=0.9] number opts.rho
-- @tparam[opt=1e-7] number opts.eps
-- @tparam[opt=0] number opts.weight_decay
-- @tparam[opt=0] number opts.decay
function O.RMSprop:__init(params, opts)
  Optimizer.__init(self, params, opts, {lr = 1e-3, rho = 0.9, eps = 1e-7, weight_decay = 0, decay = 0})
end
function O.RMSprop:update(p, g, st, i)
  if not st.sq then st.sq = core.tensor.zeros(core.tensor.size(p)); self.state[i] = st end
  local lr = self.lr / (1 + self.decay * (self.iterations - 1))
  core.optim.rmsprop_step(p, g, st.sq, lr, self.rho, self.eps, self.weight_decay)
end

-- Schedules: call :step() once per epoch; they set optimizer.lr.
local Schedule = class("optim.Schedule")
function Schedule:__init(opt, opts, fn)
  if type(opt) ~= "table" or opt.lr == nil then error(self.__name .. ": expects an optimiser", 3) end
  self.optimizer, self.opts, self.epoch, self.base_lr, self.fn = opt, opts or {}, 0, opt.lr, fn
end
--- Advances the schedule by one epoch and sets the optimiser's learning rate; returns it.
function Schedule:step()
  self.epoch = self.epoch + 1
  self.optimizer.lr = self.fn(self.base_lr, self.epoch, self.opts)
  return self.optimizer.lr
end

--- A schedule multiplying the learning rate by gamma every step_size epochs.
-- @param opt the optimiser
-- @tparam table opts {step_size = (required), gamma = 0.1}
function O.StepLR(opt, opts)
  U.check_options("optim.StepLR", opts, {"step_size", "gamma"})
  if not (opts and opts.step_size) then error("optim.StepLR: option step_size is required", 2) end
  return Schedule(opt, opts, function(lr, e, o) return lr * (o.gamma or 0.1) ^ (e // o.step_size) end)
end

--- A schedule multiplying the learning rate by gamma at each milestone epoch.
-- @param opt the optimiser
-- @tparam table opts {milestones = {epochs} (required), gamma = 0.1}
function O.MultiStepLR(opt, opts)
  U.check_options("optim.MultiStepLR", opts, {"milestones", "gamma"})
  if not (opts and type(opts.milestones) == "table") then error("optim.MultiStepLR: option milestones is required", 2) end
  return Schedule(opt, opts, function(lr, e, o)
    local n = 0
    for _, m in ipairs(o.milestones) do if e >= m then n = n + 1 end end
    return lr * (o.gamma or 0.1) ^ n
  end)
end

--- A schedule annealing the learning rate along a half cosine to eta_min over T_max epochs.
-- @param opt the optimiser
-- @tparam table opts {T_max = (required), eta_min = 0}
-- @usage local s = ds.optim.CosineAnnealingLR(opt, {T_max = 10}); ds.train{..., schedule = s}
function O.CosineAnnealingLR(opt, opts)
  U.check_options("optim.CosineAnnealingLR", opts, {"T_max", "eta_min"})
  if not (opts and opts.T_max) then error("optim.CosineAnnealingLR: option T_max is required", 2) end
  return Schedule(opt, opts, function(lr, e, o)
    local lo = o.eta_min or 0
    return lo + (lr - lo) * (1 + math.cos(math.pi * math.min(e, o.T_max) / o.T_max)) / 2
  end)
end

return O
