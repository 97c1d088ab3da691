-- Tensor methods and operators (differentiable where it makes sense), and the
-- constructors. Methods live in one table that the userdata metatable serves.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local format = require "deepsigns.format"
local U = require "deepsigns.util"

local record = A.record
local binary, unary, unary_backward = core.ops.binary, core.ops.unary, core.ops.unary_backward
local M = {} -- methods
local T = {methods = M}

local function is_tensor(x) return type(x) == "userdata" and getmetatable(x) == core.tensor.metatable end
--- Whether x is a deepsigns tensor.
function T.is_tensor(x) return is_tensor(x) end

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
  return core.ops.sum_to(g, core.tensor.size(x))
end

local function binop(name, a, b)
  if not (is_tensor(a) or is_tensor(b)) then error(name .. ": one operand must be a tensor", 3) end
  if not is_tensor(a) and type(a) ~= "number" then error(name .. ": operand a is a " .. type(a), 3) end
  if not is_tensor(b) and type(b) ~= "number" then error(name .. ": operand b is a " .. type(b), 3) end
  return binary(name, a, b)
end

--- a + b, elementwise with broadcasting (either may be a number); differentiable.
-- Also the + operator.
-- @usage local c = a:add(b)   -- or a + b, a + 1
function M.add(a, b)
  return record(binop("add", a, b), {a, b}, function(g, needs)
    return needs[1] and grad_to(g, a) or nil, needs[2] and grad_to(g, b) or nil
  end)
end

--- a - b, elementwise with broadcasting; differentiable. Also the - operator.
function M.sub(a, b)
  return record(binop("sub", a, b), {a, b}, function(g, needs)
    return needs[1] and grad_to(g, a) or nil, needs[2] and grad_to(unary("neg", g), b) or nil
  end)
end

--- a * b, elementwise with broadcasting (not a matrix product: see matmul);
-- differentiable. Also the * operator.
function M.mul(a, b)
  return record(binop("mul", a, b), {a, b}, function(g, needs)
    return needs[1] and grad_to(binary("mul", g, b), a) or nil,
      needs[2] and grad_to(binary("mul", g, a), b) or nil
  end)
end

--- a / b, elementwise with broadcasting; differentiable. Also the / operator.
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
local maximum, minimum = selectop("maximum", "ge"), selectop("minimum", "le")
--- The elementwise larger of a and b (ties: a's gradient); differentiable.
function M.maximum(a, b) return maximum(a, b) end
--- The elementwise smaller of a and b (ties: a's gradient); differentiable.
function M.minimum(a, b) return minimum(a, b) end

--- 1 where a == b, else 0 (elementwise, broadcasting; no gradient).
function M.eq(a, b) return binop("eq", a, b) end
--- 1 where a ~= b, else 0.
function M.ne(a, b) return binop("ne", a, b) end
--- 1 where a < b, else 0.
function M.lt(a, b) return binop("lt", a, b) end
--- 1 where a <= b, else 0.
function M.le(a, b) return binop("le", a, b) end
--- 1 where a > b, else 0.
function M.gt(a, b) return binop("gt", a, b) end
--- 1 where a >= b, else 0.
function M.ge(a, b) return binop("ge", a, b) end

-- unary ops: the backward reads the input (and the output where cheaper)
local function unop(name, keep_out)
  return function(x, p)
    check(x, name)
    local y = unary(name, x, p)
    return record(y, {x}, function(g) return unary_backward(name, x, keep_out and y or nil, g, p) end)
  end
end
local ops = {}
for _, name in ipairs {"neg", "log", "abs", "square", "relu", "pow", "clamp_min", "clamp_max"} do ops[name] = unop(name, false) end
for _, name in ipairs {"exp", "sqrt", "sigmoid", "tanh"} do ops[name] = unop(name, true) end

--- -x; differentiable. Also the unary - operator.
function M.neg(x) return ops.neg(x) end
--- The natural logarithm, elementwise; differentiable.
function M.log(x) return ops.log(x) end
--- |x|, elementwise; differentiable.
function M.abs(x) return ops.abs(x) end
--- x * x, elementwise; differentiable.
function M.square(x) return ops.square(x) end
--- max(x, 0), elementwise (NaN stays NaN, as in PyTorch); differentiable.
function M.relu(x) return ops.relu(x) end
--- e^x, elementwise; differentiable.
function M.exp(x) return ops.exp(x) end
--- The square root, elementwise; differentiable.
function M.sqrt(x) return ops.sqrt(x) end
--- 1 / (1 + e^-x), elementwise; differentiable.
function M.sigmoid(x) return ops.sigmoid(x) end
--- tanh(x), elementwise; differentiable.
function M.tanh(x) return ops.tanh(x) end

--- x^p for a number p, elementwise; differentiable. Also the ^ operator.
-- @tparam number p the exponent
function M.pow(x, p)
  if type(p) ~= "number" then error("pow: exponent must be a number, got " .. type(p), 2) end
  if p == 2 then return M.square(x) end
  return ops.pow(x, p)
end

--- x limited to [lo, hi] (either may be nil: no limit); differentiable.
-- @tparam[opt] number lo
-- @tparam[opt] number hi
function M.clamp(x, lo, hi)
  local y = x
  if lo then y = ops.clamp_min(y, lo) end
  if hi then y = ops.clamp_max(y, hi) end
  return y
end

--- -1, 0 or 1 by the sign of each element (no gradient).
function M.sign(x) return unary("sign", check(x, "sign")) end

-- reductions
local function unsqueeze_shape(shape, d)
  local s = {}
  for i = 1, #shape do s[#s + 1] = shape[i] end
  table.insert(s, d, 1)
  return s
end

local function norm_dim(x, d, who)
  local n = core.tensor.dim(x)
  if math.type(d) ~= "integer" then error(who .. ": dimension must be an integer, got " .. tostring(d), 3) end
  if d < 0 then d = d + n + 1 end
  if d < 1 or d > n then error(string.format("%s: dimension %d out of range for a %d-dimensional tensor", who, d, n), 3) end
  return d
end

-- g (reduced over d, keepdim or not) expanded back to x's shape
local function expand_back(g, x, d, keepdim)
  if d and not keepdim then g = core.tensor.reshape(g, unsqueeze_shape(core.tensor.size(g), d)) end
  return core.tensor.expand(g, core.tensor.size(x))
end

--- The sum of all elements (a scalar), or along dimension d; differentiable.
-- @tparam[opt] integer d the dimension (1-based; negative counts from the last)
-- @tparam[opt=false] boolean keepdim keep d as a dimension of size 1
-- @usage t:sum(); t:sum(2); t:sum(-1, true)
function M.sum(x, d, keepdim)
  check(x, "sum")
  if d ~= nil then d = norm_dim(x, d, "sum") end
  local y = core.ops.sum(x, d, keepdim)
  return record(y, {x}, function(g) return expand_back(g, x, d, keepdim) end)
end

--- The mean of all elements, or along dimension d; differentiable.
-- @tparam[opt] integer d the dimension
-- @tparam[opt=false] boolean keepdim
function M.mean(x, d, keepdim)
  check(x, "mean")
  local n = d and core.tensor.size(x, norm_dim(x, d, "mean")) or core.tensor.numel(x)
  if n == 0 then error("mean: no elements to average", 2) end
  return M.mul(M.sum(x, d, keepdim), 1 / n)
end

--- The largest element (a scalar), or along dimension d the largest values and their
-- 1-based positions (a tensor of floats); NaN counts as the largest. Differentiable in
-- the values (ties share the gradient).
-- @tparam[opt] integer d the dimension
-- @tparam[opt=false] boolean keepdim
-- @usage local v, pos = logits:max(2)
function M.max(x, d, keepdim)
  check(x, "max")
  if d == nil then
    local y = core.ops.max(x)
    return record(y, {x}, function(g) return binary("mul", binary("eq", x, y), g) end)
  end
  d = norm_dim(x, d, "max")
  local v, idx = core.ops.max(x, d, keepdim)
  core.ops.binary_("add", idx, idx, 1)
  record(v, {x}, function(g)
    local vk = keepdim and v or core.tensor.reshape(v, unsqueeze_shape(core.tensor.size(v), d))
    return binary("mul", binary("eq", x, vk), expand_back(g, x, d, keepdim))
  end)
  return v, idx
end

--- The 1-based position of the largest element: a Lua integer over all elements, or
-- along dimension d a tensor of positions (for class ids, which start at 0, use
-- model:predict or subtract 1).
-- @tparam[opt] integer d the dimension
function M.argmax(x, d)
  check(x, "argmax")
  if d == nil then
    local flat = core.tensor.reshape(x, {core.tensor.numel(x)})
    local _, idx = core.ops.max(flat, 1)
    return math.tointeger(core.tensor.item(idx)) + 1
  end
  d = norm_dim(x, d, "argmax")
  local _, idx = core.ops.max(x, d)
  return core.ops.binary_("add", idx, idx, 1)
end

--- The matrix product a b: 2-D by 2-D, batched 3-D by 3-D, and 1-D operands as a row
-- (left) or column (right) vector; differentiable. Errors name both shapes.
-- @usage ds.randn(2, 3):matmul(ds.ones(3, 4))   --> 2x4
function M.matmul(a, b)
  check(a, "matmul", 1); check(b, "matmul", 2)
  local da, db = core.tensor.dim(a), core.tensor.dim(b)
  if da == 1 or db == 1 then
    local a2 = da == 1 and M.reshape(a, 1, core.tensor.size(a, 1)) or a
    local b2 = db == 1 and M.reshape(b, core.tensor.size(b, 1), 1) or b
    local y = M.matmul(a2, b2)
    local s = core.tensor.size(y)
    if da == 1 and db == 1 then return M.reshape(y, {}) end
    if da == 1 then return M.reshape(y, s[#s]) end
    return M.reshape(y, table.unpack(s, 1, #s - 1))
  end
  local y = core.ops.matmul(a, b)
  local last, prev = core.tensor.dim(a), core.tensor.dim(a) - 1
  return record(y, {a, b}, function(g, needs)
    local ga = needs[1] and core.ops.matmul(g, core.tensor.transpose(b, prev, last)) or nil
    local gb = needs[2] and core.ops.matmul(core.tensor.transpose(a, prev, last), g) or nil
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
    local n = core.tensor.numel(x)
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
    local from = core.tensor.size(x)
    local y = fn(x, shape)
    return record(y, {x}, function(g) return core.tensor.reshape(g, from) end)
  end
end
local reshape, view = viewop("reshape", core.tensor.reshape), viewop("view", core.tensor.view)
--- The same elements in a new shape (one size may be -1: inferred): a view that shares
-- storage when the layout allows, else a copy; differentiable.
-- @usage t:reshape(2, -1); t:reshape{4, 3}
function M.reshape(x, ...) return reshape(x, ...) end
--- As reshape, but always a view sharing storage (x must be contiguous); differentiable.
function M.view(x, ...) return view(x, ...) end

--- The dimensions from `from` (default 2) on joined into one: N x C x H x W -> N x CHW.
-- @tparam[opt=2] integer from
function M.flatten(x, from)
  from = from or 2
  local s = core.tensor.size(x)
  if #s < from then return x end
  local shape = {}
  for i = 1, from - 1 do shape[i] = s[i] end
  local n = 1
  for i = from, #s do n = n * s[i] end
  shape[from] = n
  return M.reshape(x, shape)
end

--- A view with dimensions i and j swapped; differentiable.
function M.transpose(x, i, j)
  check(x, "transpose")
  local y = core.tensor.transpose(x, i, j)
  return record(y, {x}, function(g) return core.tensor.transpose(g, i, j) end)
end
--- The transpose of a matrix (a view).
function M.t(x)
  if core.tensor.dim(x) ~= 2 then error("t: expects a 2-D tensor", 2) end
  return M.transpose(x, 1, 2)
end

--- A view of `len` elements of dimension d from position `start` (1-based); differentiable.
-- @usage t:narrow(1, 2, 3)   -- rows 2..4
function M.narrow(x, d, start, len)
  check(x, "narrow")
  local y = core.tensor.narrow(x, d, start, len)
  return record(y, {x}, function(g)
    local gx = core.tensor.zeros(core.tensor.size(x))
    core.tensor.copy(core.tensor.narrow(gx, d, start, len), g)
    return gx
  end)
end

--- The slice at position i (1-based) of dimension d, without that dimension (a view); differentiable.
function M.select(x, d, i)
  check(x, "select")
  local y = core.tensor.select(x, d, i)
  return record(y, {x}, function(g)
    local gx = core.tensor.zeros(core.tensor.size(x))
    core.tensor.copy(core.tensor.select(gx, d, i), g)
    return gx
  end)
end

--- A broadcast view of x to a larger shape (sizes of 1 repeat without copying); differentiable.
function M.expand(x, ...)
  check(x, "expand")
  local y = core.tensor.expand(x, shape_args(...))
  return record(y, {x}, function(g) return core.ops.sum_to(g, core.tensor.size(x)) end)
end

--- x itself when its elements are laid out row-major without gaps, else a contiguous copy.
function M.contiguous(x)
  if core.tensor.is_contiguous(x) then return x end
  return M.clone(x)
end

--- A copy with storage of its own; differentiable.
function M.clone(x)
  check(x, "clone")
  return record(core.tensor.clone(x), {x}, function(g) return g end)
end

--- The rows of x (along dimension 1) at 1-based indices, a table or a 1-D tensor; differentiable.
function M.index_select(x, idx)
  check(x, "index_select")
  local y = core.ops.index_select(x, idx)
  return record(y, {x}, function(g) return core.ops.index_add(x, idx, g) end)
end

--- A view of the same storage without a graph (no gradient flows back through it).
function M.detach(x) return core.tensor.reshape(x, core.tensor.size(x)) end

-- in place (never recorded: use on leaves and buffers)
--- Copies src (broadcast to x's shape) into x, in place; returns x.
function M.copy(x, src) check(x, "copy"); check(src, "copy", 2); return core.tensor.copy(x, src) end
--- Sets every element of x to v, in place; returns x.
function M.fill(x, v) return core.tensor.fill(check(x, "fill"), v) end
--- Sets every element of x to 0, in place; returns x.
function M.zero(x) return core.tensor.fill(check(x, "zero"), 0) end
--- x += alpha * y (y a tensor of x's shape) or x += y (a number), in place; returns x.
-- @tparam[opt=1] number alpha
function M.add_(x, y, alpha)
  if type(y) == "number" then return core.ops.binary_("add", x, x, y) end
  return core.ops.axpy_(x, alpha or 1, y)
end
--- x *= y (broadcast), in place; returns x.
function M.mul_(x, y) return core.ops.binary_("mul", x, x, y) end

-- information
--- The shape as a list ({2, 3}), or the size of dimension d.
-- @tparam[opt] integer d
function M.size(x, d) return core.tensor.size(x, d) end
--- The number of dimensions.
function M.dim(x) return core.tensor.dim(x) end
--- The number of elements.
function M.numel(x) return core.tensor.numel(x) end
--- The strides in elements, as a list.
function M.stride(x) return core.tensor.stride(x) end
--- The value of a one-element tensor, as a Lua number.
function M.item(x) return core.tensor.item(x) end
--- The elements as nested Lua tables.
function M.totable(x) return core.tensor.totable(x) end
--- Whether the elements are laid out row-major without gaps.
function M.is_contiguous(x) return core.tensor.is_contiguous(x) end
--- The element at 1-based indices: t:get(i, j).
function M.get(x, ...) return core.tensor.get(x, ...) end
--- Sets the element at 1-based indices to v: t:set(i, j, v); returns x.
function M.set(x, ...) return core.tensor.set(x, ...) end
--- Releases the tensor's memory now instead of at garbage collection (the tensor is
-- unusable after).
function M.free(x) return core.tensor.free(x) end
--- Whether no element is NaN or infinite.
function M.all_finite(x) return core.ops.all_finite(x) end
--- Whether two tensors are views of the same storage.
function M.shares_storage(x, y) return core.tensor.storage_id(x) == core.tensor.storage_id(y) end

-- autograd
--- Marks a leaf tensor as needing a gradient (on = false unmarks it); returns x. Its
-- gradients accumulate in x.grad, a buffer an optimiser's zero_grad zeroes.
-- @tparam[opt=true] boolean on
-- @usage local w = ds.randn(3, 3):requires_grad()
function M.requires_grad(x, on)
  if on == nil then on = true end
  return A.set_requires_grad(x, on, "requires_grad")
end
--- Runs the backward pass from x (a scalar, or give its gradient), adding the gradients
-- into the .grad of every leaf that requires one; frees the graph unless retain_graph.
-- @param[opt] grad the gradient of x (needed for a non-scalar)
-- @tparam[opt=false] boolean retain_graph keep the graph for another backward
-- @usage loss:backward(); print(w.grad)
function M.backward(x, grad, retain_graph)
  if type(grad) == "table" and not is_tensor(grad) then grad, retain_graph = grad.gradient, grad.retain_graph end
  A.backward(x, grad, retain_graph)
end
--- Whether x is a leaf: not the result of a recorded op.
function M.is_leaf(x) return A.is_leaf(x) end

-- metatable: methods, fields (grad), element access and operators
local mt = core.tensor.metatable
mt.__methods = M
mt.__index = function(x, k)
  local m = M[k]
  if m ~= nil then return m end
  if k == "grad" then return A.grad(x) end
  if math.type(k) == "integer" then
    if core.tensor.dim(x) == 1 then return core.tensor.get(x, k) end
    return M.select(x, 1, k)
  end
  return nil
end
mt.__newindex = function(x, k, v)
  if k == "grad" then
    if v ~= nil then check(v, "grad") end
    A.set_grad(x, v)
  elseif math.type(k) == "integer" then
    if core.tensor.dim(x) == 1 then core.tensor.set(x, k, v) else core.tensor.copy(core.tensor.select(x, 1, k), type(v) == "number" and core.tensor.full({}, v) or v) end
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
mt.__len = function(x) return core.tensor.dim(x) > 0 and core.tensor.size(x, 1) or 0 end
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

--- A tensor from a number, a nested table of numbers (rows of equal length) or another
-- tensor (copied).
-- @param data
-- @tparam[opt] table opts {requires_grad = true}
-- @usage ds.tensor{{1, 2}, {3, 4}}
function T.tensor(data, opts)
  local t
  if is_tensor(data) then t = core.tensor.clone(data)
  elseif type(data) == "number" or type(data) == "table" then t = core.tensor.from_table(data)
  else error("tensor: expects a number, a (nested) table of numbers or a tensor, got " .. type(data), 2) end
  opts = U.check_options("tensor", opts, {"requires_grad"})
  if opts.requires_grad then M.requires_grad(t, true) end
  return t
end
--- A tensor of zeros of the given sizes (ds.zeros(2, 3) or ds.zeros{2, 3}).
function T.zeros(...) return core.tensor.zeros(sizes("zeros", ...)) end
--- A tensor of ones of the given sizes.
function T.ones(...) return core.tensor.full(sizes("ones", ...), 1) end
--- An uninitialised tensor of the given sizes.
function T.empty(...) return core.tensor.empty(sizes("empty", ...)) end
--- A tensor of the shape (a table) filled with v.
-- @usage ds.full({2, 3}, 0.5)
function T.full(shape, v)
  if type(shape) ~= "table" then error("full: shape must be a table, got " .. type(shape), 2) end
  if type(v) ~= "number" then error("full: value must be a number, got " .. type(v), 2) end
  return core.tensor.full(sizes("full", shape), v)
end
--- Uniform draws in [0, 1) of the given sizes, from the seeded generator.
function T.rand(...) return core.rng.rand(sizes("rand", ...), 0, 1) end
--- Standard normal draws of the given sizes, from the seeded generator.
function T.randn(...) return core.rng.randn(sizes("randn", ...), 0, 1) end
--- Uniform draws in [lo, hi) of the shape (a table).
function T.uniform(shape, lo, hi) return core.rng.rand(sizes("uniform", shape), lo, hi) end
--- Normal draws of the shape (a table) with the given mean and standard deviation.
function T.normal(shape, mean, std) return core.rng.randn(sizes("normal", shape), mean, std) end
--- The numbers a, a + step, ... up to b (one argument: 1..a), as a 1-D tensor.
-- @usage ds.arange(5)   --> 1 2 3 4 5
function T.arange(a, b, step)
  if b == nil then a, b = 1, a end
  step = step or 1
  local vals = {}
  for v = a, b, step do vals[#vals + 1] = v end
  return core.tensor.from_table(vals)
end
--- Zeros of x's shape.
function T.zeros_like(x) return core.tensor.zeros(core.tensor.size(x)) end
--- Ones of x's shape.
function T.ones_like(x) return core.tensor.full(core.tensor.size(x), 1) end

--- The tensors of the list joined along dimension d (1-based, default 1); differentiable.
-- @usage ds.cat({a, b}, 1)
function T.cat(list, d)
  d = d or 1
  if type(list) ~= "table" or #list == 0 then error("cat: expects a non-empty list of tensors", 2) end
  local shape = core.tensor.size(check(list[1], "cat"))
  if d < 1 or d > #shape then error("cat: dimension " .. d .. " out of range", 2) end
  local total = 0
  for i, x in ipairs(list) do
    check(x, "cat", i)
    local s = core.tensor.size(x)
    if #s ~= #shape then error("cat: tensor " .. i .. " has " .. #s .. " dimensions, expected " .. #shape, 2) end
    for k = 1, #s do
      if k ~= d and s[k] ~= shape[k] then
        error(string.format("cat: tensor %d has shape %s, incompatible with %s outside dimension %d", i,
          U.shape_str(s), U.shape_str(shape), d), 2)
      end
    end
    total = total + s[d]
  end
  local out_shape = {table.unpack(shape)}
  out_shape[d] = total
  local out = core.tensor.empty(out_shape)
  local at, starts = 1, {}
  for i, x in ipairs(list) do
    starts[i] = at
    core.tensor.copy(core.tensor.narrow(out, d, at, core.tensor.size(x, d)), x)
    at = at + core.tensor.size(x, d)
  end
  return record(out, list, function(g)
    local gs = {}
    for i, x in ipairs(list) do gs[i] = core.tensor.narrow(g, d, starts[i], core.tensor.size(x, d)) end
    return table.unpack(gs, 1, #list)
  end)
end

return T
