local H = require "helper"
local ds = H.ds
local bb = ds.watermark.blackbox

describe("black-box watermark", function()
  it("computes the exact thresholds of deepsigns.md for 10 classes", function()
    local known = {{20, 1e-4, 12}, {20, 0.05, 16}, {10, 1e-5, 4}, {15, 1e-5, 7}, {50, 0.05, 41}, {100, 0.05, 85},
      {100, 1e-4, 77}}
    for _, c in ipairs(known) do
      assert.equal(c[3], bb.threshold{K = c[1], classes = 10, p = c[2]}, "K=" .. c[1] .. " p=" .. c[2])
    end
  end)

  it("never leaves theta undefined: it says why no threshold exists", function()
    assert.has_error(function() bb.threshold{K = 1, classes = 10, p = 0.5} end)
    local ok, err = pcall(bb.threshold, {K = 1, classes = 10, p = 0.5})
    assert.is_false(ok)
    assert.matches("no threshold exists for K = 1, 10 classes, p = 0.5", err, 1, true)
  end)

  -- a key by hand: 20 inputs with chosen labels
  local function hand_key()
    ds.manual_seed(3)
    local labels = {}
    for i = 1, 20 do labels[i] = (i * 3) % 10 end
    return bb.Key{inputs = ds.rand(20, 4), labels = ds.tensor(labels), K = 20, classes = 10, p = 1e-4, seed = 9,
      input_shape = {4}}, labels
  end

  it("counts mismatches, not matches, and compares labels as class ids", function()
    local key, labels = hand_key()
    local exact = bb.detect(function() return labels end, key) -- integers vs the key's floats
    assert.equal(0, exact.mismatches)
    assert.is_true(exact.owned)
    assert.equal(12, exact.theta)
    assert.near(0.1 ^ 20, exact.p_value, 1e-30)
    local wrong = {}
    for i, v in ipairs(labels) do wrong[i] = (v + 1) % 10 end
    local r = bb.detect(function() return ds.tensor(wrong) end, key)
    assert.equal(20, r.mismatches)
    assert.is_false(r.owned)
    assert.near(1, r.p_value, 1e-12)
    -- 11 mismatches: owned (11 < 12); 12: not
    local mixed = {}
    for i, v in ipairs(labels) do mixed[i] = i <= 11 and (v + 1) % 10 or v end
    assert.is_true(bb.detect(function() return mixed end, key).owned)
    mixed[12] = (labels[12] + 1) % 10
    assert.is_false(bb.detect(function() return mixed end, key).owned)
  end)

  it("saves keys with their labels and seed", function()
    local dir = H.tmpdir()
    local key = hand_key()
    key:save(dir .. "/k.safetensors")
    local k2 = bb.load(dir .. "/k.safetensors")
    assert.same(key.labels:totable(), k2.labels:totable())
    assert.equal(9, k2.seed)
    assert.equal(20, k2.K)
    assert.same({4}, k2.input_shape)
    assert.equal(ds.core.tensor.to_bytes(key.inputs), ds.core.tensor.to_bytes(k2.inputs))
  end)

  it("generates keys that mark a model and not an unmarked one", function()
    local data = H.synthetic(900, 12, 3, 5)
    local function trained(seed)
      ds.manual_seed(seed)
      local m = ds.models.mlp{12, 32, 32, 3}
      ds.train{model = m, data = data, epochs = 5, batch_size = 32, lr = 3e-3, progress = false}
      return m
    end
    local marked, filter, other = trained(1), trained(2), trained(3)
    local key = bb.keygen{model = marked, data = data, K = 8, seed = 4, null_models = {filter}, epochs = 20,
      lr = 0.05, repeat_candidates = 4, rounds = 10, p = 0.05}
    assert.equal(8, key.K)
    -- the labels are spread: no class holds more than ceil(2K/C) = 6 keys
    local per = {}
    for _, v in ipairs(key.labels:totable()) do per[v] = (per[v] or 0) + 1 end
    for _, n in pairs(per) do assert.is_true(n <= 6) end
    -- the model answers every key as chosen, also the keys of rounds before the last
    local r = bb.detect(marked, key)
    assert.equal(0, r.mismatches)
    assert.is_true(r.owned)
    -- the filter model answers no key as chosen
    assert.equal(8, bb.detect(filter, key).mismatches)
    assert.is_true(ds.evaluate(marked, data).accuracy > 0.9)
    local o = bb.detect(other, key)
    assert.is_true(o.mismatches >= 0 and o.p_value > 0)
    -- same seed, same keys
    local again = bb.keygen{model = trained(1), data = data, K = 8, seed = 4, null_models = {filter}, epochs = 20,
      lr = 0.05, repeat_candidates = 4, rounds = 10}
    assert.same(key.labels:totable(), again.labels:totable())
  end)

  it("calibrates on unmarked models and reports the empirical p-values beside the binomial one", function()
    local key, labels = hand_key()
    -- three "unmarked models" that answer keys 1..5 as chosen, and the rest wrong
    local function biased(k) return function()
      local out = {}
      for i, v in ipairs(labels) do out[i] = i <= k and v or (v + 1) % 10 end
      return out
    end end
    -- calibration needs models: ones that answer as `biased` does
    local W = require("deepsigns.class")("spec.Answering", ds.nn.Module)
    function W:__init(k) ds.nn.Module.__init(self); self.k = k end
    function W:forward(x)
      local out = ds.zeros(x:size(1), 10)
      for i = 1, x:size(1) do
        local v = labels[i]
        out:set(i, (i <= self.k and v or (v + 1) % 10) + 1, 1)
      end
      return out
    end
    local cal = bb.calibrate{key = key, null_models = {W(5), W(5), W(4)}}
    assert.equal(3, cal.models)
    assert.same({15, 15, 16}, cal.mismatches)
    assert.equal(3, cal.matches[1])
    assert.equal(2, cal.matches[5])
    assert.equal(0, cal.matches[6])
    -- a suspect with 15 mismatches: binomially rare (p ~ 0.04), but as the null models do
    local r = bb.detect(biased(5), key, {p = 0.05})
    assert.equal(15, r.mismatches)
    assert.is_true(r.p_value < 0.05)
    assert.is_true(r.p_value_calibrated > 0.05)
    assert.equal("calibrated", r.verdict)
    assert.is_false(r.owned)
    assert.near((1 + 2) / (1 + 3), r.p_value_rank, 1e-12)
    -- a marked model (0 mismatches) stays owned
    local m = bb.detect(function() return labels end, key, {p = 0.05})
    assert.is_true(m.owned)
    assert.is_true(m.p_value_calibrated < 1e-6)
    -- the calibration travels with the key file
    local dir = H.tmpdir()
    key:save(dir .. "/k.safetensors")
    local k2 = bb.load(dir .. "/k.safetensors")
    assert.same(cal.matches, k2.calibration.matches)
    assert.equal(r.p_value_calibrated, bb.detect(biased(5), k2, {p = 0.05}).p_value_calibrated)
    assert.has_error(function() bb.calibrate{key = key, null_models = {W(5)}} end,
      "blackbox.calibrate: null_models must list at least 2 unmarked models, got 1")
    local ok, err = pcall(bb.calibrate, {key = key, null_models = {W(5), ds.models.mlp{4, 8, 3}}})
    assert.is_false(ok)
    assert.matches("blackbox.calibrate: null model 2: 10 classes expected, the model has 1x3 outputs", err, 1, true)
  end)

  it("never returns a key the model forgot in a later round", function()
    -- one epoch a round on 2,000 images: keys found in round 1 fade in rounds 2 and 3
    local train = ds.data.fashion_mnist{normalize = true}:subset{n = 2000, seed = 1}
    ds.manual_seed(1)
    local m = ds.models.mlp{784, 256, 10}
    local ok, res = pcall(bb.keygen, {model = m, data = train, K = 20, epochs = 1, seed = 201})
    if ok then
      assert.equal(0, bb.detect(m, res).mismatches)
    else
      assert.matches("%d+ taken earlier and forgotten since%); allow more rounds", res)
    end
  end)

  describe("bad input", function()
    it("says how many keys were found when K is out of reach", function()
      local data = H.synthetic(90, 4, 3, 1)
      local m = ds.models.mlp{4, 8, 3}
      local ok, err = pcall(bb.keygen, {model = m, data = data, K = 50, candidates = 20, rounds = 1, epochs = 1})
      assert.is_false(ok)
      assert.matches("blackbox.keygen: found only %d+ of 50 keys in 1 rounds of 20 candidates %(%d+ answered", err)
      assert.matches("per class: 0:%d+ 1:%d+ 2:%d+; at most 34 per class", err)
      -- one class, or null models of another shape or class count
      local one = data:where_class(1)
      ok, err = pcall(bb.keygen, {model = m, data = one, K = 4})
      assert.matches("blackbox.keygen: the data set synthetic holds a single class", err, 1, true)
      ok, err = pcall(bb.keygen, {model = m, data = data, K = 4, null_models = {ds.models.mlp{5, 8, 3}}})
      assert.matches("blackbox.keygen: null model 1: inputs of 4 do not fit the model", err, 1, true)
      ok, err = pcall(bb.keygen, {model = m, data = data, K = 4, null_models = {ds.models.mlp{4, 8, 5}}})
      assert.matches("blackbox.keygen: null model 1: 3 classes expected, the model has 1x5 outputs", err, 1, true)
      assert.has_error(function() bb.keygen{model = m, data = data, k = 10} end,
        "blackbox.keygen: unknown option 'k' (did you mean 'K'?) (options: K, batch_size, candidates, data, embed, epochs, log, lr, "
          .. "model, null_models, optimizer, p, progress, regularizers, repeat_candidates, rounds, seed, select, source)")
    end)

    it("refuses a key for another input shape or class count, and bad suspect functions", function()
      local key = hand_key()
      assert.has_error(function() bb.detect(ds.models.mlp{6, 8, 10}, key) end)
      local ok, err = pcall(bb.detect, ds.models.mlp{4, 8, 5}, key)
      assert.is_false(ok)
      assert.matches("blackbox.detect: 10 classes expected, the model has 1x5 outputs", err, 1, true)
      assert.has_error(function() bb.detect(function() return {1, 2} end, key) end,
        "blackbox.detect: the suspect function returned 2 labels for 20 key inputs")
      assert.has_error(function() bb.detect(function() return "x" end, key) end,
        "blackbox.detect: the suspect function must return labels (a tensor or a list)")
      local dir = H.tmpdir()
      ds.save(dir .. "/m.safetensors", {a = ds.ones(1)}, {format = "deepsigns-model"})
      assert.has_error(function() bb.load(dir .. "/m.safetensors") end,
        dir .. "/m.safetensors: not a deepsigns-bb-key file (format: deepsigns-model)")
    end)
  end)
end)
