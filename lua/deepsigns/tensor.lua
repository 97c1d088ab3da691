-- Tensor methods and operators (differentiable where it makes sense), and the
-- constructors. Methods live in one table that the userdata metatable serves.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local format = require "deepsigns.format"

local record, getuv = A.record, core.getuv
local binary, unary, unary_backward = core.binary, core.unary, core.unary_backward
local M = {} -- methods
local T = {methods = M}

local function is_tensor(x) return type(x) == "userdata" and getmetatable(x) == core.metatable end
T.is_tensor = is_tensor

local function check(x, who, argn)
  if not is_tensor(x) then
    error(string.format("%s: argument #%d must be a deepsigns.Tensor, got %s", who, argn or 1,
      type(x) == "userdata" and "userdata" or type(x)), 3)
  end
  return x
end
T.check = check

-- Shape of a broadcast operand for sum_to (numbers have no gradient).
local function grad_to(g, x)
  if type(x) ~= "userdata" then return nil end
  return core.sum_to(g, core.size(x))
end

local function binop(name, a, b)
  if not (is_tensor(a) or is_tensor(b)) then error(name .. ": one operand must be a tensor", 3) end
  if not is_tensor(a) and type(a) ~= "number" then error(name .. ": operand a is a " .. type(a), 3) end
  if not is_tensor(b) and type(b) ~= "number" then error(name .. ": operand b is a " .. type(b), 3) end
  return binary(name, a, b)
end

function M.add(a, b)
  return record(binop("add", a, b), {a, b}, function(g, needs)
    return needs[1] and grad_to(g, a) or nil, needs[2] and grad_to(g, b) or nil
  end)
end

function M.sub(a, b)
  return record(binop("sub", a, b), {a, b}, function(g, needs)
    return needs[1] and grad_to(g, a) or nil, needs[2] and grad_to(unary("neg", g), b) or nil
  end)
end

function M.mul(a, b)
  return record(binop("mul", a, b), {a, b}, function(g, needs)
    return needs[1] and grad_to(binary("mul", g, b), a) or nil,
      needs[2] and grad_to(binary("mul", g, a), b) or nil
  end)
end

function M.div(a, b)
  return record(binop("div", a, b), {a, b}, function(g, needs)
    local ga, gb
    if needs[1] then ga = grad_to(binary("div", g, b), a) end
    if needs[2] then -- -g a / b^2
      gb = grad_to(unary("neg", binary("div", binary("mul", g, a), binary("mul", b, b))), b)
    end
    return ga, gb
  end)
end

local function selectop(name, cmp)
  return function(a, b)
    return record(binop(name, a, b), {a, b}, function(g, needs)
      local mask = binary(cmp, a, b) -- where a wins (ties go to a)
      local ga = needs[1] and grad_to(binary("mul", g, mask), a) or nil
      local gb = needs[2] and grad_to(binary("mul", g, binary("sub", 1, mask)), b) or nil
      return ga, gb
    end)
  end
end
M.maximum = selectop("maximum", "ge")
M.minimum = selectop("minimum", "le")

for _, name in ipairs {"eq", "ne", "lt", "le", "gt", "ge"} do
  M[name] = function(a, b) return binop(name, a, b) end
end

-- unary ops: the backward reads the input (and the output where cheaper)
-- fuse_pull (ReLU only): folds a white-box pull on the output into the backward
-- (autograd.backward: a deferred add with a `pull` form)
local function record_unary(name, x, y, p, keep_out, fuse_pull)
  -- fresh: unary_backward returns a new tensor (autograd.record), or g itself when the
  -- backward pass says g is this node's alone (written over: no new buffer)
  record(y, {x}, function(g, _, mine)
    return unary_backward(name, x, keep_out and y or nil, g, p, mine and g or nil)
  end, true)
  if fuse_pull then
    local u = getuv(y)
    if u and u.node then u.node.fuse_pull = fuse_pull end
  end
  return y
end
local function unop(name, keep_out, fuse_pull)
  return function(x, p)
    check(x, name)
    return record_unary(name, x, unary(name, x, p), p, keep_out, fuse_pull)
  end
end
-- x: the ReLU's input; mine: g is the backward pass's alone, written over
local function relu_fuse_pull(g, pull, scale, x, mine)
  return core.wm_relu_pull_backward(x, g, pull.y, pull.c, nil, pull.classes, scale, mine and g or nil)
end

-- relu(x) whose output is made by make(x), a C op that computes more on the way while
-- each row is in cache (the white-box regularizer's loss: core.wm_relu_reference); it
-- returns relu(x) as a new tensor, or written over x (a new tensor on x's storage) when
-- x is the caller's own, as relu_over. The node is the ReLU's own. make may also return
-- a pull term {y=, c=, classes=, scale=}: the node's backward then adds its gradient,
-- scale (h_i - c_{y_i}) on the rows of classes with a centre, in its own pass (autograd:
-- node.pull), with no node of its own for the term.
function T.relu_made_by(x, make)
  check(x, "relu")
  local h, pull = make(x)
  record_unary("relu", x, h, nil, false, relu_fuse_pull)
  if pull ~= nil then
    local u = getuv(h)
    if u and u.node then u.node.pull = pull else pull.done = true end -- no graph: nothing to reach
  end
  return h
end
-- relu(x) written over x, for an x nobody else holds (a linear layer's own output before
-- its activation): no second buffer. The result is a new tensor on x's storage with the
-- ReLU's usual node; its backward reads the sign of x, which relu(x) keeps.
function T.relu_over(x)
  check(x, "relu")
  core.unary_("relu", x)
  return record_unary("relu", x, core.reshape(x, core.size(x)), nil, false, relu_fuse_pull)
end
for _, name in ipairs {"neg", "log", "abs", "square"} do M[name] = unop(name, false) end
M.relu = unop("relu", false, relu_fuse_pull)
for _, name in ipairs {"exp", "sqrt", "sigmoid", "tanh"} do M[name] = unop(name, true) end
local pow = unop("pow", false)
function M.pow(x, p)
  if type(p) ~= "number" then error("pow: exponent must be a number, got " .. type(p), 2) end
  if p == 2 then return M.square(x) end
  return pow(x, p)
end
function M.clamp(x, lo, hi)
  local y = x
  if lo then y = unop("clamp_min", false)(y, lo) end
  if hi then y = unop("clamp_max", false)(y, hi) end
  return y
end
function M.sign(x) return unary("sign", check(x, "sign")) end

-- reductions
local function unsqueeze_shape(shape, d)
  local s = {}
  for i = 1, #shape do s[#s + 1] = shape[i] end
  table.insert(s, d, 1)
  return s
end

local function norm_dim(x, d, who)
  local n = core.dim(x)
  if math.type(d) ~= "integer" then error(who .. ": dimension must be an integer, got " .. tostring(d), 3) end
  if d < 0 then d = d + n + 1 end
  if d < 1 or d > n then error(string.format("%s: dimension %d out of range for a %d-dimensional tensor", who, d, n), 3) end
  return d
end

-- g (reduced over d, keepdim or not) expanded back to x's shape
local function expand_back(g, x, d, keepdim)
  if d and not keepdim then g = core.reshape(g, unsqueeze_shape(core.size(g), d)) end
  return core.expand(g, core.size(x))
end

function M.sum(x, d, keepdim)
  check(x, "sum")
  if d ~= nil then d = norm_dim(x, d, "sum") end
  local y = core.sum(x, d, keepdim)
  return record(y, {x}, function(g) return expand_back(g, x, d, keepdim) end)
end

function M.mean(x, d, keepdim)
  check(x, "mean")
  local n = d and core.size(x, norm_dim(x, d, "mean")) or core.numel(x)
  if n == 0 then error("mean: no elements to average", 2) end
  return M.mul(M.sum(x, d, keepdim), 1 / n)
end

-- max over everything, or over d: values, 1-based positions. Ties share the gradient.
function M.max(x, d, keepdim)
  check(x, "max")
  if d == nil then
    local y = core.max(x)
    return record(y, {x}, function(g) return binary("mul", binary("eq", x, y), g) end)
  end
  d = norm_dim(x, d, "max")
  local v, idx = core.max(x, d, keepdim)
  core.binary_("add", idx, idx, 1)
  record(v, {x}, function(g)
    local vk = keepdim and v or core.reshape(v, unsqueeze_shape(core.size(v), d))
    return binary("mul", binary("eq", x, vk), expand_back(g, x, d, keepdim))
  end)
  return v, idx
end

function M.argmax(x, d)
  check(x, "argmax")
  if d == nil then
    local flat = core.reshape(x, {core.numel(x)})
    local _, idx = core.max(flat, 1)
    return math.tointeger(core.item(idx)) + 1
  end
  d = norm_dim(x, d, "argmax")
  local _, idx = core.max(x, d)
  return core.binary_("add", idx, idx, 1)
end

-- matmul: 1-D operands are treated as a row (left) or a column (right) vector
function M.matmul(a, b)
  check(a, "matmul", 1); check(b, "matmul", 2)
  local da, db = core.dim(a), core.dim(b)
  if da == 1 or db == 1 then
    local a2 = da == 1 and M.reshape(a, 1, core.size(a, 1)) or a
    local b2 = db == 1 and M.reshape(b, core.size(b, 1), 1) or b
    local y = M.matmul(a2, b2)
    local s = core.size(y)
    if da == 1 and db == 1 then return M.reshape(y, {}) end
    if da == 1 then return M.reshape(y, s[#s]) end
    return M.reshape(y, table.unpack(s, 1, #s - 1))
  end
  local y = core.matmul(a, b)
  local last, prev = core.dim(a), core.dim(a) - 1
  return record(y, {a, b}, function(g, needs)
    local ga = needs[1] and core.matmul(g, core.transpose(b, prev, last)) or nil
    local gb = needs[2] and core.matmul(core.transpose(a, prev, last), g) or nil
    return ga, gb
  end)
end

-- views and copies
local function shape_args(...)
  local first = ...
  if type(first) == "table" then return first end
  return {...}
end

-- reshape/view accept one -1 entry, inferred from the element count
local function infer(x, shape, who)
  local known, hole = 1, nil
  local s = {}
  for i, v in ipairs(shape) do
    if v == -1 then
      if hole then error(who .. ": only one dimension can be -1", 3) end
      hole = i
    elseif math.type(v) ~= "integer" then
      error(who .. ": size " .. i .. " is not an integer (" .. tostring(v) .. ")", 3)
    else
      known = known * v
    end
    s[i] = v
  end
  if hole then
    local n = core.numel(x)
    if known == 0 or n % known ~= 0 then
      error(string.format("%s: cannot infer -1 for %d elements into %s", who, n, table.concat(shape, "x")), 3)
    end
    s[hole] = n // known
  end
  return s
end

local function viewop(name, fn)
  return function(x, ...)
    check(x, name)
    local shape = infer(x, shape_args(...), name)
    local from = core.size(x)
    local y = fn(x, shape)
    return record(y, {x}, function(g) return core.reshape(g, from) end)
  end
end
M.reshape = viewop("reshape", core.reshape)
M.view = viewop("view", core.view)

function M.flatten(x, from)
  from = from or 2
  local s = core.size(x)
  if #s < from then return x end
  local shape = {}
  for i = 1, from - 1 do shape[i] = s[i] end
  local n = 1
  for i = from, #s do n = n * s[i] end
  shape[from] = n
  return M.reshape(x, shape)
end

function M.transpose(x, i, j)
  check(x, "transpose")
  local y = core.transpose(x, i, j)
  return record(y, {x}, function(g) return core.transpose(g, i, j) end)
end
function M.t(x)
  if core.dim(x) ~= 2 then error("t: expects a 2-D tensor", 2) end
  return M.transpose(x, 1, 2)
end

function M.narrow(x, d, start, len)
  check(x, "narrow")
  local y = core.narrow(x, d, start, len)
  return record(y, {x}, function(g)
    local gx = core.zeros(core.size(x))
    core.copy(core.narrow(gx, d, start, len), g)
    return gx
  end)
end

function M.select(x, d, i)
  check(x, "select")
  local y = core.select(x, d, i)
  return record(y, {x}, function(g)
    local gx = core.zeros(core.size(x))
    core.copy(core.select(gx, d, i), g)
    return gx
  end)
end

function M.expand(x, ...)
  check(x, "expand")
  local y = core.expand(x, shape_args(...))
  return record(y, {x}, function(g) return core.sum_to(g, core.size(x)) end)
end

function M.contiguous(x)
  if core.is_contiguous(x) then return x end
  return M.clone(x)
end

function M.clone(x)
  check(x, "clone")
  return record(core.clone(x), {x}, function(g) return g end)
end

-- rows of x at 1-based indices (a table or a 1-D tensor)
function M.index_select(x, idx)
  check(x, "index_select")
  local y = core.index_select(x, idx)
  return record(y, {x}, function(g) return core.index_add(x, idx, g) end)
end

function M.detach(x) return core.reshape(x, core.size(x)) end -- a new view without graph

-- in place (never recorded: use on leaves and buffers)
function M.copy(x, src) check(x, "copy"); check(src, "copy", 2); return core.copy(x, src) end
function M.fill(x, v) return core.fill(check(x, "fill"), v) end
function M.zero(x) return core.fill(check(x, "zero"), 0) end
function M.add_(x, y, alpha)
  if type(y) == "number" then return core.binary_("add", x, x, y) end
  return core.axpy_(x, alpha or 1, y)
end
function M.mul_(x, y) return core.binary_("mul", x, x, y) end

-- information
M.size, M.dim, M.numel, M.stride, M.item, M.totable = core.size, core.dim, core.numel, core.stride, core.item, core.totable
M.is_contiguous, M.get, M.set, M.free = core.is_contiguous, core.get, core.set, core.free
function M.all_finite(x) return core.all_finite(x) end
function M.shares_storage(x, y) return core.storage_id(x) == core.storage_id(y) end

-- autograd
function M.requires_grad(x, on)
  if on == nil then on = true end
  return A.set_requires_grad(x, on, "requires_grad")
end
function M.backward(x, grad, retain_graph)
  if type(grad) == "table" and not is_tensor(grad) then grad, retain_graph = grad.gradient, grad.retain_graph end
  A.backward(x, grad, retain_graph)
end
function M.is_leaf(x) local u = getuv(x); return not (u and u.node) end

-- metatable: methods, fields (grad, requires_grad_), element access and operators
local mt = core.metatable
mt.__methods = M
mt.__index = function(x, k)
  local m = M[k]
  if m ~= nil then return m end
  if k == "grad" then -- read: whoever took it may keep it, so it is never recycled
    local u = getuv(x)
    if u and u.grad ~= nil then u.grad_escaped = true end
    return u and u.grad
  end
  if math.type(k) == "integer" then
    if core.dim(x) == 1 then return core.get(x, k) end
    return M.select(x, 1, k)
  end
  return nil
end
mt.__newindex = function(x, k, v)
  if k == "grad" then
    local u = getuv(x)
    if v ~= nil then
      check(v, "grad")
      if not u then u = {}; core.setuv(x, u) end
    end
    if u then u.grad, u.grad_escaped = v, v ~= nil or nil end
  elseif math.type(k) == "integer" then
    if core.dim(x) == 1 then core.set(x, k, v) else core.copy(core.select(x, 1, k), type(v) == "number" and core.full({}, v) or v) end
  else
    error("deepsigns.Tensor: cannot set field '" .. tostring(k) .. "'", 2)
  end
end
mt.__add, mt.__sub, mt.__mul, mt.__div = M.add, M.sub, M.mul, M.div
mt.__unm = function(x) return M.neg(x) end
mt.__pow = function(x, p)
  if not is_tensor(x) then error("pow: the base must be a tensor", 2) end
  return M.pow(x, p)
end
mt.__len = function(x) return core.dim(x) > 0 and core.size(x, 1) or 0 end
mt.__tostring = format.tensor

-- constructors
local function sizes(who, ...)
  local first = ...
  local shape = type(first) == "table" and first or {...}
  for i, v in ipairs(shape) do
    if math.type(v) ~= "integer" then
      error(string.format("%s: size %d must be an integer, got %s", who, i, tostring(v)), 3)
    end
  end
  return shape
end

function T.tensor(data, opts)
  local t
  if is_tensor(data) then t = core.clone(data)
  elseif type(data) == "number" or type(data) == "table" then t = core.from_table(data)
  else error("tensor: expects a number, a (nested) table of numbers or a tensor, got " .. type(data), 2) end
  if opts and opts.requires_grad then M.requires_grad(t, true) end
  return t
end
function T.zeros(...) return core.zeros(sizes("zeros", ...)) end
function T.ones(...) return core.full(sizes("ones", ...), 1) end
function T.empty(...) return core.empty(sizes("empty", ...)) end
function T.full(shape, v)
  if type(shape) ~= "table" then error("full: shape must be a table, got " .. type(shape), 2) end
  if type(v) ~= "number" then error("full: value must be a number, got " .. type(v), 2) end
  return core.full(sizes("full", shape), v)
end
function T.rand(...) return core.rand(sizes("rand", ...), 0, 1) end
function T.randn(...) return core.randn(sizes("randn", ...), 0, 1) end
function T.uniform(shape, lo, hi) return core.rand(sizes("uniform", shape), lo, hi) end
function T.normal(shape, mean, std) return core.randn(sizes("normal", shape), mean, std) end
function T.arange(a, b, step)
  if b == nil then a, b = 1, a end
  step = step or 1
  local vals = {}
  for v = a, b, step do vals[#vals + 1] = v end
  return core.from_table(vals)
end
function T.zeros_like(x) return core.zeros(core.size(x)) end
function T.ones_like(x) return core.full(core.size(x), 1) end

-- concatenation along d (1-based), differentiable
function T.cat(list, d)
  d = d or 1
  if type(list) ~= "table" or #list == 0 then error("cat: expects a non-empty list of tensors", 2) end
  local shape = core.size(check(list[1], "cat"))
  if d < 1 or d > #shape then error("cat: dimension " .. d .. " out of range", 2) end
  local total = 0
  for i, x in ipairs(list) do
    check(x, "cat", i)
    local s = core.size(x)
    if #s ~= #shape then error("cat: tensor " .. i .. " has " .. #s .. " dimensions, expected " .. #shape, 2) end
    for k = 1, #s do
      if k ~= d and s[k] ~= shape[k] then
        error(string.format("cat: tensor %d has shape %s, incompatible with %s outside dimension %d", i,
          table.concat(s, "x"), table.concat(shape, "x"), d), 2)
      end
    end
    total = total + s[d]
  end
  local out_shape = {table.unpack(shape)}
  out_shape[d] = total
  local out = core.empty(out_shape)
  local at, starts = 1, {}
  for i, x in ipairs(list) do
    starts[i] = at
    core.copy(core.narrow(out, d, at, core.size(x, d)), x)
    at = at + core.size(x, d)
  end
  return record(out, list, function(g)
    local gs = {}
    for i, x in ipairs(list) do gs[i] = core.narrow(g, d, starts[i], core.size(x, d)) end
    return table.unpack(gs, 1, #list)
  end)
end

return T
