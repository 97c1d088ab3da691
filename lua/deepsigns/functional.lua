-- Differentiable layer ops and losses: fused C kernels plus their recorded
-- backward. nn modules and the watermark losses call these.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"

local record, check = A.record, T.check
-- for ops whose backward returns only tensors a C kernel has just made (autograd.record)
local function record_fresh(out, inputs, backward) return record(out, inputs, backward, true) end
local F = {}

local function shape_str(x) local s = core.size(x); return #s == 0 and "scalar" or table.concat(s, "x") end

-- y = x W^T + b (one GEMM, bias folded in)
function F.linear(x, w, b)
  check(x, "linear", 1); check(w, "linear", 2)
  local y = core.linear(x, w, b)
  return record_fresh(y, {x, w, b}, function(g, needs)
    local spare, zeroed
    if needs[2] then spare, zeroed = A.take_spare(w) end
    local gx, gw, gb = core.linear_backward(x, w, g, needs[1], needs[2], b ~= nil and needs[3], spare, zeroed)
    if gw ~= nil then A.recyclable[gw] = true end
    return gx, gw, gb
  end)
end

local function pair(v, who, what)
  if type(v) == "number" then return v, v end
  if type(v) == "table" and #v == 2 then return v[1], v[2] end
  error(string.format("%s: %s must be a number or {h, w}", who, what), 3)
end

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
  local y = core.conv2d(x, w, b, sh, sw, ph, pw, relu)
  return record_fresh(y, {x, w, b}, function(g, needs)
    return core.conv2d_backward(x, w, g, sh, sw, ph, pw, needs[1], needs[2], b ~= nil and needs[3],
      relu and y or nil)
  end)
end

local function pool(kind)
  local fwd, bwd = core[kind], core[kind .. "_backward"]
  return function(x, k, opts)
    check(x, kind, 1)
    opts = opts or {}
    local kh, kw = pair(k, kind, "kernel size")
    local sh, sw = pair(opts.stride or k, kind, "stride")
    local ph, pw = pair(opts.padding or 0, kind, "padding")
    local y = fwd(x, kh, kw, sh, sw, ph, pw)
    return record_fresh(y, {x}, function(g) return bwd(x, g, kh, kw, sh, sw, ph, pw) end)
  end
end
F.max_pool2d = pool("maxpool2d")
F.avg_pool2d = pool("avgpool2d")

-- mean over the spatial dims: N x C x H x W -> N x C
function F.global_avg_pool(x)
  check(x, "global_avg_pool")
  if core.dim(x) ~= 4 then error("global_avg_pool: input must be N x C x H x W, got " .. shape_str(x), 2) end
  local s = core.size(x)
  return x:reshape(s[1], s[2], s[3] * s[4]):mean(3)
end

-- softmax over the last dimension
function F.softmax(x)
  check(x, "softmax")
  local y = core.softmax(x, false)
  return record_fresh(y, {x}, function(g) return core.softmax_backward(y, g, false) end)
end

function F.log_softmax(x)
  check(x, "log_softmax")
  local y = core.softmax(x, true)
  return record_fresh(y, {x}, function(g) return core.softmax_backward(y, g, true) end)
end

-- labels: a tensor of class ids (B) or soft targets (B x C); opts.label_smoothing
function F.cross_entropy(logits, labels, opts)
  check(logits, "cross_entropy", 1)
  if type(labels) == "table" and not T.is_tensor(labels) then labels = core.from_table(labels) end
  check(labels, "cross_entropy", 2)
  local eps = opts and opts.label_smoothing or 0
  local loss, probs = core.cross_entropy(logits, labels, eps)
  return record_fresh(loss, {logits}, function(g)
    return core.cross_entropy_backward(probs, labels, eps, core.item(g))
  end)
end

-- cross-entropy against soft labels at temperature T (distillation)
function F.soft_cross_entropy(logits, teacher_probs, temperature)
  local t = temperature or 1
  return F.cross_entropy(logits / t, teacher_probs)
end

function F.mse(a, b)
  check(a, "mse", 1); check(b, "mse", 2)
  local sa, sb = core.size(a), core.size(b)
  if shape_str(a) ~= shape_str(b) then
    error("mse: size mismatch, a: " .. shape_str(a) .. ", b: " .. shape_str(b), 2)
  end
  local d = a - b
  return (d * d):mean()
end

function F.bce(p, target)
  check(p, "bce", 1); check(target, "bce", 2)
  local loss = core.bce(p, target)
  return record_fresh(loss, {p}, function(g) return core.bce_backward(p, target, core.item(g)) end)
end

function F.dropout(x, p, training)
  check(x, "dropout")
  if not training or p == 0 then return x end
  local y, mask = core.dropout(x, p) -- the mask drawn and applied in one pass
  return record_fresh(y, {x}, function(g, _, mine)
    if mine then return core.binary_("mul", g, g, mask) end -- over g: no new buffer
    return core.binary("mul", g, mask)
  end)
end

-- state: {running_mean, running_var, momentum, eps}; weight and bias are parameters
function F.batch_norm(x, weight, bias, state, training)
  check(x, "batch_norm")
  local y, mean, invstd = core.batchnorm(x, weight, bias, state.running_mean, state.running_var,
    training, state.momentum or 0.1, state.eps or 1e-5)
  return record_fresh(y, {x, weight, bias}, function(g, needs)
    return core.batchnorm_backward(x, weight, mean, invstd, g, training, needs[1])
  end)
end

-- y[i] = x[i, idx[i]] with idx holding 0-based class ids
function F.gather_rows(x, idx)
  check(x, "gather_rows", 1); check(idx, "gather_rows", 2)
  local y = core.gather_rows(x, idx)
  return record_fresh(y, {x}, function(g) return core.gather_rows_backward(x, idx, g) end)
end

-- pairwise squared Euclidean distances between rows: n x m, k x m -> n x k
function F.sqdist(a, b)
  check(a, "sqdist", 1); check(b, "sqdist", 2)
  local d = core.sqdist(a, b)
  return record_fresh(d, {a, b}, function(g) return core.sqdist_backward(a, b, g) end)
end

return F
