local H = require "helper"
local ds = H.ds
local optim = ds.optim

-- one parameter p with gradient g; returns p after `steps` steps
local function stepped(make, p0, g, steps)
  local p = ds.tensor(p0):requires_grad()
  local opt = make({p})
  for _ = 1, steps or 1 do
    p.grad = ds.tensor(g)
    opt:step()
  end
  return p, opt
end

describe("optimisers", function()
  it("SGD: w - lr (g + wd w)", function()
    local p = stepped(function(ps) return optim.SGD(ps, {lr = 0.1, weight_decay = 0.01}) end, {1, -2}, {0.5, 0.25})
    assert.tensor_near({1 - 0.1 * (0.5 + 0.01), -2 - 0.1 * (0.25 - 0.02)}, p, 1e-6)
  end)

  it("SGD with momentum and Nesterov, two steps", function()
    local lr, mu, g = 0.1, 0.9, 0.5
    local p = stepped(function(ps) return optim.SGD(ps, {lr = lr, momentum = mu}) end, {1}, {g}, 2)
    -- b1 = g, w1 = 1 - lr g; b2 = mu g + g, w2 = w1 - lr b2
    assert.tensor_near({1 - lr * g - lr * (mu * g + g)}, p, 1e-6)
    local q = stepped(function(ps) return optim.SGD(ps, {lr = lr, momentum = mu, nesterov = true}) end, {1}, {g}, 2)
    -- nesterov: update with g + mu b
    local w1 = 1 - lr * (g + mu * g)
    local b2 = mu * g + g
    assert.tensor_near({w1 - lr * (g + mu * b2)}, q, 1e-6)
  end)

  it("Adam: bias-corrected moments", function()
    local lr, b1, b2, eps, g = 0.01, 0.9, 0.999, 1e-8, 0.3
    local p = stepped(function(ps) return optim.Adam(ps, {lr = lr}) end, {1}, {g}, 2)
    local w, m, v = 1, 0, 0
    for t = 1, 2 do
      m = b1 * m + (1 - b1) * g
      v = b2 * v + (1 - b2) * g * g
      w = w - lr * (m / (1 - b1 ^ t)) / (math.sqrt(v / (1 - b2 ^ t)) + eps)
    end
    assert.tensor_near({w}, p, 1e-6)
  end)

  it("AdamW decouples weight decay", function()
    local p = stepped(function(ps) return optim.AdamW(ps, {lr = 0.1, weight_decay = 0.5}) end, {2}, {0}, 1)
    assert.tensor_near({2 - 0.1 * 0.5 * 2}, p, 1e-6) -- zero gradient: only the decay moves it
  end)

  it("RMSprop with Keras-style learning-rate decay", function()
    local lr, rho, eps, decay, g = 0.01, 0.9, 1e-7, 0.1, 0.4
    local p = stepped(function(ps) return optim.RMSprop(ps, {lr = lr, decay = decay}) end, {1}, {g}, 2)
    local w, s = 1, 0
    for it = 1, 2 do
      s = rho * s + (1 - rho) * g * g
      w = w - lr / (1 + decay * (it - 1)) * g / (math.sqrt(s) + eps)
    end
    assert.tensor_near({w}, p, 1e-6)
  end)

  it("skips parameters without gradients and zero_grad drops them", function()
    local a, b = ds.tensor({1}):requires_grad(), ds.tensor({1}):requires_grad()
    local opt = optim.SGD({a, b}, {lr = 1})
    a.grad = ds.tensor{1}
    opt:step()
    assert.equal(0, a:item())
    assert.equal(1, b:item())
    opt:zero_grad()
    assert.is_nil(a.grad)
  end)

  it("zero_grad recycles a weight gradient nobody read, never one someone holds", function()
    local A = require "deepsigns.autograd"
    local F = ds.functional
    local x, w = ds.randn(5, 4), ds.randn(3, 4):requires_grad()
    local opt = optim.SGD({w}, {lr = 0})
    local want = ds.ones(5, 3):t():matmul(x) -- d sum(x W^T) / dW
    F.linear(x, w):sum():backward()
    local g1 = A.grad_of(w) -- internal access: not escaped
    opt:zero_grad()
    assert.is_nil(w.grad)
    F.linear(x, w):sum():backward()
    assert.equal(g1, A.grad_of(w)) -- the same buffer, written again
    assert.tensor_near(want, w.grad)
    -- read through w.grad: the holder keeps its values, the next backward writes elsewhere
    local held = w.grad
    opt:zero_grad()
    F.linear(x * 2, w):sum():backward()
    assert.tensor_near(want, held)
    assert.tensor_near(want * 2, w.grad)
    assert.not_equal(held, w.grad)
    -- assigned by the user: never reused
    local mine = ds.zeros(3, 4)
    w.grad = mine
    opt:zero_grad()
    F.linear(x, w):sum():backward()
    assert.tensor_near(ds.zeros(3, 4), mine)
    assert.tensor_near(want, w.grad)
    -- requires_grad off drops the spare buffer
    F.linear(x, w):sum():backward()
    opt:zero_grad()
    w:requires_grad(false)
    assert.is_nil(A.info(w).spare)
    -- a wrong buffer is an error naming it
    assert.has_error(function() ds.core.linear_backward(x, w, ds.ones(5, 3), false, true, false, ds.zeros(4, 3)) end,
      "linear backward: weight-gradient buffer 4x3 is not a contiguous 3x4 tensor")
  end)

  it("step(recycle) clears a gradient nobody holds in its own pass, and the next backward adds into it", function()
    local A = require "deepsigns.autograd"
    local F = ds.functional
    for _, make in ipairs {function(ps) return optim.Adam(ps, {lr = 0.01}) end,
      function(ps) return optim.SGD(ps, {lr = 0.1, momentum = 0.9}) end,
      function(ps) return optim.RMSprop(ps, {lr = 0.01}) end} do
      -- the same two steps with step() and with step(true) give the same bits
      local x1, x2 = ds.randn(5, 4), ds.randn(5, 4)
      local w0 = ds.randn(3, 4)
      local function two_steps(recycle)
        local w = w0:clone():requires_grad()
        local opt = make({w})
        local bufs = {}
        for _, x in ipairs {x1, x2} do
          opt:zero_grad()
          F.linear(x, w):sum():backward()
          bufs[#bufs + 1] = A.grad_of(w)
          opt:step(recycle)
        end
        return w, opt, bufs
      end
      local plain = two_steps(false)
      local w, opt, bufs = two_steps(true)
      assert.same(plain:totable(), w:totable())
      assert.equal(bufs[1], bufs[2]) -- one buffer, written again
      -- cleared and dropped at once: .grad is nil, the spare holds zeros and says so
      assert.is_nil(A.grad_of(w))
      local spare, zeroed = A.take_spare(w)
      assert.is_true(zeroed)
      assert.tensor_near(ds.zeros(3, 4), spare, 0)
      -- a gradient someone read through w.grad is neither cleared nor dropped
      F.linear(x1, w):sum():backward()
      local held = w.grad
      opt:step(true)
      assert.tensor_near(ds.ones(5, 3):t():matmul(x1), held)
      assert.equal(held, w.grad)
    end
  end)

  it("step(recycle) with an update that does not clear keeps the gradient", function()
    local A = require "deepsigns.autograd"
    local F = ds.functional
    local Mine = require("deepsigns.class")("MySGD", optim.Optimizer)
    function Mine:__init(params) optim.Optimizer.__init(self, params, {lr = 0.1}, {lr = 0.1}) end
    function Mine:update(p, g) ds.core.sgd_step(p, g, nil, self.lr, 0, 0, false, 0, false) end
    local x, w = ds.randn(5, 4), ds.randn(3, 4):requires_grad()
    local opt = Mine({w})
    F.linear(x, w):sum():backward()
    opt:step(true)
    local want = ds.ones(5, 3):t():matmul(x)
    assert.tensor_near(want, A.grad_of(w)) -- kept, as step() keeps it
    opt:zero_grad()
    F.linear(x, w):sum():backward() -- its spare is not taken for zeros
    assert.tensor_near(want, w.grad)
  end)

  it("schedules the learning rate", function()
    local p = ds.tensor({1}):requires_grad()
    local opt = optim.SGD({p}, {lr = 1})
    local s = optim.StepLR(opt, {step_size = 2, gamma = 0.5})
    local lrs = {}
    for i = 1, 4 do lrs[i] = s:step() end
    assert.same({1, 0.5, 0.5, 0.25}, lrs)
    opt.lr = 1
    local ms = optim.MultiStepLR(opt, {milestones = {1, 3}, gamma = 0.1})
    assert.near(0.1, ms:step(), 1e-12); ms:step()
    assert.near(0.01, ms:step(), 1e-12)
    opt.lr = 1
    local c = optim.CosineAnnealingLR(opt, {T_max = 4})
    c:step(); assert.near(0.5, c:step(), 1e-12)
    c:step(); assert.near(0, c:step(), 1e-12)
  end)

  it("rejects bad options", function()
    local p = ds.tensor({1}):requires_grad()
    assert.has_error(function() optim.SGD({p}) end, "optim.SGD: option 'lr' is required")
    assert.has_error(function() optim.SGD({p}, {lr = 0.1, momentun = 0.9}) end, "optim.SGD: unknown option 'momentun'")
    assert.has_error(function() optim.Adam({}) end, "optim.Adam: expects a non-empty list of parameters (model:parameters())")
    assert.has_error(function() optim.SGD({p}, {lr = 0.1, nesterov = true}) end,
      "optim.SGD: Nesterov momentum needs momentum > 0 and dampening 0")
  end)
end)
