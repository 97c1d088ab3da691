local H = require "helper"
local ds = H.ds
local nn = ds.nn
local ref = dofile(H.root .. "/spec/fixtures/torch_reference.lua")

local function T(entry) return ds.tensor(entry.values):reshape(entry.shape) end

-- forward, then backward of sum(out * w); compare with PyTorch
local function run(case, forward, params)
  local x = T(case.x):requires_grad()
  local out = forward(x)
  assert.tensor_near(T(case.out), out, 1e-4)
  ;(out * T(case.w)):sum():backward()
  assert.tensor_near(T(case.grad_x), x.grad, 1e-4)
  for name, p in pairs(params or {}) do
    assert.tensor_near(T(case["grad_" .. name]), p.grad, 1e-4)
  end
end

describe("nn", function()
  before_each(function() ds.manual_seed(5) end)

  describe("matches PyTorch 1.13 reference values", function()
    it("Linear", function()
      local c = ref.linear
      local l = nn.Linear(4, 3)
      l.weight:copy(T(c.weight)); l.bias:copy(T(c.bias))
      run(c, function(x) return l(x) end, {weight = l.weight, bias = l.bias})
    end)

    it("Conv2d with stride 2 and padding 1", function()
      local c = ref.conv2d
      local l = nn.Conv2d(2, 3, 3, {stride = 2, padding = 1})
      l.weight:copy(T(c.weight)); l.bias:copy(T(c.bias))
      run(c, function(x) return l(x) end, {weight = l.weight, bias = l.bias})
    end)

    it("MaxPool2d", function()
      local l = nn.MaxPool2d(2)
      run(ref.maxpool2d, function(x) return l(x) end)
    end)

    it("BatchNorm2d in train mode, with running statistics", function()
      local c = ref.batchnorm2d
      local l = nn.BatchNorm2d(3)
      l.weight:copy(T(c.weight)); l.bias:copy(T(c.bias))
      run(c, function(x) return l(x) end, {weight = l.weight, bias = l.bias})
      assert.tensor_near(T(c.running_mean), l.running_mean, 1e-5)
      assert.tensor_near(T(c.running_var), l.running_var, 1e-5)
    end)

    it("cross-entropy", function()
      local c = ref.cross_entropy
      run(c, function(x) return nn.cross_entropy(x, T(c.labels)):reshape(1) end)
    end)
  end)

  it("initialises like PyTorch (uniform within 1/sqrt(fan_in))", function()
    local l = nn.Linear(100, 50)
    local bound = 1 / math.sqrt(100)
    assert.is_true(l.weight:abs():max():item() <= bound)
    assert.is_true(l.weight:abs():max():item() > 0.9 * bound)
    local c = nn.Conv2d(3, 8, 3)
    assert.is_true(c.weight:abs():max():item() <= 1 / math.sqrt(27))
  end)

  it("names the failing child of a Sequential", function()
    local m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(5, 2):named("head"))
    assert.has_error(function() m(ds.randn(3, 4)) end,
      "in module 3 (nn.Linear 'head') of nn.Sequential: nn.Linear(5 -> 2): input must be batch x 5, got 3x8")
  end)

  it("lists parameters, state_dict keys and loads them back", function()
    local m = nn.Sequential(nn.Linear(4, 8):named("fc1"), nn.ReLU(), nn.BatchNorm1d(8):named("bn"), nn.Linear(8, 2))
    local names = {}
    for name in m:named_parameters() do names[#names + 1] = name end
    assert.same({"fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "4.weight", "4.bias"}, names)
    assert.equal(6, #m:parameters())
    local sd = m:state_dict()
    assert.is_not_nil(sd["bn.running_mean"])
    assert.is_not_nil(sd["bn.running_var"])
    local m2 = m:clone()
    m2:layer("fc1").weight:fill(0)
    assert.is_true(m:layer("fc1").weight:abs():sum():item() > 0) -- clone is deep
    m2:load_state_dict(m:state_dict())
    assert.tensor_near(m:layer("fc1").weight, m2:layer("fc1").weight, 0)
    assert.is_false(m2:layer("fc1").weight:shares_storage(m:layer("fc1").weight))
  end)

  it("rejects a bad state_dict without changing the model", function()
    local m = nn.Sequential(nn.Linear(4, 8):named("fc1"), nn.Linear(8, 2):named("fc2"))
    local before = m:layer("fc1").weight:clone()
    local sd = m:clone():state_dict()
    sd["fc1.weight"] = ds.zeros(8, 4)
    sd["fc2.weight"] = ds.zeros(3, 8)
    assert.has_error(function() m:load_state_dict(sd) end,
      "load_state_dict: 'fc2.weight' has shape 3x8, the model expects 2x8")
    assert.tensor_near(before, m:layer("fc1").weight, 0)
    sd["fc2.weight"] = nil
    sd["extra"] = ds.zeros(1)
    assert.has_error(function() m:load_state_dict(sd) end,
      "load_state_dict: missing key 'fc2.weight'; unexpected key 'extra'")
  end)

  it("finds layers by name and index, and captures activations", function()
    local m = nn.Sequential(nn.Linear(3, 4):named("fc1"), nn.ReLU():named("relu1"), nn.Linear(4, 2):named("fc2"))
    assert.equal(m:layer(1), m:layer("fc1"))
    assert.has_error(function() m:layer("nope") end, "layer: no layer named 'nope' (layers: fc1, relu1, fc2)")
    assert.has_error(function() m:layer(9) end, "layer: index 9 out of range (the model has 3 layers)")
    local x = ds.randn(5, 3)
    local a = m:activations(x, "relu1")
    assert.same({5, 4}, a:size())
    assert.tensor_near(m:layer("fc1")(x):relu(), a, 1e-6)
    assert.is_true(a:is_leaf())
    assert.is_true(m.training)
  end)

  it("a Linear's ReLU, written over its own output, equals linear then relu (output and gradients, exactly)", function()
    local F = require "deepsigns.functional"
    local l = nn.Linear(6, 5, {activation = "relu"})
    local x = ds.randn(7, 6):requires_grad()
    local y = l(x)
    local w = ds.randn(7, 5)
    ;(y * w):sum():backward()
    local gx, gw, gb = x.grad:clone(), l.weight.grad:clone(), l.bias.grad:clone()
    local x2 = x:detach():requires_grad()
    l.weight.grad, l.bias.grad = nil, nil
    local y2 = F.linear(x2, l.weight, l.bias):relu()
    ;(y2 * w):sum():backward()
    assert.same(y2:totable(), y:totable())
    assert.same(x2.grad:totable(), gx:totable())
    assert.same(l.weight.grad:totable(), gw:totable())
    assert.same(l.bias.grad:totable(), gb:totable())
    assert.is_true((-y):max():item() <= 0)
  end)

  it("switches dropout and batch norm between train and eval", function()
    local m = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(3))
    local x = ds.randn(8, 3)
    m:eval()
    assert.is_false(m:layer(1).training)
    assert.tensor_near(x / math.sqrt(1 + 1e-5), m(x), 1e-5) -- identity dropout, unit running stats
    m:train()
    assert.is_true(m:layer(2).training)
  end)

  it("shows the architecture", function()
    local m = nn.Sequential(nn.Conv2d(1, 4, 3, {padding = 1}):named("conv1"), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Linear(196, 10):named("fc"))
    local s = tostring(m)
    assert.matches("nn.Sequential {", s, 1, true)
    assert.matches("(conv1): nn.Conv2d(1 -> 4, 3x3, padding 1)", s, 1, true)
    assert.matches("(fc): nn.Linear(196 -> 10)", s, 1, true)
    assert.same({2, 10}, m(ds.randn(2, 1, 14, 14)):size())
  end)

  it("builds residual blocks", function()
    local r = nn.Residual(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), nn.Identity())
    local x = ds.randn(2, 3)
    assert.tensor_near(r:layer(1)(x) + x, r(x), 1e-6)
    H.gradcheck(function(v) return r(v) end, {H.away_from_zero(2, 3)})
  end)

  it("checks parameter gradients of whole layers", function()
    local l = nn.Conv2d(2, 2, 3, {stride = 2, padding = 1})
    H.gradcheck(function(x, w, b) l.weight, l.bias = w, b; return l(x) end, {ds.randn(1, 2, 5, 5), l.weight, l.bias})
    local bn = nn.BatchNorm2d(2)
    H.gradcheck(function(x, w, b) bn.weight, bn.bias = w, b; return bn(x) end,
      {ds.randn(3, 2, 2, 2), ds.rand(2) + 0.5, ds.randn(2)}, {atol = 2e-3})
  end)

  it("learns two spirals to at least 95% accuracy", function()
    ds.manual_seed(1)
    local n = 200
    local xs, ys = {}, {}
    for i = 0, n - 1 do
      local r = i / n * 5
      local t = 1.75 * i / n * 2 * math.pi
      for c = 0, 1 do
        local a = t + c * math.pi
        xs[#xs + 1] = {r * math.sin(a) / 5 + ds.core.rng.normal() * 0.02, r * math.cos(a) / 5 + ds.core.rng.normal() * 0.02}
        ys[#ys + 1] = c
      end
    end
    local x, y = ds.tensor(xs), ds.tensor(ys)
    local m = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 2))
    local opt = ds.optim.Adam(m:parameters(), {lr = 0.01})
    for _ = 1, 600 do
      opt:zero_grad()
      nn.cross_entropy(m(x), y):backward()
      opt:step()
    end
    local pred = m(x):argmax(2) - 1
    local acc = pred:eq(y):mean():item()
    assert.is_true(acc >= 0.95, "accuracy " .. acc)
  end)

  describe("bad input", function()
    it("gives clear errors", function()
      assert.has_error(function() nn.Linear(0, 3) end, "nn.Linear: input size must be a positive integer, got 0")
      assert.has_error(function() nn.Dropout(1) end, "nn.Dropout: probability must be in [0, 1), got 1")
      assert.has_error(function() nn.Conv2d(1, 2, 3)(ds.randn(2, 3, 8, 8)) end,
        "conv2d: size mismatch, input: 2x3x8x8, weight: 2x1x3x3 (want N x C x H x W and out x C x kh x kw, bias of size out)")
      assert.has_error(function() nn.MaxPool2d(5)(ds.randn(1, 1, 3, 3)) end,
        "maxpool2d: kernel 5x5 larger than the padded input 1x1x3x3")
      assert.has_error(function() nn.BatchNorm2d(3)(ds.randn(2, 4, 2, 2)) end,
        "nn.BatchNorm2d(3): input must have 4 dimensions with 3 channels, got 2x4x2x2")
      assert.has_error(function() nn.cross_entropy(ds.randn(2, 3), ds.tensor{0, 3}) end,
        "cross_entropy: label 3 at row 2 is not a class id in 0..2")
      assert.has_error(function() nn.cross_entropy(ds.randn(2, 3), ds.tensor{0, 1, 2}) end,
        "cross_entropy: size mismatch, logits: 2x3, target: 3 (want B x C logits and B class ids or B x C probabilities)")
      assert.has_error(function() nn.mse(ds.randn(2), ds.randn(3)) end, "mse: size mismatch, a: 2, b: 3")
      assert.has_error(function() nn.Sequential(nn.Linear(2, 2)):add(42) end)
    end)
  end)
end)
