-- Differentiable layer ops and losses: fused C kernels plus their recorded
-- backward. The nn modules call these.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"
local U = require "deepsigns.util"

local record, check = A.record, T.check
local shape_str = U.shape_str
local F = {}

--- y = x W^T + b (one GEMM, the bias folded in), and with relu = true the ReLU in the
-- same pass. The backward adds the weight and bias gradients straight into their
-- buffers (autograd.accumulator).
-- @param x batch x in
-- @param w out x in
-- @param[opt] b out
-- @tparam[opt=false] boolean relu
function F.linear(x, w, b, relu)
  check(x, "linear", 1); check(w, "linear", 2)
  local y = core.ops.linear(x, w, b, relu)
  return record(y, {x, w, b}, function(g, needs)
    local gw_buf, gw, gb_buf, gb
    if needs[2] then gw_buf, gw = A.accumulator(w) end
    if b ~= nil and needs[3] then gb_buf, gb = A.accumulator(b) end
    local gx = core.ops.linear_backward(x, w, g, relu and y or nil, needs[1], gw_buf, gb_buf)
    return gx, gw, gb
  end)
end

local function pair(v, who, what)
  if type(v) == "number" then return v, v end
  if type(v) == "table" and #v == 2 then return v[1], v[2] end
  error(string.format("%s: %s must be a number or {h, w}", who, what), 3)
end

--- A 2-D convolution of x (N x C x H x W) with kernels w (out x C x kh x kw) and bias b.
-- @tparam[opt] table opts {stride = 1, padding = 0, activation = "relu" | nil}
function F.conv2d(x, w, b, opts)
  check(x, "conv2d", 1); check(w, "conv2d", 2)
  opts = opts or {}
  local sh, sw = pair(opts.stride or 1, "conv2d", "stride")
  local ph, pw = pair(opts.padding or 0, "conv2d", "padding")
  local act = opts.activation
  if act ~= nil and act ~= "relu" then
    error("conv2d: activation must be \"relu\" or nil, got " .. tostring(act), 2)
  end
  -- a ReLU fused into the same pass: no separate sweep over the output either way
  local relu = act == "relu"
  local y = core.nn.conv2d(x, w, b, sh, sw, ph, pw, relu)
  return record(y, {x, w, b}, function(g, needs)
    return core.nn.conv2d_backward(x, w, g, sh, sw, ph, pw, needs[1], needs[2], b ~= nil and needs[3],
      relu and y or nil)
  end)
end

local function pool(kind)
  local fwd, bwd = core.nn[kind], core.nn[kind .. "_backward"]
  return function(x, k, opts)
    check(x, kind, 1)
    opts = opts or {}
    local kh, kw = pair(k, kind, "kernel size")
    local sh, sw = pair(opts.stride or k, kind, "stride")
    local ph, pw = pair(opts.padding or 0, kind, "padding")
    local y = fwd(x, kh, kw, sh, sw, ph, pw)
    return record(y, {x}, function(g) return bwd(x, g, kh, kw, sh, sw, ph, pw) end)
  end
end
local max_pool2d, avg_pool2d = pool("maxpool2d"), pool("avgpool2d")
--- Max pooling of x (N x C x H x W) over k x k windows; NaN propagates.
-- @tparam[opt] table opts {stride = k, padding = 0}
function F.max_pool2d(x, k, opts) return max_pool2d(x, k, opts) end
--- Average pooling of x (N x C x H x W) over k x k windows.
-- @tparam[opt] table opts {stride = k, padding = 0}
function F.avg_pool2d(x, k, opts) return avg_pool2d(x, k, opts) end

--- The mean over the spatial dimensions: N x C x H x W -> N x C.
function F.global_avg_pool(x)
  check(x, "global_avg_pool")
  if core.tensor.dim(x) ~= 4 then error("global_avg_pool: input must be N x C x H x W, got " .. shape_str(x), 2) end
  local s = core.tensor.size(x)
  return x:reshape(s[1], s[2], s[3] * s[4]):mean(3)
end

--- Softmax over the last dimension.
function F.softmax(x)
  check(x, "softmax")
  local y = core.nn.softmax(x, false)
  return record(y, {x}, function(g) return core.nn.softmax_backward(y, g, false) end)
end

--- Log-softmax over the last dimension.
function F.log_softmax(x)
  check(x, "log_softmax")
  local y = core.nn.softmax(x, true)
  return record(y, {x}, function(g) return core.nn.softmax_backward(y, g, true) end)
end

--- The mean cross-entropy of logits (B x C) against class ids (B, 0-based) or soft
-- targets (B x C), softmax and loss fused.
-- @param logits
-- @param labels
-- @tparam[opt] table opts {label_smoothing = 0}
-- @raise for a label that is no class id, naming the row
-- @usage local loss = ds.nn.cross_entropy(model(x), y)
function F.cross_entropy(logits, labels, opts)
  check(logits, "cross_entropy", 1)
  if type(labels) == "table" and not T.is_tensor(labels) then labels = core.tensor.from_table(labels) end
  check(labels, "cross_entropy", 2)
  local eps = opts and opts.label_smoothing or 0
  local loss, probs = core.nn.cross_entropy(logits, labels, eps)
  return record(loss, {logits}, function(g)
    return core.nn.cross_entropy_backward(probs, labels, eps, core.tensor.item(g))
  end)
end

--- Cross-entropy of logits / T against soft targets (distillation).
function F.soft_cross_entropy(logits, teacher_probs, temperature)
  local t = temperature or 1
  return F.cross_entropy(logits / t, teacher_probs)
end

--- The mean squared difference of two tensors of one shape.
function F.mse(a, b)
  check(a, "mse", 1); check(b, "mse", 2)
  if shape_str(a) ~= shape_str(b) then
    error("mse: size mismatch, a: " .. shape_str(a) .. ", b: " .. shape_str(b), 2)
  end
  local d = a - b
  return (d * d):mean()
end

--- The mean binary cross-entropy of probabilities p against 0/1 targets (p clamped to [1e-7, 1-1e-7]).
function F.bce(p, target)
  check(p, "bce", 1); check(target, "bce", 2)
  local loss = core.nn.bce(p, target)
  return record(loss, {p}, function(g) return core.nn.bce_backward(p, target, core.tensor.item(g)) end)
end

--- Dropout with probability p when training (a mask from the seeded generator), else x.
function F.dropout(x, p, training)
  check(x, "dropout")
  if not training or p == 0 then return x end
  local y, mask = core.nn.dropout(x, p) -- the mask drawn and applied in one pass
  return record(y, {x}, function(g) return core.ops.binary("mul", g, mask) end)
end

--- Batch normalisation of x (N x C or N x C x H x W); state holds running_mean,
-- running_var, momentum and eps, and is updated in training.
function F.batch_norm(x, weight, bias, state, training)
  check(x, "batch_norm")
  local y, mean, invstd = core.nn.batchnorm(x, weight, bias, state.running_mean, state.running_var,
    training, state.momentum or 0.1, state.eps or 1e-5)
  return record(y, {x, weight, bias}, function(g, needs)
    return core.nn.batchnorm_backward(x, weight, mean, invstd, g, training, needs[1])
  end)
end

--- y[i] = x[i, idx[i]] for x (B x C) and idx holding 0-based class ids.
function F.gather_rows(x, idx)
  check(x, "gather_rows", 1); check(idx, "gather_rows", 2)
  local y = core.ops.gather_rows(x, idx)
  return record(y, {x}, function(g) return core.ops.gather_rows_backward(x, idx, g) end)
end

--- The squared Euclidean distances between the rows of a (n x m) and b (k x m): n x k.
function F.sqdist(a, b)
  check(a, "sqdist", 1); check(b, "sqdist", 2)
  local d = core.ops.sqdist(a, b)
  return record(d, {a, b}, function(g) return core.ops.sqdist_backward(a, b, g) end)
end

return F
