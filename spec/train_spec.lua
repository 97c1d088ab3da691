local H = require "helper"
local ds = H.ds

-- a linearly separable 3-class problem as a Dataset
local function blobs(n, seed)
  ds.manual_seed(seed or 1)
  local xs, ys = {}, {}
  local centres = {{2, 0}, {-2, 1}, {0, -2}}
  for i = 1, n do
    local c = (i - 1) % 3
    xs[i] = {centres[c + 1][1] + ds.core.rng.normal() * 0.3, centres[c + 1][2] + ds.core.rng.normal() * 0.3}
    ys[i] = c
  end
  return ds.data.Dataset{x = ds.tensor(xs), y = ds.tensor(ys), classes = 3, name = "blobs"}
end

local function small_model()
  local nn = ds.nn
  return nn.Sequential(nn.Linear(2, 16, {activation = "relu"}):named("hidden"), nn.Linear(16, 3):named("out"))
end

describe("training", function()
  it("trains, evaluates and returns a history", function()
    local data = blobs(300)
    local model = small_model()
    local seen = {}
    local h = ds.train{model = model, data = data, test = data, epochs = 3, batch_size = 32, progress = false, lr = 0.02,
      on_epoch = function(e, s) seen[#seen + 1] = e end}
    assert.equal(3, #h)
    assert.same({1, 2, 3}, seen)
    assert.is_true(h[3].accuracy > 0.9)
    assert.is_true(h[3].test_accuracy > 0.9)
    assert.is_true(h[3].samples_per_sec > 0)
    local ev = ds.evaluate(model, data)
    assert.is_true(ev.accuracy > 0.9)
    assert.equal(300, ev.n)
    assert.is_true(model.training)
  end)

  it("matches a hand-written loop bit for bit, and leaves the last batch's gradients in .grad", function()
    -- ds.train recycles the weight gradients (Optimizer:step(true)) on all but its last step
    local data = blobs(200)
    ds.manual_seed(3)
    local a = small_model()
    ds.train{model = a, data = data, epochs = 2, batch_size = 32, shuffle = false, progress = false, lr = 0.02}
    ds.manual_seed(3)
    local b = small_model()
    local opt = ds.optim.Adam(b:parameters(), {lr = 0.02})
    for _ = 1, 2 do
      for x, y in data:batches{size = 32, shuffle = false} do
        opt:zero_grad()
        ds.functional.cross_entropy(b(x), y):backward()
        opt:step()
      end
    end
    for i, p in ipairs(b:parameters()) do
      local q = a:parameters()[i]
      assert.same(p:totable(), q:totable())
      assert.same(p.grad:totable(), q.grad:totable())
    end
  end)

  it("gives regularizers the batch and the captured activations", function()
    local data = blobs(60)
    local model = small_model()
    local calls, shapes = 0, nil
    local reg = {name = "act_l2", layers = {"hidden"}, loss = function(batch, acts)
      calls = calls + 1
      shapes = acts.hidden:size()
      assert.equal(batch.x:size(1), acts.hidden:size(1))
      return (acts.hidden * acts.hidden):mean() * 0.01
    end}
    local h = ds.train{model = model, data = data, epochs = 1, batch_size = 20, regularizers = {reg}, progress = false}
    assert.equal(3, calls)
    assert.same({20, 16}, shapes)
    assert.is_number(h[1].regularizers.act_l2)
  end)

  it("stops on a non-finite loss naming the epoch and batch, or skips the batch", function()
    local data = blobs(60)
    local model = small_model()
    local bad = function(batch) if batch.index == 2 then return ds.tensor(0 / 0) end end
    assert.has_error(function()
      ds.train{model = model, data = data, epochs = 1, batch_size = 20, regularizers = {bad}, progress = false}
    end, "train: the loss is not finite (nan) at epoch 1, batch 2; lower the learning rate, or pass on_nonfinite=\"skip\" to skip such batches")
    local before = model:layer("hidden").weight:clone()
    local h = ds.train{model = model, data = data, epochs = 1, batch_size = 20, regularizers = {bad}, progress = false,
      on_nonfinite = "skip"}
    assert.equal(1, h[1].skipped)
    assert.is_true(model:layer("hidden").weight:all_finite())
    assert.is_false((model:layer("hidden").weight - before):abs():max():item() == 0)
  end)

  it("is repeatable for a seed", function()
    local function run()
      local data = blobs(90, 4)
      ds.manual_seed(5)
      local model = small_model()
      ds.train{model = model, data = data, epochs = 2, batch_size = 16, progress = false}
      return model:layer("out").weight:totable()
    end
    assert.same(run(), run())
  end)

  it("checks its options", function()
    assert.has_error(function() ds.train{data = blobs(10)} end, "train: option 'model' must be a model")
    assert.has_error(function() ds.train{model = small_model(), data = {}} end, "train: option 'data' must be a data set")
    assert.has_error(function() ds.train{model = small_model(), data = blobs(10), epochs = 1.5} end,
      "train: epochs must be an integer >= 0")
    assert.has_error(function()
      ds.train{model = small_model(), data = blobs(10), regularizers = {{layers = {"nope"}, loss = function() end}}}
    end)
    assert.has_error(function() ds.train{model = small_model(), data = blobs(10), regularizers = {{}}} end,
      "train: regularizer 1 must be a function or a table with a loss function")
    assert.has_error(function()
      ds.train{model = small_model(), data = blobs(10), regularizers = {{loss = function() end, layer = {"h"}}}}
    end, "train: regularizer 1: unknown option 'layer' (did you mean 'layers'?) (options: layers, loss, name, optimizer)")
    assert.has_error(function()
      ds.train{model = small_model(), data = blobs(10), regularizers = {{loss = function() end, optimizer = {}}}}
    end, "train: regularizer 1: optimizer must be an optimiser")
    assert.has_error(function()
      ds.train{model = small_model(), data = blobs(10), regularizers = {{name = "r", loss = function() return 1 end}}}
    end, "train: regularizer 'r' must return a scalar tensor or nil, got number")
  end)
end)
