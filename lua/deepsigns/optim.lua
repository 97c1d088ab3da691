-- Optimisers (each step is one fused C pass per parameter) and learning-rate schedules.
local core = require "deepsigns.core"
local T = require "deepsigns.tensor"
local A = require "deepsigns.autograd"
local class = require "deepsigns.class"

local O = {}

local Optimizer = class("optim.Optimizer")
O.Optimizer = Optimizer

function Optimizer:__init(params, opts, defaults)
  if type(params) ~= "table" or #params == 0 then
    error(self.__name .. ": expects a non-empty list of parameters (model:parameters())", 3)
  end
  for i, p in ipairs(params) do
    if not T.is_tensor(p) then error(self.__name .. ": parameter " .. i .. " is not a tensor", 3) end
    if not core.tensor.is_contiguous(p) then error(self.__name .. ": parameter " .. i .. " is not contiguous", 3) end
  end
  opts = opts or {}
  for k in pairs(opts) do
    if defaults[k] == nil then error(self.__name .. ": unknown option '" .. tostring(k) .. "'", 3) end
  end
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

-- Sets every parameter's gradient buffer to zero (a parameter without one yet is
-- left without; the next backward makes it).
function Optimizer:zero_grad()
  for _, p in ipairs(self.params) do
    local g = A.grad(p)
    if g ~= nil then core.tensor.fill(g, 0) end
  end
end

-- One update of every parameter that has a gradient.
function Optimizer:step()
  self.iterations = self.iterations + 1
  for i, p in ipairs(self.params) do
    local g = A.grad(p)
    if g ~= nil then
      if not core.tensor.is_contiguous(g) then g = core.tensor.clone(g) end
      self:update(p, g, self.state[i] or {}, i)
    end
  end
end

-- Optimiser state for checkpoints: tensors under prefix .. "<i>.<name>", and the
-- plain values (iterations, lr, per-parameter counters) as a table.
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
function Schedule:step()
  self.epoch = self.epoch + 1
  self.optimizer.lr = self.fn(self.base_lr, self.epoch, self.opts)
  return self.optimizer.lr
end

function O.StepLR(opt, opts)
  if not (opts and opts.step_size) then error("optim.StepLR: option step_size is required", 2) end
  return Schedule(opt, opts, function(lr, e, o) return lr * (o.gamma or 0.1) ^ (e // o.step_size) end)
end

function O.MultiStepLR(opt, opts)
  if not (opts and type(opts.milestones) == "table") then error("optim.MultiStepLR: option milestones is required", 2) end
  return Schedule(opt, opts, function(lr, e, o)
    local n = 0
    for _, m in ipairs(o.milestones) do if e >= m then n = n + 1 end end
    return lr * (o.gamma or 0.1) ^ n
  end)
end

function O.CosineAnnealingLR(opt, opts)
  if not (opts and opts.T_max) then error("optim.CosineAnnealingLR: option T_max is required", 2) end
  return Schedule(opt, opts, function(lr, e, o)
    local lo = o.eta_min or 0
    return lo + (lr - lo) * (1 + math.cos(math.pi * math.min(e, o.T_max) / o.T_max)) / 2
  end)
end

return O
