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
--- nn.Linear(in, out, opts): y = x W^T + b for x of batch x in; W (out x in) and b (out)
-- start as PyTorch's (uniform in +-1/sqrt(in)). With activation, the layer's output (the
-- one capture and model:activations read) is post-activation; a ReLU runs in the same pass.
-- @tparam integer inp input features
-- @tparam integer out output features
-- @tparam[opt] table opts
-- @tparam[opt=true] boolean opts.bias
-- @tparam[opt] string opts.activation "relu", "sigmoid" or "tanh"
-- @usage local fc = ds.nn.Linear(784, 512, {activation = "relu"})
function L.Linear:__init(inp, out, opts)
  Module.__init(self)
  opts = U.check_options("nn.Linear", opts, {"bias", "activation"}, 4)
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
--- nn.Conv2d(cin, cout, k, opts): a 2-D convolution of N x cin x H x W inputs with
-- cout kernels of k x k (or {kh, kw}); stride 1 runs a direct AVX2 kernel, other strides
-- im2col and GEMM. A ReLU given as activation runs in the convolution's own pass.
-- @tparam integer cin input channels
-- @tparam integer cout output channels
-- @param k kernel size: a number or {kh, kw}
-- @tparam[opt] table opts
-- @param[opt=1] opts.stride a number or {sh, sw}
-- @param[opt=0] opts.padding zeros around the input: a number or {ph, pw}
-- @tparam[opt] string opts.activation "relu"
-- @tparam[opt=true] boolean opts.bias
-- @usage ds.nn.Conv2d(3, 32, 3, {padding = 1, activation = "relu"})
function L.Conv2d:__init(cin, cout, k, opts)
  Module.__init(self)
  opts = U.check_options("nn.Conv2d", opts, {"stride", "padding", "activation", "bias"}, 4)
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
  --- nn.MaxPool2d(k, opts) / nn.AvgPool2d(k, opts): the maximum (NaN propagates) or
  -- mean of each k x k window of N x C x H x W inputs.
  -- @param k window size: a number or {kh, kw}
  -- @tparam[opt] table opts
  -- @param[opt=k] opts.stride
  -- @param[opt=0] opts.padding
  -- @usage ds.nn.MaxPool2d(2)
  function P:__init(k, opts)
    Module.__init(self)
    opts = U.check_options(name, opts, {"stride", "padding"}, 4)
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
--- nn.GlobalAvgPool(): the mean over the spatial dimensions, N x C x H x W -> N x C.
function L.GlobalAvgPool:__init() Module.__init(self) end
function L.GlobalAvgPool:forward(x) return F.global_avg_pool(x) end

local function batchnorm_class(name, want_dim)
  local B = class(name, Module)
  --- nn.BatchNorm1d(n, opts) / nn.BatchNorm2d(n, opts): batch normalisation of N x n
  -- (1d) or N x n x H x W (2d) inputs with learned weight and bias, batch statistics in
  -- training and running ones (updated with momentum, unbiased variance) in eval mode.
  -- @tparam integer n features or channels
  -- @tparam[opt] table opts
  -- @tparam[opt=1e-5] number opts.eps
  -- @tparam[opt=0.1] number opts.momentum
  function B:__init(n, opts)
    Module.__init(self)
    opts = U.check_options(name, opts, {"eps", "momentum"}, 4)
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
--- nn.Dropout(p): in training, zeroes each element with probability p and scales the
-- rest by 1/(1-p); the identity in eval mode. The masks come from the seeded generator.
-- @tparam[opt=0.5] number p in [0, 1)
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
  --- nn.ReLU() / nn.Sigmoid() / nn.Tanh(): the activation as a layer of its own.
  function C:__init() Module.__init(self) end
  function C:forward(x) return T.check(x, name)[method](x) end
  return C
end
L.ReLU = activation("nn.ReLU", "relu")
L.Sigmoid = activation("nn.Sigmoid", "sigmoid")
L.Tanh = activation("nn.Tanh", "tanh")

L.Softmax = class("nn.Softmax", Module)
--- nn.Softmax(): softmax over the last dimension.
function L.Softmax:__init() Module.__init(self) end
function L.Softmax:forward(x) return F.softmax(x) end
L.LogSoftmax = class("nn.LogSoftmax", Module)
--- nn.LogSoftmax(): log-softmax over the last dimension.
function L.LogSoftmax:__init() Module.__init(self) end
function L.LogSoftmax:forward(x) return F.log_softmax(x) end

L.Flatten = class("nn.Flatten", Module)
--- nn.Flatten(): joins every dimension after the first into one (a view).
function L.Flatten:__init() Module.__init(self) end
function L.Flatten:forward(x) return T.check(x, "nn.Flatten"):flatten(2) end

L.Identity = class("nn.Identity", Module)
--- nn.Identity(): passes its input on.
function L.Identity:__init() Module.__init(self) end
function L.Identity:forward(x) return x end

return L
