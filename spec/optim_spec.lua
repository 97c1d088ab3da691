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

  it("skips parameters without gradients, and zero_grad zeroes the buffers", function()
    local a, b = ds.tensor({1}):requires_grad(), ds.tensor({1}):requires_grad()
    local opt = optim.SGD({a, b}, {lr = 1})
    a.grad = ds.tensor{1}
    opt:step()
    assert.equal(0, a:item())
    assert.equal(1, b:item())
    opt:zero_grad()
    assert.same({0}, a.grad:totable())
    assert.is_nil(b.grad)
  end)

  it("runs a user's own update rule", function()
    local F = ds.functional
    local Mine = require("deepsigns.class")("MySGD", optim.Optimizer)
    function Mine:__init(params) optim.Optimizer.__init(self, params, {lr = 0.1}, {lr = 0.1}) end
    function Mine:update(p, g) ds.core.optim.sgd_step(p, g, nil, self.lr, 0, 0, false, 0, false) end
    local x, w = ds.randn(5, 4), ds.randn(3, 4):requires_grad()
    local w0 = w:clone()
    local opt = Mine({w})
    F.linear(x, w):sum():backward()
    opt:step()
    local want = ds.ones(5, 3):t():matmul(x)
    assert.tensor_near(w0 - want * 0.1, w, 1e-5)
    assert.tensor_near(want, w.grad) -- the gradient stays until zero_grad
    assert.has_error(function() ds.core.optim.sgd_step(w, ds.zeros(4, 3):t(), nil, 0.1, 0, 0, false, 0, false) end,
      "sgd: parameter 3x4 and its gradient or state 3x4 differ in size or layout")
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
    assert.has_error(function() optim.SGD({p}, {lr = 0.1, momentun = 0.9}) end,
      "optim.SGD: unknown option 'momentun' (did you mean 'momentum'?) (options: dampening, lr, momentum, nesterov, weight_decay)")
    assert.has_error(function() optim.Adam({}) end, "optim.Adam: expects a non-empty list of parameters (model:parameters())")
    assert.has_error(function() optim.SGD({p}, {lr = 0.1, nesterov = true}) end,
      "optim.SGD: Nesterov momentum needs momentum > 0 and dampening 0")
  end)
end)
