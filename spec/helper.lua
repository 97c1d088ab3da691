-- Shared spec helpers: assert.tensor_near, gradient checks, paths.
local ds = require "deepsigns"
local say = require "say"
local assert = require "luassert"

local H = {ds = ds}

local function flat(t) return ds.core.tensor.flat(t) end
H.flat = flat

local function shape_str(t) local s = t:size(); return #s == 0 and "scalar" or table.concat(s, "x") end

-- assert.tensor_near(expected, actual, tol): same shape, |e - a| <= tol (default 1e-5) elementwise.
local function tensor_near(state, args)
  local e, a, tol = args[1], args[2], args[3] or 1e-5
  if type(e) == "table" and not ds.is_tensor(e) then e = ds.tensor(e) end
  if type(e) == "number" then e = ds.tensor(e) end
  if not (ds.is_tensor(e) and ds.is_tensor(a)) then
    state.failure_message = "tensor_near: both arguments must be tensors"
    return false
  end
  if shape_str(e) ~= shape_str(a) then
    state.failure_message = "shapes differ: expected " .. shape_str(e) .. ", got " .. shape_str(a)
    return false
  end
  local fe, fa = flat(e), flat(a)
  for i = 1, #fe do
    if not (math.abs(fe[i] - fa[i]) <= tol) then
      state.failure_message = string.format("element %d differs: expected %.7g, got %.7g (tolerance %g)", i, fe[i], fa[i], tol)
      return false
    end
  end
  return true
end
say:set("assertion.tensor_near.positive", "tensors differ")
assert:register("assertion", "tensor_near", tensor_near, "assertion.tensor_near.positive", "assertion.tensor_near.positive")

-- Gradient check (design.md): reduce with FIXED RANDOM weights, central differences
-- h = 1e-3 in float32, |a - n| <= 1e-3 + 1e-2 |n|, for every input in `inputs`.
-- f(inputs...) returns a tensor. Returns true or raises with the first mismatch.
function H.gradcheck(f, inputs, opts)
  opts = opts or {}
  local h, atol, rtol = opts.h or 1e-3, opts.atol or 1e-3, opts.rtol or 1e-2
  for _, x in ipairs(inputs) do x.grad = nil; x:requires_grad(true) end
  local out = f(table.unpack(inputs))
  local w = ds.core.rng.randn(out:size(), 0, 1)
  local wf = flat(w)
  local function objective()
    return ds.no_grad(function()
      local o, acc = flat(f(table.unpack(inputs))), 0
      for i, wi in ipairs(wf) do acc = acc + o[i] * wi end -- in double
      return acc
    end)
  end
  ;(out * w):sum():backward()
  for k, x in ipairs(inputs) do
    local g = x.grad
    if g == nil then error("gradcheck: input " .. k .. " got no gradient") end
    local gf = flat(g)
    local n = x:numel()
    local xs = x:contiguous()
    assert(xs == x, "gradcheck inputs must be contiguous")
    local stride = opts.max_checks and math.max(1, n // opts.max_checks) or 1
    for i = 1, n, stride do
      local idx = {}
      local rem, sizes = i - 1, x:size()
      for d = #sizes, 1, -1 do idx[d] = rem % sizes[d] + 1; rem = rem // sizes[d] end
      local v = x:get(table.unpack(idx))
      idx[#idx + 1] = v + h; x:set(table.unpack(idx)); local fp = objective()
      idx[#idx] = v - h; x:set(table.unpack(idx)); local fm = objective()
      idx[#idx] = v; x:set(table.unpack(idx))
      local num = (fp - fm) / (2 * h)
      if math.abs(gf[i] - num) > atol + rtol * math.abs(num) then
        error(string.format("gradcheck: input %d element %d: analytic %.6g, numeric %.6g", k, i, gf[i], num), 2)
      end
    end
  end
  return true
end

-- values kept away from 0 (ReLU kinks) and ties
function H.away_from_zero(...)
  local t = ds.randn(...)
  local f = flat(t)
  for i, v in ipairs(f) do
    if math.abs(v) < 0.1 then f[i] = v < 0 and v - 0.1 or v + 0.1 end
  end
  return ds.tensor(f):reshape(t:size())
end

H.root = os.getenv("DEEPSIGNS_ROOT") or (debug.getinfo(1, "S").source:match("^@(.*)/spec/helper%.lua$") or ".")

function H.tmpdir()
  local p = os.tmpname()
  os.remove(p)
  assert(os.execute("mkdir -p '" .. p .. "'"))
  return p
end

-- A synthetic classification set: `classes` Gaussian clusters in `dims` dimensions.
function H.synthetic(n, dims, classes, seed, spread)
  local saved = ds.core.rng.state()
  ds.manual_seed(seed or 1)
  local centres = ds.randn(classes, dims) * 2
  local xs, ys = {}, {}
  local cf = centres:totable()
  for i = 1, n do
    local c = (i - 1) % classes
    local row = {}
    for d = 1, dims do row[d] = cf[c + 1][d] + ds.core.rng.normal() * (spread or 1) end
    xs[i], ys[i] = row, c
  end
  ds.core.rng.set_state(saved)
  return ds.data.Dataset{x = ds.tensor(xs), y = ds.tensor(ys), classes = classes, name = "synthetic"}
end

return H
