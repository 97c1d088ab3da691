local H = require "helper"
local ds = H.ds

describe("deepsigns tensors", function()
  it("loads without setting globals", function()
    local before = {}
    for k in pairs(_G) do before[k] = true end
    package.loaded["deepsigns"] = nil
    require "deepsigns"
    for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
    assert.is_string(ds.version)
  end)

  it("builds tensors from numbers and nested tables", function()
    local t = ds.tensor{{1, 2, 3}, {4, 5, 6}}
    assert.same({2, 3}, t:size())
    assert.equal(3, t:size(2))
    assert.equal(2, t:dim())
    assert.equal(6, t:numel())
    assert.same({{1, 2, 3}, {4, 5, 6}}, t:totable())
    assert.equal(6, t:get(2, 3))
    assert.equal(7, ds.tensor(7):item())
    assert.same({0, 0}, ds.zeros(2):totable())
    assert.same({{1, 1}}, ds.ones(1, 2):totable())
    assert.same({{2.5, 2.5}}, ds.full({1, 2}, 2.5):totable())
    assert.same({1, 2, 3}, ds.arange(3):totable())
    assert.has_error(function() ds.tensor({1}, {requires_gard = true}) end,
      "tensor: unknown option 'requires_gard' (did you mean 'requires_grad'?) (options: requires_grad)")
  end)

  it("supports element access with 1-based indices", function()
    local t = ds.zeros(2, 3)
    t:set(2, 1, 5)
    assert.equal(5, t:get(2, 1))
    assert.equal(5, t[2][1])
    t[1] = ds.tensor{7, 8, 9}
    assert.same({7, 8, 9}, t[1]:totable())
    local v = ds.tensor{1, 2, 3}
    v[2] = 10
    assert.equal(10, v[2])
    assert.equal(3, #v)
  end)

  it("shares storage between views and their base", function()
    local base = ds.zeros(3, 4)
    local row = base:select(1, 2)
    row:fill(1)
    assert.same({0, 0, 0, 0}, base[1]:totable())
    assert.same({1, 1, 1, 1}, base[2]:totable())
    local col = base:narrow(2, 2, 2)
    col:fill(7)
    assert.equal(7, base:get(3, 3))
    local tr = base:transpose(1, 2)
    assert.same({4, 3}, tr:size())
    assert.equal(base:get(2, 1), tr:get(1, 2))
    tr:set(4, 1, 42)
    assert.equal(42, base:get(1, 4))
    local v = base:view(12)
    v:set(1, -1)
    assert.equal(-1, base:get(1, 1))
    assert.is_true(v:shares_storage(base))
  end)

  it("keeps a view alive after its base is collected", function()
    local v
    do
      local base = ds.arange(6):reshape(2, 3)
      v = base:select(1, 2)
    end
    collectgarbage(); collectgarbage()
    assert.same({4, 5, 6}, v:totable())
  end)

  it("reshapes non-contiguous tensors by copying and refuses to view them", function()
    local t = ds.arange(6):reshape(2, 3):transpose(1, 2)
    assert.is_false(t:is_contiguous())
    assert.same({1, 4, 2, 5, 3, 6}, t:reshape(6):totable())
    assert.has_error(function() t:view(6) end, "view: tensor (3x2) is not contiguous; use reshape or clone")
    assert.same({3, 2}, ds.arange(6):reshape(-1, 2):size())
    local c = t:clone()
    assert.is_true(c:is_contiguous())
    assert.is_false(c:shares_storage(t))
  end)

  it("broadcasts elementwise arithmetic", function()
    local a = ds.tensor{{1, 2, 3}, {4, 5, 6}}
    local row = ds.tensor{10, 20, 30}
    local col = ds.tensor{{1}, {2}}
    assert.same({{11, 22, 33}, {14, 25, 36}}, (a + row):totable())
    assert.same({{0, 1, 2}, {2, 3, 4}}, (a - col):totable())
    assert.same({{2, 4, 6}, {8, 10, 12}}, (a * 2):totable())
    assert.tensor_near({{1, 0.5, 1 / 3}, {0.25, 0.2, 1 / 6}}, 1 / a, 1e-6)
    assert.tensor_near({{0.5, 1, 1.5}, {2, 2.5, 3}}, a / 2)
    assert.same({{-1, -2, -3}, {-4, -5, -6}}, (-a):totable())
    assert.same({2, 3}, (col * row):size())
    assert.same({{1, 4, 9}, {16, 25, 36}}, (a ^ 2):totable())
    assert.same({{0, 1, 1}, {1, 1, 1}}, a:gt(1):totable())
  end)

  it("computes unary math", function()
    local x = ds.tensor{0.5, 1, 2}
    assert.tensor_near({math.exp(0.5), math.exp(1), math.exp(2)}, x:exp(), 1e-5)
    assert.tensor_near({math.log(0.5), 0, math.log(2)}, x:log())
    assert.tensor_near({math.sqrt(0.5), 1, math.sqrt(2)}, x:sqrt())
    assert.tensor_near({0.125, 1, 8}, x:pow(3))
    assert.tensor_near({1, 0, 2}, ds.tensor{-1, 0, 2}:abs())
    assert.tensor_near({0, 0, 2}, ds.tensor{-1, 0, 2}:relu())
    assert.tensor_near({1 / (1 + math.exp(1)), 0.5, 1 / (1 + math.exp(-2))}, ds.tensor{-1, 0, 2}:sigmoid())
    local th = function(v) return (math.exp(v) - math.exp(-v)) / (math.exp(v) + math.exp(-v)) end
    assert.tensor_near({th(-1), 0, th(2)}, ds.tensor{-1, 0, 2}:tanh())
    assert.tensor_near({0, 0, 1}, ds.tensor{-1, 0, 2}:clamp(0, 1))
  end)

  it("reduces over everything or one dimension", function()
    local a = ds.tensor{{1, 5, 3}, {4, 2, 6}}
    assert.equal(21, a:sum():item())
    assert.same({5, 7, 9}, a:sum(1):totable())
    assert.same({{9}, {12}}, a:sum(2, true):totable())
    assert.equal(3.5, a:mean():item())
    assert.same({3, 4}, a:mean(2):totable())
    assert.equal(6, a:max():item())
    local v, i = a:max(2)
    assert.same({5, 6}, v:totable())
    assert.same({2, 3}, i:totable())
    assert.same({2, 1, 2}, a:argmax(1):totable())
    assert.equal(6, a:argmax())
    assert.same({1, 5, 3}, a:sum(-1, true):size() and a[1]:totable())
  end)

  it("matches the naive GEMM loop, with transposed and non-contiguous operands", function()
    ds.manual_seed(3)
    local function naive(a, b)
      local was = ds.core.testing.gemm_naive(true)
      local ok, r = pcall(function() return a:matmul(b) end)
      ds.core.testing.gemm_naive(was)
      assert(ok, r)
      return r
    end
    local a, b = ds.randn(7, 5), ds.randn(5, 9)
    assert.tensor_near(naive(a, b), a:matmul(b), 1e-4)
    local at = ds.randn(5, 7):transpose(1, 2)
    local bt = ds.randn(9, 5):transpose(1, 2)
    assert.tensor_near(naive(at, bt), at:matmul(bt), 1e-4)
    local big = ds.randn(10, 12)
    local an = big:narrow(2, 3, 5):narrow(1, 2, 7)    -- strided rows
    local bn = ds.randn(5, 18):narrow(2, 4, 9)
    assert.tensor_near(naive(an, bn), an:matmul(bn), 1e-4)
    local ev = ds.randn(4, 6):transpose(1, 2):narrow(1, 1, 5) -- neither layout: copied
    assert.tensor_near(naive(ev, ds.ones(4, 3)), ev:matmul(ds.ones(4, 3)), 1e-4)
    local ba, bb = ds.randn(3, 4, 5), ds.randn(3, 5, 2)
    assert.tensor_near(naive(ba, bb), ba:matmul(bb), 1e-4)
    -- against hand-computed values
    assert.same({{19, 22}, {43, 50}}, ds.tensor{{1, 2}, {3, 4}}:matmul(ds.tensor{{5, 6}, {7, 8}}):totable())
    assert.same({17, 39}, ds.tensor{{1, 2}, {3, 4}}:matmul(ds.tensor{5, 6}):totable())
  end)

  it("matches the naive GEMM on products with a tiny side (the skinny loops, split across threads)", function()
    ds.manual_seed(4)
    local core = ds.core
    local function both(f)
      local was = core.testing.gemm_naive(true)
      local ok, want = pcall(f)
      core.testing.gemm_naive(was)
      assert(ok, want)
      return want, f()
    end
    local function near(f)
      local want, got = both(f)
      if type(want) == "table" then
        for i = 1, 3 do if want[i] then assert.tensor_near(want[i], got[i], 1e-3) end end
      else
        assert.tensor_near(want, got, 1e-3)
      end
    end
    -- the output layer's shapes, and widths that are not whole 64-column panels
    for _, s in ipairs {{128, 512, 10}, {200, 130, 10}, {3, 70, 16}, {300, 7, 64}, {16, 1000, 40}, {1, 32, 512}, {5, 40, 300}} do
      local m, n, k = s[1], s[2], s[3]
      local a, b = ds.randn(m, k), ds.randn(k, n)
      local at, bt = ds.randn(k, m):transpose(1, 2), ds.randn(n, k):transpose(1, 2)
      near(function() return a:matmul(b) end)
      near(function() return at:matmul(b) end)
      near(function() return a:matmul(bt) end)
    end
    -- linear with a bias (the GEMM adds onto it) and its three gradients
    local x, w, bias, gy = ds.randn(128, 512), ds.randn(10, 512), ds.randn(10), ds.randn(128, 10)
    near(function() return core.ops.linear(x, w, bias) end)
    near(function()
      local gw, gb = ds.zeros(10, 512), ds.zeros(10)
      local gx = core.ops.linear_backward(x, w, gy, nil, true, gw, gb)
      return {gx, gw, gb}
    end)
  end)

  it("repeats random draws for the same seed", function()
    ds.manual_seed(42)
    local a, pa = ds.randn(3, 3), ds.randperm(10)
    ds.manual_seed(42)
    local b, pb = ds.randn(3, 3), ds.randperm(10)
    assert.same(a:totable(), b:totable())
    assert.same(pa, pb)
    ds.manual_seed(43)
    assert.are_not.same(a:totable(), ds.randn(3, 3):totable())
    local u = ds.rand(1000)
    assert.is_true(u:max():item() < 1 and (-u):max():item() <= 0)
    local p = ds.randperm(50)
    table.sort(p)
    for i = 1, 50 do assert.equal(i, p[i]) end
  end)

  it("draws normals with the right moments", function()
    ds.manual_seed(1)
    local x = ds.randn(20000)
    assert.is_true(math.abs(x:mean():item()) < 0.03)
    assert.is_true(math.abs((x * x):mean():item() - 1) < 0.05)
  end)

  it("prints readably with a footer and summarises large tensors", function()
    local s = tostring(ds.tensor{{1, 2}, {3, 4}})
    assert.equal(" 1  2\n 3  4\n[deepsigns.Tensor float32 2x2]", s)
    local f = tostring(ds.tensor{0.5, -1.25})
    assert.equal(" 0.5000 -1.2500\n[deepsigns.Tensor float32 2]", f)
    assert.matches("e%-05", tostring(ds.tensor{1e-5, 1}))
    local big = tostring(ds.zeros(100, 100))
    assert.matches("%.%.%.", big)
    assert.is_true(#big < 400)
    assert.matches("%[deepsigns.Tensor float32 100x100%]$", big)
    local three = tostring(ds.zeros(2, 2, 2))
    assert.matches("%(1,%.,%.%) =", three)
    assert.matches("%(2,%.,%.%) =", three)
    assert.equal("3\n[deepsigns.Tensor float32 scalar]", tostring(ds.tensor(3)))
  end)

  it("returns the memory counters to baseline after collection", function()
    collectgarbage(); collectgarbage()
    local base = ds.memory()
    do
      local ts = {}
      for i = 1, 50 do ts[i] = ds.randn(100, 10) end
      local v = ts[1]:view(1000)
      local m = ds.memory()
      assert.is_true(m.tensors >= base.tensors + 51)
      assert.is_true(m.bytes >= base.bytes + 50 * 4000)
      v = nil
    end
    collectgarbage(); collectgarbage()
    local after = ds.memory()
    assert.equal(base.tensors, after.tensors)
    assert.equal(base.bytes, after.bytes)
  end)

  it("frees eagerly with :free() and with to-be-closed variables", function()
    collectgarbage(); collectgarbage()
    local base = ds.memory().bytes
    local t = ds.zeros(1000)
    t:free()
    t:free() -- idempotent
    assert.equal(base, ds.memory().bytes)
    assert.has_error(function() t:sum() end)
    do
      local c <close> = ds.zeros(1000)
      assert.equal(base + 4000, ds.memory().bytes)
    end
    assert.equal(base, ds.memory().bytes)
  end)

  describe("bad input", function()
    it("names the function, the argument and the shapes", function()
      local a, b = ds.zeros(2, 3), ds.zeros(4, 5)
      assert.has_error(function() return a:matmul(b) end, "matmul: size mismatch, a: 2x3, b: 4x5")
      assert.has_error(function() return a + ds.zeros(3, 2) end, "add: shapes do not broadcast, a: 2x3, b: 3x2")
      assert.has_error(function() return a:narrow(2, 3, 2) end, "narrow: range [3, 4] out of bounds for dimension 2 of size 3")
      assert.has_error(function() return a:select(1, 3) end, "select: index 3 out of range for dimension 1 of size 2")
      assert.has_error(function() return a:get(3, 1) end, "get: index 3 out of range for dimension 1 of size 2")
      assert.has_error(function() return a:view(5) end, "view: shape has 5 elements but the tensor (2x3) has 6")
      assert.has_error(function() return a:transpose(1, 3) end, "transpose: dimension 3 out of range for a 2-dimensional tensor")
      assert.has_error(function() return a:sum(3) end, "sum: dimension 3 out of range for a 2-dimensional tensor")
      assert.has_error(function() return a:item() end, "item: tensor has 6 elements (2x3), expected exactly one")
      assert.has_error(function() return ds.zeros(-1, 2) end, "shape: size of dimension 1 is negative (-1)")
      assert.has_error(function() return ds.zeros(1.5) end, "zeros: size 1 must be an integer, got 1.5")
      assert.has_error(function() return ds.tensor{{1, 2}, {3}} end,
        "tensor: entry [2] has 1 elements, expected 2 (rows must all have the same length)")
      assert.has_error(function() return ds.tensor{{1, "x"}} end, "tensor: entry [1][2] is a string, expected a number")
      assert.has_error(function() return ds.tensor("abc") end)
      assert.has_error(function() return a + "x" end, "add: operand b is a string")
      assert.has_error(function() return a:matmul(3) end, "matmul: argument #2 must be a deepsigns.Tensor, got number")
      assert.has_error(function() return ds.core.ops.sum(3) end)
      assert.has_error(function() return ds.manual_seed("x") end, "manual_seed: seed must be an integer, got x")
      assert.has_error(function() return a:reshape(4, -1) end, "reshape: cannot infer -1 for 6 elements into 4x-1")
    end)

    it("reports a wrong type through the metatable name", function()
      local ok, err = pcall(ds.core.tensor.size, 42)
      assert.is_false(ok)
      assert.matches("deepsigns.Tensor expected, got number", err)
    end)
  end)

  it("follows set_num_threads", function()
    local n = ds.get_num_threads()
    ds.set_num_threads(1)
    assert.equal(1, ds.get_num_threads())
    ds.set_num_threads(n)
    assert.has_error(function() ds.set_num_threads(0) end)
  end)
end)
