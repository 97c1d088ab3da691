local H = require "helper"
local ds = H.ds
local F = ds.functional
local gradcheck, rnd = H.gradcheck, H.away_from_zero

describe("autograd", function()
  before_each(function() ds.manual_seed(7) end)

  it("computes gradients of a simple expression", function()
    local x = ds.tensor({1, 2, 3}, {requires_grad = true})
    local y = (x * x * 3 + x):sum()
    y:backward()
    assert.tensor_near({7, 13, 19}, x.grad)
  end)

  it("accumulates on fan-out and across backward calls", function()
    local x = ds.tensor({2}, {requires_grad = true})
    local y = x * x + x * 3 + x -- x used four times
    y:sum():backward()
    assert.tensor_near({8}, x.grad)
    local z = (x * 2):sum()
    z:backward()
    assert.tensor_near({10}, x.grad)
    local a = ds.tensor({1, 1}, {requires_grad = true})
    local b = ds.tensor({1, 1}, {requires_grad = true})
    ;(a + b):sum():backward()
    a.grad:fill(5)
    assert.tensor_near({1, 1}, b.grad) -- gradients never share storage
  end)

  it("does not record under no_grad and cuts graphs with detach", function()
    local x = ds.randn(3):requires_grad()
    local y = ds.no_grad(function() return x * 2 end)
    assert.is_true(y:is_leaf())
    assert.has_error(function() y:sum():backward() end, "backward: the tensor does not require grad and has no graph")
    local d = (x * 2):detach()
    assert.is_true(d:is_leaf())
    assert.is_true(ds.is_grad_enabled())
    assert.has_error(function() ds.no_grad(function() error("boom") end) end)
    assert.is_true(ds.is_grad_enabled())
  end)

  it("frees the graph after backward unless retain_graph", function()
    local x = ds.randn(3):requires_grad()
    local y = (x:exp()):sum()
    y:backward(nil, true)
    y:backward()
    assert.tensor_near(x:exp() * 2, x.grad)
    assert.has_error(function() y:backward() end,
      "backward: the graph was already freed; pass retain_graph=true to the first backward")
  end)

  it("passes gradients on as views, to leaves and through retained graphs intact", function()
    local x = ds.randn(4, 6):requires_grad()
    local labels = ds.tensor{0, 2, 1, 2}
    F.cross_entropy(x:reshape(4, 6), labels):backward()
    assert.is_true(x.grad:abs():sum():item() > 0)
    local w = ds.randn(6, 6):requires_grad()
    local y = F.linear(x:detach(), w):reshape(2, 12):reshape(4, 6)
    F.cross_entropy(y, labels):backward()
    assert.equal(36, w.grad:numel())
    -- retain_graph: a second backward through a fan-out gives the same gradient again
    local h = ds.randn(4, 6):requires_grad()
    local a = h * 1
    local loss = F.cross_entropy(a, labels) + (a * a):sum()
    loss:backward(nil, true)
    local first = h.grad:clone()
    loss:backward()
    assert.is_true((h.grad - first * 2):abs():max():item() < 1e-5)
  end)

  it("keeps a persistent gradient buffer per leaf, which zero_grad zeroes and backward adds into", function()
    local w = ds.randn(3, 4):requires_grad()
    local x = ds.randn(5, 4)
    local opt = ds.optim.SGD({w}, {lr = 0})
    F.linear(x, w):sum():backward()
    local buf = w.grad
    local once = buf:clone()
    F.linear(x, w):sum():backward() -- the linear layer's GEMM adds into the buffer itself
    assert.is_true(rawequal(buf, w.grad))
    assert.tensor_near(once * 2, w.grad, 1e-5)
    opt:zero_grad()
    assert.is_true(rawequal(buf, w.grad))
    assert.equal(0, w.grad:abs():max():item())
    ;(w * w):sum():backward() -- an elementwise op's gradient is added by autograd
    assert.tensor_near(w * 2, buf, 1e-6)
    -- a weight that is not a leaf gets its gradient returned like any other input
    local v = ds.randn(3, 4):requires_grad()
    F.linear(x, v * 2):sum():backward()
    assert.tensor_near(once * 2, v.grad, 1e-5)
    -- a gradient a caller passes in is never written
    local seed = ds.ones(5, 3)
    local u = ds.randn(3, 4):requires_grad()
    F.linear(x, u):backward(seed)
    F.linear(x, u):backward(seed)
    assert.same(ds.ones(5, 3):totable(), seed:totable())
    -- the buffer keeps its shape: assigning another is refused
    assert.has_error(function() w.grad = ds.zeros(2) end, "grad: a gradient of shape 2 for a tensor of shape 3x4")
  end)

  it("gives the same gradients through dropout, ReLU and fan-out with and without retain_graph", function()
    local function grads(retain)
      ds.manual_seed(7)
      local x = ds.randn(8, 6):requires_grad()
      local w1, w2 = ds.randn(5, 6):requires_grad(), ds.randn(3, 5):requires_grad()
      local h = F.dropout(F.linear(x, w1):relu(), 0.3, true)
      local h2 = h:sigmoid() * h -- fan-out: h's gradient is a sum
      local loss = F.cross_entropy(F.linear(h2, w2), ds.tensor{0, 1, 2, 0, 1, 2, 0, 1})
      loss:backward(nil, retain)
      return {x.grad:totable(), w1.grad:totable(), w2.grad:totable()}
    end
    assert.same(grads(true), grads(false))
  end)

  it("needs a gradient for a non-scalar output", function()
    local x = ds.randn(2, 2):requires_grad()
    local y = x * 2
    assert.has_error(function() y:backward() end,
      "backward: output has 4 elements (2x2); pass a gradient of that shape for a non-scalar")
    assert.has_error(function() y:backward(ds.ones(3)) end, "backward: gradient 3 does not match output 2x2")
    y:backward(ds.ones(2, 2))
    assert.tensor_near(ds.full({2, 2}, 2), x.grad)
  end)

  it("refuses requires_grad changes on non-leaves", function()
    local x = ds.randn(2):requires_grad()
    assert.has_error(function() (x * 2):requires_grad(false) end)
  end)

  it("returns memory to baseline after a training step", function()
    local nn = ds.nn
    local m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    local opt = ds.optim.SGD(m:parameters(), {lr = 0.1, momentum = 0.9})
    local x, y = ds.randn(10, 8), ds.tensor{0, 1, 2, 0, 1, 2, 0, 1, 2, 0}
    local function step()
      opt:zero_grad()
      nn.cross_entropy(m(x), y):backward()
      opt:step()
    end
    step(); opt:zero_grad()
    collectgarbage(); collectgarbage()
    local base = ds.memory()
    for _ = 1, 5 do step() end
    opt:zero_grad()
    collectgarbage(); collectgarbage()
    local after = ds.memory()
    assert.equal(base.tensors, after.tensors)
    assert.equal(base.bytes, after.bytes)
  end)

  describe("gradient checks", function()
    it("elementwise ops with broadcasting", function()
      local a, b, c = ds.randn(3, 4), ds.randn(4), ds.randn(3, 1)
      gradcheck(function(x, y, z) return (x + y) * z - x / (y:abs() + 1) end, {a, b, c})
      gradcheck(function(x, y) return x - y * 2 end, {ds.randn(2, 3), ds.randn(1, 3)})
      gradcheck(function(x, y) return x:maximum(y) + x:minimum(y) * 2 end, {rnd(3, 3), rnd(3, 3) + 0.3})
      gradcheck(function(x) return 1 / (x:abs() + 0.5) end, {ds.randn(5)})
    end)

    it("unary math", function()
      local pos = ds.rand(6) + 0.5
      for _, name in ipairs {"exp", "log", "sqrt", "sigmoid", "tanh", "abs", "neg", "square"} do
        gradcheck(function(x) return x[name](x) end, {name == "abs" and rnd(6) or pos:clone()})
      end
      gradcheck(function(x) return x:relu() end, {rnd(4, 4)})
      gradcheck(function(x) return x:pow(3) + x:pow(0.5) end, {pos:clone()})
      gradcheck(function(x) return x:clamp(-0.5, 0.5) end, {rnd(8) * 0.7})
    end)

    it("reductions", function()
      gradcheck(function(x) return x:sum() end, {ds.randn(3, 4)})
      gradcheck(function(x) return x:sum(2) end, {ds.randn(3, 4)})
      gradcheck(function(x) return x:sum(1, true) end, {ds.randn(3, 4)})
      gradcheck(function(x) return x:mean(2) + x:mean() end, {ds.randn(3, 4)})
      gradcheck(function(x) return (x:max(2)) end, {ds.randn(3, 5)})
      gradcheck(function(x) return x:max() end, {ds.randn(3, 5)})
    end)

    it("matmul, 1-D, 2-D and batched", function()
      gradcheck(function(a, b) return a:matmul(b) end, {ds.randn(3, 4), ds.randn(4, 2)})
      gradcheck(function(a, b) return a:matmul(b:t()) end, {ds.randn(3, 4), ds.randn(2, 4)})
      gradcheck(function(a, b) return a:matmul(b) end, {ds.randn(2, 3, 4), ds.randn(2, 4, 5)})
      gradcheck(function(a, b) return a:matmul(b) end, {ds.randn(4), ds.randn(4, 3)})
      gradcheck(function(a, b) return a:matmul(b) end, {ds.randn(3, 4), ds.randn(4)})
    end)

    it("views, copies, indexing and concatenation", function()
      gradcheck(function(x) return x:reshape(6, 2):transpose(1, 2) * 1 end, {ds.randn(3, 4)})
      gradcheck(function(x) return x:narrow(2, 2, 2) * 3 end, {ds.randn(3, 4)})
      gradcheck(function(x) return x:select(1, 2) * 3 end, {ds.randn(3, 4)})
      local w = ds.randn(3, 4)
      gradcheck(function(x) return x:expand(3, 4) * w end, {ds.randn(1, 4)})
      gradcheck(function(x) return x:index_select({3, 1, 3}) end, {ds.randn(4, 2)})
      gradcheck(function(x, y) return ds.cat({x, y, x}, 2) end, {ds.randn(2, 3), ds.randn(2, 1)})
      gradcheck(function(x) return x:flatten() end, {ds.randn(2, 3, 2)})
      gradcheck(function(x) return F.gather_rows(x, ds.tensor{2, 0, 1}) end, {ds.randn(3, 3)})
      gradcheck(function(a, b) return F.sqdist(a, b) end, {ds.randn(4, 3), ds.randn(2, 3)})
    end)

    it("linear with and without bias", function()
      gradcheck(F.linear, {ds.randn(5, 4), ds.randn(3, 4), ds.randn(3)})
      gradcheck(F.linear, {ds.randn(5, 4), ds.randn(3, 4)})
    end)

    it("conv2d with stride and padding", function()
      gradcheck(function(x, w, b) return F.conv2d(x, w, b) end, {ds.randn(2, 2, 5, 5), ds.randn(3, 2, 3, 3), ds.randn(3)})
      gradcheck(function(x, w, b) return F.conv2d(x, w, b, {stride = 2, padding = 1}) end,
        {ds.randn(2, 3, 6, 5), ds.randn(2, 3, 3, 3), ds.randn(2)})
      gradcheck(function(x, w) return F.conv2d(x, w, nil, {stride = {1, 2}, padding = {2, 0}}) end,
        {ds.randn(1, 2, 4, 6), ds.randn(2, 2, 2, 3)})
      -- stride 1 with an output near the input's size: the input gradient is computed as a
      -- full convolution with the flipped kernel (a different code path)
      gradcheck(function(x, w, b) return F.conv2d(x, w, b, {padding = 1}) end,
        {ds.randn(2, 3, 4, 5), ds.randn(4, 3, 3, 3), ds.randn(4)})
      gradcheck(function(x, w) return F.conv2d(x, w, nil, {padding = {1, 0}}) end,
        {ds.randn(2, 2, 5, 6), ds.randn(3, 2, 3, 2)})
      -- a ReLU fused into the convolution, on both input-gradient paths
      gradcheck(function(x, w, b) return F.conv2d(x, w, b, {padding = 1, activation = "relu"}) end,
        {ds.randn(2, 3, 4, 5), ds.randn(4, 3, 3, 3), ds.randn(4)})
      gradcheck(function(x, w, b) return F.conv2d(x, w, b, {stride = 2, activation = "relu"}) end,
        {ds.randn(2, 2, 7, 7), ds.randn(3, 2, 3, 3), ds.randn(3)})
      assert.has_error(function() F.conv2d(ds.randn(1, 1, 4, 4), ds.randn(1, 1, 3, 3), nil, {activation = "gelu"}) end,
        'conv2d: activation must be "relu" or nil, got gelu')
    end)

    it("conv2d: the direct stride-1 path equals im2col + GEMM, values and all gradients", function()
      local core = ds.core
      -- {n, c, h, w, co, kh, kw, ph, pw, bias, relu}: odd sizes, channel counts off the
      -- 4-row tile, one input channel, 1x1 and non-square kernels, padding 0 to k-1
      local cases = {
        {3, 4, 9, 9, 5, 3, 3, 1, 1, true, true}, {2, 1, 28, 28, 32, 3, 3, 1, 1, true, true},
        {2, 32, 13, 13, 64, 3, 3, 0, 0, true, true}, {1, 3, 7, 11, 6, 2, 3, 1, 2, false, false},
        {5, 2, 6, 5, 3, 1, 1, 0, 0, true, false}, {2, 3, 8, 8, 7, 5, 5, 4, 2, true, true},
        {1, 5, 4, 4, 1, 3, 3, 2, 2, false, true},
      }
      local was = core.testing.conv_direct()
      for _, c in ipairs(cases) do
        local n, ci, h, w, co, kh, kw, ph, pw, with_b, relu = table.unpack(c)
        local x, wt = ds.randn(n, ci, h, w), ds.randn(co, ci, kh, kw)
        local b = with_b and ds.randn(co) or nil
        local y0 = core.nn.conv2d(x, wt, b, 1, 1, ph, pw, relu)
        local g = ds.randn(table.unpack(core.tensor.size(y0)))
        local out = {}
        for k, direct in ipairs {true, false} do
          core.testing.conv_direct(direct)
          local y = core.nn.conv2d(x, wt, b, 1, 1, ph, pw, relu)
          local gx, gw, gb = core.nn.conv2d_backward(x, wt, g, 1, 1, ph, pw, true, true, with_b, relu and y or nil)
          out[k] = {y, gx, gw, gb}
        end
        core.testing.conv_direct(was)
        for i = 1, with_b and 4 or 3 do
          local a, r = out[1][i], out[2][i]
          local scale = math.max(1, r:abs():max():item())
          assert.is_true((a - r):abs():max():item() < 1e-4 * scale,
            string.format("case %s, result %d", table.concat(core.tensor.size(x), "x"), i))
        end
      end
    end)

    it("conv2d gradients on the im2col + GEMM path at stride 1", function()
      local was = ds.core.testing.conv_direct(false)
      gradcheck(function(x, w, b) return F.conv2d(x, w, b, {padding = 1, activation = "relu"}) end,
        {ds.randn(2, 3, 4, 5), ds.randn(4, 3, 3, 3), ds.randn(4)})
      gradcheck(function(x, w) return F.conv2d(x, w, nil, {padding = {1, 0}}) end,
        {ds.randn(2, 2, 5, 6), ds.randn(3, 2, 3, 2)})
      ds.core.testing.conv_direct(was)
    end)

    it("conv2d with a fused ReLU equals conv2d followed by relu, values and gradients", function()
      local x, w, b = ds.randn(3, 4, 9, 9), ds.randn(5, 4, 3, 3), ds.randn(5)
      local g = ds.randn(3, 5, 9, 9)
      local grads = {}
      for k, fused in ipairs {true, false} do
        local xs, ws, bs = x:clone():requires_grad(), w:clone():requires_grad(), b:clone():requires_grad()
        local y = fused and F.conv2d(xs, ws, bs, {padding = 1, activation = "relu"}) or F.conv2d(xs, ws, bs, {padding = 1}):relu()
        ;(y * g):sum():backward()
        grads[k] = {y:detach(), xs.grad, ws.grad, bs.grad}
      end
      for i = 1, 4 do
        assert.is_true(((grads[1][i] - grads[2][i]):abs():max():item()) < 1e-4)
      end
    end)

    it("pooling", function()
      -- distinct values keep max pooling away from ties
      local x = ds.randperm(2 * 2 * 6 * 6)
      local t = (ds.tensor(x) * 0.05):reshape(2, 2, 6, 6)
      gradcheck(function(v) return F.max_pool2d(v, 2) end, {t:clone()}, {h = 1e-3})
      gradcheck(function(v) return F.max_pool2d(v, 3, {stride = 2, padding = 1}) end, {t:clone()})
      gradcheck(function(v) return F.avg_pool2d(v, 2) end, {ds.randn(2, 2, 4, 4)})
      gradcheck(function(v) return F.avg_pool2d(v, 3, {stride = 2, padding = 1}) end, {ds.randn(1, 2, 5, 5)})
      gradcheck(function(v) return F.global_avg_pool(v) end, {ds.randn(2, 3, 3, 3)})
      -- windows that tile the plane with a leftover row and column (13 -> 6 in the paper CNN)
      local odd = (ds.tensor(ds.randperm(2 * 5 * 7)) * 0.05):reshape(1, 2, 5, 7)
      gradcheck(function(v) return F.max_pool2d(v, 2) end, {odd:clone()}, {h = 1e-3})
      gradcheck(function(v) return F.max_pool2d(v, {2, 3}) end, {odd:clone()}, {h = 1e-3})
      gradcheck(function(v) return F.avg_pool2d(v, {3, 2}) end, {ds.randn(1, 2, 5, 7)})
    end)

    it("softmax, log-softmax and the losses", function()
      gradcheck(F.softmax, {ds.randn(3, 5)})
      gradcheck(F.log_softmax, {ds.randn(3, 5)})
      local labels = ds.tensor{1, 0, 4}
      gradcheck(function(x) return F.cross_entropy(x, labels) end, {ds.randn(3, 5)})
      gradcheck(function(x) return F.cross_entropy(x, labels, {label_smoothing = 0.1}) end, {ds.randn(3, 5)})
      local soft = F.softmax(ds.randn(3, 5))
      gradcheck(function(x) return F.cross_entropy(x, soft) end, {ds.randn(3, 5)})
      gradcheck(function(x) return F.soft_cross_entropy(x, soft, 3) end, {ds.randn(3, 5)})
      gradcheck(function(a, b) return F.mse(a, b) end, {ds.randn(4, 2), ds.randn(4, 2)})
      local target = ds.tensor{0, 1, 1, 0}
      gradcheck(function(p) return F.bce(p, target) end, {ds.rand(4) * 0.8 + 0.1})
    end)

    it("dropout with a fixed mask", function()
      local x = ds.randn(4, 5)
      local function f(v) ds.manual_seed(11); return F.dropout(v, 0.3, true) end
      gradcheck(f, {x})
      assert.equal(x, F.dropout(x, 0.3, false))
    end)

    it("dropout masks: the drop rate, the 1/(1-p) scale, one stream whatever the blocks and threads", function()
      -- 1001 elements: odd, and split unevenly between threads
      local x = ds.ones(7, 143)
      ds.manual_seed(5)
      local y = F.dropout(x, 0.25, true):totable()
      local dropped, n = 0, 0
      for _, row in ipairs(y) do
        for _, v in ipairs(row) do
          n = n + 1
          if v == 0 then dropped = dropped + 1 else assert.near(1 / 0.75, v, 1e-6) end
        end
      end
      assert.equal(1001, n)
      assert.is_true(math.abs(dropped / n - 0.25) < 0.05, "drop rate " .. dropped / n)
      -- the same seed gives the same mask; one mask of 2002 begins with the 1001 above
      ds.manual_seed(5)
      assert.same(y, F.dropout(x, 0.25, true):totable())
      ds.manual_seed(5)
      local long = F.dropout(ds.ones(2002), 0.25, true):totable()
      for i = 1, 1001 do assert.equal(y[(i - 1) // 143 + 1][(i - 1) % 143 + 1], long[i]) end
      -- a mask large enough to be made on all threads is the same made on one
      local nt = ds.get_num_threads()
      ds.manual_seed(9)
      local _, big = ds.core.nn.dropout(ds.ones(300, 301), 0.5)
      ds.set_num_threads(1)
      ds.manual_seed(9)
      local _, big1 = ds.core.nn.dropout(ds.ones(300, 301), 0.5)
      ds.set_num_threads(nt)
      assert.is_true(ds.core.tensor.item(ds.core.ops.sum(ds.core.ops.binary("ne", big, big1))) == 0)
      local kept = ds.core.tensor.item(ds.core.ops.sum(ds.core.ops.binary("gt", big, 0))) / (300 * 301)
      assert.is_true(math.abs(kept - 0.5) < 0.01, "kept " .. kept)
      -- the fused op draws the same mask as dropout_mask and applies it, also to a
      -- non-contiguous input
      local xt = ds.randn(9, 7):t()
      ds.manual_seed(3)
      local m1 = ds.core.nn.dropout_mask(xt, 0.3)
      ds.manual_seed(3)
      local y2, m2 = ds.core.nn.dropout(xt, 0.3)
      assert.same(m1:totable(), m2:totable())
      assert.is_true((y2 - xt * m2):abs():max():item() == 0)
      assert.has_error(function() ds.core.nn.dropout(xt, 1.5) end, "dropout: probability must be in [0, 1), got 1.5")
    end)

    it("batch norm in train and eval mode, 1-D and 2-D", function()
      local function bn(c, training)
        local state = {running_mean = ds.zeros(c), running_var = ds.ones(c) * 1.5, momentum = 0.1, eps = 1e-5}
        return function(x, w, b) return F.batch_norm(x, w, b, state, training) end
      end
      gradcheck(bn(3, true), {ds.randn(6, 3), ds.randn(3), ds.randn(3)}, {atol = 2e-3})
      gradcheck(bn(2, true), {ds.randn(3, 2, 3, 3), ds.randn(2), ds.randn(2)}, {atol = 2e-3})
      gradcheck(bn(2, false), {ds.randn(3, 2, 2, 2), ds.randn(2), ds.randn(2)})
    end)
  end)
end)
