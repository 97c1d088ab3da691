-- The nn layers: thin Lua state over the fused C ops in deepsigns.functional.
local core = require "deepsigns.core"
local F = require "deepsigns.functional"
local T = require "deepsigns.tensor"
local class = require "deepsigns.class"
local Module = require "deepsigns.nn.module"
local U = require "deepsigns.util"

local L = {}

local function int_arg(v, who, what)
  if math.type(v) ~= "integer" or v < 1 then
    error(string.format("%s: %s must be a positive integer, got %s", who, what, tostring(v)), 4)
  end
  return v
end

-- PyTorch's default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
-- and the same bound for the bias.
local function init_uniform(shape, fan_in)
  local bound = fan_in > 0 and 1 / math.sqrt(fan_in) or 0
  return core.rng.rand(shape, -bound, bound)
end

L.Linear = class("nn.Linear", Module)
function L.Linear:__init(inp, out, opts)
  Module.__init(self)
  self.in_features = int_arg(inp, "nn.Linear", "input size")
  self.out_features = int_arg(out, "nn.Linear", "output size")
  self:register_parameter("weight", init_uniform({out, inp}, inp))
  if not (opts and opts.bias == false) then self:register_parameter("bias", init_uniform({out}, inp)) end
  -- an activation applied to the output (as a Keras Dense layer), so that the
  -- layer's output (what capture and model:activations read) is post-activation
  local act = opts and opts.activation
  if act ~= nil and act ~= "relu" and act ~= "sigmoid" and act ~= "tanh" then
    error("nn.Linear: activation must be \"relu\", \"sigmoid\" or \"tanh\", got " .. tostring(act), 3)
  end
  self.activation = act
end
function L.Linear:forward(x)
  if core.tensor.dim(x) ~= 2 or core.tensor.size(x, 2) ~= self.in_features then
    error(string.format("nn.Linear(%d -> %d): input must be batch x %d, got %s", self.in_features,
      self.out_features, self.in_features, U.shape_str(x)), 2)
  end
  local act = self.activation
  local y = F.linear(x, self.weight, self.bias, act == "relu") -- a ReLU runs in the same pass
  if act and act ~= "relu" then y = y[act](y) end
  return y
end
function L.Linear:extra_repr()
  return self.in_features .. " -> " .. self.out_features .. (self.activation and ", " .. self.activation or "")
end

L.Conv2d = class("nn.Conv2d", Module)
function L.Conv2d:__init(cin, cout, k, opts)
  Module.__init(self)
  opts = opts or {}
  self.in_channels = int_arg(cin, "nn.Conv2d", "input channels")
  self.out_channels = int_arg(cout, "nn.Conv2d", "output channels")
  local kh, kw = k, k
  if type(k) == "table" then kh, kw = k[1], k[2] end
  int_arg(kh, "nn.Conv2d", "kernel size"); int_arg(kw, "nn.Conv2d", "kernel size")
  self.kernel_size = {kh, kw}
  self.stride = opts.stride or 1
  self.padding = opts.padding or 0
  -- as for Linear: the layer's output is post-activation; the ReLU runs fused in the
  -- convolution's own pass
  if opts.activation ~= nil and opts.activation ~= "relu" then
    error("nn.Conv2d: activation must be \"relu\" or nil, got " .. tostring(opts.activation), 3)
  end
  self.activation = opts.activation
  local fan_in = cin * kh * kw
  self:register_parameter("weight", init_uniform({cout, cin, kh, kw}, fan_in))
  if opts.bias ~= false then self:register_parameter("bias", init_uniform({cout}, fan_in)) end
end
function L.Conv2d:forward(x)
  return F.conv2d(x, self.weight, self.bias, {stride = self.stride, padding = self.padding, activation = self.activation})
end
function L.Conv2d:extra_repr()
  local s = string.format("%d -> %d, %dx%d", self.in_channels, self.out_channels, self.kernel_size[1], self.kernel_size[2])
  if self.stride ~= 1 then s = s .. ", stride " .. tostring(self.stride) end
  if self.padding ~= 0 then s = s .. ", padding " .. tostring(self.padding) end
  if self.activation then s = s .. ", " .. self.activation end
  return s
end

local function pool_class(name, fn)
  local P = class(name, Module)
  function P:__init(k, opts)
    Module.__init(self)
    opts = opts or {}
    if type(k) ~= "table" then int_arg(k, name, "kernel size") end
    self.kernel_size, self.stride, self.padding = k, opts.stride or k, opts.padding or 0
  end
  function P:forward(x) return fn(x, self.kernel_size, {stride = self.stride, padding = self.padding}) end
  function P:extra_repr() return tostring(self.kernel_size) end
  return P
end
L.MaxPool2d = pool_class("nn.MaxPool2d", F.max_pool2d)
L.AvgPool2d = pool_class("nn.AvgPool2d", F.avg_pool2d)

L.GlobalAvgPool = class("nn.GlobalAvgPool", Module)
function L.GlobalAvgPool:forward(x) return F.global_avg_pool(x) end

local function batchnorm_class(name, want_dim)
  local B = class(name, Module)
  function B:__init(n, opts)
    Module.__init(self)
    opts = opts or {}
    self.num_features = int_arg(n, name, "number of features")
    self.eps, self.momentum = opts.eps or 1e-5, opts.momentum or 0.1
    self:register_parameter("weight", core.tensor.full({n}, 1))
    self:register_parameter("bias", core.tensor.zeros({n}))
    self:register_buffer("running_mean", core.tensor.zeros({n}))
    self:register_buffer("running_var", core.tensor.full({n}, 1))
  end
  function B:forward(x)
    if core.tensor.dim(x) ~= want_dim or core.tensor.size(x, 2) ~= self.num_features then
      error(string.format("%s(%d): input must have %d dimensions with %d channels, got %s", name,
        self.num_features, want_dim, self.num_features, U.shape_str(x)), 2)
    end
    return F.batch_norm(x, self.weight, self.bias, self, self.training)
  end
  function B:extra_repr() return tostring(self.num_features) end
  return B
end
L.BatchNorm1d = batchnorm_class("nn.BatchNorm1d", 2)
L.BatchNorm2d = batchnorm_class("nn.BatchNorm2d", 4)

L.Dropout = class("nn.Dropout", Module)
function L.Dropout:__init(p)
  Module.__init(self)
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p >= 1 then
    error("nn.Dropout: probability must be in [0, 1), got " .. tostring(p), 3)
  end
  self.p = p
end
function L.Dropout:forward(x) return F.dropout(x, self.p, self.training) end
function L.Dropout:extra_repr() return tostring(self.p) end

local function activation(name, method)
  local C = class(name, Module)
  function C:forward(x) return T.check(x, name)[method](x) end
  return C
end
L.ReLU = activation("nn.ReLU", "relu")
L.Sigmoid = activation("nn.Sigmoid", "sigmoid")
L.Tanh = activation("nn.Tanh", "tanh")

L.Softmax = class("nn.Softmax", Module)
function L.Softmax:forward(x) return F.softmax(x) end
L.LogSoftmax = class("nn.LogSoftmax", Module)
function L.LogSoftmax:forward(x) return F.log_softmax(x) end

L.Flatten = class("nn.Flatten", Module)
function L.Flatten:forward(x) return T.check(x, "nn.Flatten"):flatten(2) end

L.Identity = class("nn.Identity", Module)
function L.Identity:forward(x) return x end

return L
