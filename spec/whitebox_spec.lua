local H = require "helper"
local ds = H.ds
local wb = ds.watermark.whitebox
local L = ds.watermark.losses
local W = require "wm_terms"
local stats = ds.stats

local function small_model(dims, classes)
  return ds.models.mlp{dims, 48, 48, classes}
end

local function fit(model, data, key, epochs)
  local opt = ds.optim.Adam(model:parameters(), {lr = 3e-3})
  if key then
    return wb.embed{model = model, key = key, data = data, epochs = epochs or 8, optimizer = opt, batch_size = 64, progress = false}
  end
  return ds.train{model = model, data = data, epochs = epochs or 8, optimizer = opt, batch_size = 64, progress = false}
end

describe("white-box watermark", function()
  local data = H.synthetic(1200, 20, 4, 3)

  describe("loss ops", function()
    it("the reference terms: gradient checks", function()
      ds.manual_seed(4)
      local y = ds.tensor{0, 2, 1, 2, 0}
      H.gradcheck(function(h, c) return W.pull(h, y, c, nil, 3) end, {ds.randn(5, 4), ds.randn(3, 4)})
      local map = {1, 0, 2} -- classes 0 and 2 have centres rows 1 and 2
      H.gradcheck(function(h, c) return W.pull(h, y, c, map, 3) end, {ds.randn(5, 4), ds.randn(2, 4)})
      -- (small values: the value is a float32 sum, whose rounding bounds the differences)
      H.gradcheck(function(h) return W.push(h, y, ds.tensor{{0, 0, 0, 0}, {1.5, 1.5, 1.5, 1.5}}, map, 3) end,
        {ds.randn(5, 4) * 0.5})
      H.gradcheck(function(c) return W.separation(c, y) end, {ds.randn(3, 4)})
      H.gradcheck(function(c) return W.unit_norm(c) end, {ds.randn(3, 4)})
      local a, b = ds.randn(4, 6), ds.tensor{{1, 0, 1, 1, 0, 0}, {0, 0, 1, 0, 1, 1}}
      H.gradcheck(function(m) return W.projection(m, a, b) end, {ds.randn(2, 4) * 0.3})
    end)

    it("each variant's fused loss: gradient checks, and equal to its terms composed", function()
      ds.manual_seed(9)
      local y = ds.tensor{0, 2, 1, 2, 0, 3, 2}
      local a, b = ds.randn(4, 6), ds.tensor{{1, 0, 1, 1, 0, 0}, {0, 0, 1, 0, 1, 1}}
      local targets, l1, l2 = {2, 0}, 0.3, 0.1 -- small loss values keep float32 differences precise
      -- centres of small norm keep |1 - ||c||^2| away from its kink, and distinct
      -- distances keep each centre's nearest other from switching under the differences
      local c5 = ds.tensor{{0.1, 0, 0, 0}, {0, 0.2, 0, 0}, {0, 0, 0.3, 0.05}, {0, 0.1, 0, 0.4}, {0.25, 0.25, 0, 0}}
      H.gradcheck(function(h, c) return L.reference(h, y, c, a, b, targets, l1, l2) end, {ds.randn(7, 4) * 0.5, c5:narrow(1, 1, 4):clone()})
      -- a target absent from the batch (class 4 of 5) gets no projection term
      H.gradcheck(function(h, c) return L.reference(h, y, c, a, b, {2, 4}, l1, l2) end, {ds.randn(7, 4) * 0.5, c5:clone()})
      -- the paper variant: one mean per class; with respect to h (the means are constants in
      -- the push by design, so theirs is checked against the composed terms below). Means
      -- far apart and rows near their own keep every push away from its cap's kink.
      local mu = ds.tensor{{0, 0, 0, 0}, {3, 0, 0, 0}, {0, 3, 0, 0}, {0, 0, 3, 0}}
      local near = mu:index_select({1, 3, 2, 3, 1, 4, 3}) + ds.randn(7, 4) * 0.3
      H.gradcheck(function(h) return L.paper(h, y, mu, a, b, targets, l1, l2) end, {near})

      local function grads(f, h, c)
        h, c = h:clone():requires_grad(), c:clone():requires_grad()
        local v = f(h, c)
        v:backward()
        return v:item(), h.grad, c.grad
      end
      local function same(fused, composed)
        assert.near(composed[1], fused[1], 1e-4 * math.abs(composed[1]))
        for i = 2, 3 do assert.is_true((fused[i] - composed[i]):abs():max():item() < 1e-4) end
      end
      local h0, c0 = ds.randn(7, 4), ds.randn(4, 4)
      same({grads(function(h, c) return L.reference(h, y, c, a, b, targets, l1, l2) end, h0, c0)},
        {grads(function(h, c)
          return (W.pull(h, y, c, nil, 4) + W.separation(c, y) + W.unit_norm(c)) * l1
            + W.projection(c:index_select({3, 1}), a, b) * l2
        end, h0, c0)})
      same({grads(function(h, m) return L.paper(h, y, m, a, b, targets, l1, l2) end, h0, c0)},
        {grads(function(h, m)
          local loss = (W.pull(h, y, m, nil, 4) * 2 - W.push(h, y, m, nil, 4)) * (l1 / 7)
          -- the batch's mean of each target class: class 2 (rows 2, 4, 7) first, then class 0
          local means = ds.cat({h:index_select({2, 4, 7}):mean(1, true), h:index_select({1, 5}):mean(1, true)}, 1)
          return loss + W.projection(means, a, b) * l2
        end, h0, c0)})
      -- no target-class row in the batch: no projection term, only loss1
      local hn = ds.randn(2, 4)
      local none = L.paper(hn, ds.tensor{1, 3}, mu, a, b, targets, l1, l2)
      local want = (W.pull(hn, ds.tensor{1, 3}, mu, nil, 4) * 2 - W.push(hn, ds.tensor{1, 3}, mu, nil, 4)) * (l1 / 2)
      assert.near(want:item(), none:item(), 1e-5)
    end)

    it("the fused reference loss equals its terms on wide layers (the vector loops and their tails)", function()
      for _, m in ipairs {7, 8, 31, 33, 77, 512} do
        ds.manual_seed(m)
        local labels = {}
        for i = 1, 64 do labels[i] = (i * 7) % 10 end
        local h, y, c = ds.rand(64, m), ds.tensor(labels), ds.randn(10, m) * (1 / math.sqrt(m))
        local a, b = ds.randn(m, 32), (ds.rand(2, 32) - 0.5):sign() * 0.5 + 0.5
        local v, gh, gc = ds.core.watermark.reference_loss(h, y, c, a, b, {0, 3}, 0.01, 0.02)
        local pv, pgh, pgc = ds.core.testing.wm_pull(h, y, c, nil, 10)
        local sv, sgc = ds.core.testing.wm_separation(c, y)
        local nv, ngc = ds.core.testing.wm_unit_norm(c)
        local jv, jgc = ds.core.testing.wm_projection(c:index_select({1, 4}), a, b)
        local want = 0.01 * (pv + sv + nv) + 0.02 * jv
        assert.near(want, v:item(), 1e-5 * math.abs(want))
        assert.tensor_near(pgh * 0.01, gh, 1e-6)
        local want_gc = (pgc + sgc + ngc) * 0.01 + ds.core.ops.index_add(c, {1, 4}, jgc) * 0.02
        assert.tensor_near(want_gc, gc, 1e-5)
      end
    end)

    it("compute the reference formulas", function()
      local h, c, y = ds.tensor{{1, 2}, {3, 4}}, ds.tensor{{0, 0}, {1, 1}}, ds.tensor{0, 1}
      assert.near(0.5 * (5 + 13), W.pull(h, y, c, nil, 2):item(), 1e-5)
      -- separation: c_0 . c_1 = 0, ||c_0 - c_1||^2 = 2 -> (0 - 1) * 2 for both samples, averaged
      assert.near(-2, W.separation(c, y):item(), 1e-6)
      assert.near(1 + 1, W.unit_norm(c):item(), 1e-6) -- |1 - 0| + |1 - 2|
      local z = 0.5 -- projection of one mean on one bit: BCE(1, sigmoid(0.5))
      assert.near(math.log(1 + math.exp(-z)), W.projection(ds.tensor{{0.5}}, ds.tensor{{1}}, ds.tensor{{1}}):item(), 1e-6)
      -- the capped push: h at its own centre is pushed by exactly the centres' distance
      assert.near(8, W.push(ds.tensor{{0, 0}}, ds.tensor{0}, ds.tensor{{0, 0}, {2, 2}}, nil, 2):item(), 1e-6)
      assert.near(8, W.push(ds.tensor{{-5, -5}}, ds.tensor{0}, ds.tensor{{0, 0}, {2, 2}}, nil, 2):item(), 1e-6)
    end)

    it("name what is wrong with their inputs", function()
      local h, y, c = ds.randn(4, 3), ds.tensor{0, 1, 5, 1}, ds.randn(6, 3)
      local a, b = ds.randn(3, 8), ds.zeros(1, 8)
      local ref = ds.core.watermark.reference_loss
      assert.has_error(function() ref(h, ds.tensor{0, 1, 2, 9}, c, a, b, {0}, 1, 1) end,
        "wm_reference_loss: label 9 at row 4 is not a class id in 0..5")
      assert.has_error(function() ref(h, y, c, a, b, {7}, 1, 1) end,
        "wm_reference_loss: target class 7 has no centre row (0..5)")
      assert.has_error(function() ref(h, y, c, ds.randn(4, 8), b, {0}, 1, 1) end,
        "wm_reference_loss: size mismatch, activations: 4x3, labels: 4, A: 4x8, bits: 1x8 (want B x M, B, M x N, s x N)")
      assert.has_error(function() ref(h:t():contiguous():t(), y, c, a, b, {0}, 1, 1) end,
        "wm_reference_loss: the activations and the labels must be contiguous (:contiguous())")
      assert.has_error(function() ref(h, y, ds.randn(6, 2), a, b, {0}, 1, 1) end,
        "wm_reference_loss: centres 6x2 do not fit activations 4x3 (want a contiguous K x 3 with K >= 2)")
      assert.has_error(function() ds.core.testing.wm_pull(h, y, ds.randn(2, 3), nil, 8) end,
        "wm_pull: 8 classes but 2 centre rows (pass a class map)")
    end)
  end)

  it("the regularizer inside ds.train: the same step as its loss added by hand", function()
    local syn = H.synthetic(64, 20, 4, 5)
    for _, variant in ipairs {"reference", "paper"} do
      local function run(by_hand)
        ds.manual_seed(3)
        local m = ds.models.mlp{20, 32, 24, 4}
        local key = wb.keygen{model = m, layer = "fc2", data = syn, bits = 8, targets = {1}, seed = 2,
          variant = variant, keys_per_class = 8}
        local reg = key:regularizer()
        local opt = ds.optim.SGD(m:parameters(), {lr = 0.1})
        if by_hand then
          local layer = m:layer("fc2")
          local logits
          local cap = m:with_capture({layer}, function() logits = m(syn.x) end)
          local loss = ds.nn.cross_entropy(logits, syn.y) + reg.loss({x = syn.x, y = syn.y}, {fc2 = cap[layer]})
          loss:backward()
          opt:step()
          reg.optimizer:step()
        else
          ds.train{model = m, data = syn, epochs = 1, batch_size = 64, shuffle = false, optimizer = opt,
            regularizers = {reg}, progress = false}
        end
        local out = {}
        for _, p in ipairs(m:parameters()) do out[#out + 1] = p:totable() end
        out[#out + 1] = (variant == "reference" and key.centres or key.mu):totable()
        return out
      end
      assert.same(run(true), run(false))
    end
  end)

  it("gives exact binomial p-values", function()
    assert.near(2 ^ -16, stats.binom_sf(16, 16, 0.5), 1e-18)
    assert.near(1, stats.binom_sf(0, 16, 0.5), 1e-12)
    assert.near(17 / 2 ^ 16, stats.binom_sf(15, 16, 0.5), 1e-15)
    assert.near(0.5, stats.binom_cdf(7, 15, 0.5), 1e-12)
  end)

  it("makes the same key from the same seed and another from another seed", function()
    local m = small_model(20, 4)
    local k1 = wb.keygen{model = m, layer = "fc2", data = data, bits = 16, ntargets = 2, seed = 11, keys_per_class = 30}
    local k2 = wb.keygen{model = m, layer = "fc2", data = data, bits = 16, ntargets = 2, seed = 11, keys_per_class = 30}
    local k3 = wb.keygen{model = m, layer = "fc2", data = data, bits = 16, ntargets = 2, seed = 12, keys_per_class = 30}
    assert.same(k1.b:totable(), k2.b:totable())
    assert.same(k1.A:totable(), k2.A:totable())
    assert.same(k1.targets, k2.targets)
    assert.same(k1.trigger_y:totable(), k2.trigger_y:totable())
    assert.are_not.same(k1.A:totable(), k3.A:totable())
    -- balanced bits, 8 per target
    for _, row in ipairs(k1.b:totable()) do
      local ones = 0
      for _, v in ipairs(row) do ones = ones + v end
      assert.equal(4, ones)
    end
    -- keygen leaves the global generator where it was
    ds.manual_seed(5); local a = ds.rand(1):item()
    ds.manual_seed(5); wb.keygen{model = m, layer = "fc2", data = data, seed = 1}; local b = ds.rand(1):item()
    assert.equal(a, b)
  end)

  for _, variant in ipairs {"paper"} do
    it("embeds and extracts 16 bits in 2 target classes (" .. variant .. " variant)", function()
      ds.manual_seed(21)
      local marked = small_model(20, 4)
      local key = wb.keygen{model = marked, layer = "fc2", data = data, bits = 16, targets = {1, 3}, variant = variant,
        seed = 5, keys_per_class = 100}
      fit(marked, data, key)
      local r = wb.extract(marked, key)
      assert.equal(0, r.ber)
      assert.equal(16, r.matches)
      assert.near(2 ^ -16, r.p_value, 1e-18)
      assert.is_true(r.detected)
      assert.equal(wb.bitstring(key.b), wb.bitstring(r.bits))
      assert.is_string(key.model_hash)
      assert.is_true(ds.evaluate(marked, data).accuracy > 0.9)
      -- an unmarked model of the same architecture is not detected
      ds.manual_seed(22)
      local plain = small_model(20, 4)
      fit(plain, data)
      local n = wb.extract(plain, key)
      assert.is_false(n.detected)
      assert.is_true(n.p_value > 1e-3)
    end)
  end

  it("embeds stably with 1, 2 and 4 target classes (paper variant, default strengths)", function()
    for _, targets in ipairs {{2}, {0, 3}, {0, 1, 2, 3}} do
      ds.manual_seed(31)
      local marked = small_model(20, 4)
      local key = wb.keygen{model = marked, layer = "fc2", data = data, bits = 32, targets = targets, seed = 6}
      local rows = fit(marked, data, key)
      local r = wb.extract(marked, key)
      assert.equal(0, r.ber, #targets .. " target(s)")
      assert.is_true(ds.evaluate(marked, data).accuracy > 0.9, #targets .. " target(s)")
      for _, row in ipairs(rows) do assert.is_true(row.loss == row.loss and row.loss < 10, "loss " .. row.loss) end
    end
  end)

  it("embeds with the reference variant: the centres carry the bits, the activations follow", function()
    ds.manual_seed(21)
    local marked = small_model(20, 4)
    local key = wb.keygen{model = marked, layer = "fc2", data = data, bits = 16, targets = {1, 3}, variant = "reference",
      seed = 5, keys_per_class = 100}
    wb.embed{model = marked, key = key, data = data, epochs = 40, batch_size = 32, progress = false,
      optimizer = ds.optim.Adam(marked:parameters(), {lr = 1e-3})}
    local ct = key.centres:index_select({2, 4})
    assert.equal(1, ct:matmul(key.A):gt(0):eq(key.b):mean():item())
    local r = wb.extract(marked, key)
    assert.is_true(r.ber <= 0.125, "BER " .. r.ber)
    assert.is_true(r.p_value < 1e-3)
    -- (on Fashion-MNIST with the paper MLP it reaches BER 0: examples/whitebox.lua)
  end)

  it("saves a self-contained key; extraction needs only the model and key files", function()
    local dir = H.tmpdir()
    ds.manual_seed(31)
    local m = small_model(20, 4)
    local key = wb.keygen{model = m, layer = "fc2", data = data, bits = 8, targets = {2}, seed = 3, keys_per_class = 50}
    fit(m, data, key, 4)
    m:save(dir .. "/model.safetensors")
    key:save(dir .. "/key.safetensors")
    local k2 = wb.load(dir .. "/key.safetensors")
    assert.same(key.targets, k2.targets)
    assert.equal("integer", math.type(k2.targets[1])) -- printed as "class 2", not "2.0"
    assert.matches("in class 2,", tostring(k2), 1, true)
    assert.equal(key.model_hash, k2.model_hash)
    assert.equal("fc2", k2.layer)
    local m2 = small_model(20, 4):load(dir .. "/model.safetensors")
    assert.same(wb.extract(m, key).bits, wb.extract(m2, k2).bits)
    -- the key is not inside the model file
    local tensors = ds.load(dir .. "/model.safetensors")
    assert.is_nil(tensors.A)
  end)

  describe("bad input", function()
    local m = small_model(20, 4)

    it("rejects a missing layer, an absent target and bad bits", function()
      assert.has_error(function() wb.keygen{model = m, layer = "fc9", data = data} end,
        "whitebox.keygen: layer: no layer named 'fc9' (layers: flatten, fc1, fc2, fc3)")
      local three = data:where_class(0, 1, 2)
      three.classes = 4
      assert.has_error(function() wb.keygen{model = m, layer = "fc2", data = three, targets = {3}} end,
        "whitebox.keygen: target class 3 has no samples in synthetic")
      assert.has_error(function() wb.keygen{model = m, layer = "fc2", data = data, targets = {7}} end,
        "whitebox.keygen: target 7 is not a class id in 0..3")
      assert.has_error(function() wb.keygen{model = m, layer = "fc2", data = data, bits = 15, ntargets = 2} end,
        "whitebox.keygen: bits (15) must be a positive multiple of the number of targets (2)")
      assert.has_error(function() wb.keygen{model = m, layer = "fc2", data = data, bits = 4, b = "01x1"} end,
        "whitebox.keygen: bit string may only hold 0 and 1")
      assert.has_error(function() wb.keygen{model = m, layer = "fc2", data = data, variant = "v3"} end,
        'whitebox.keygen: variant must be "paper" or "reference", got v3')
    end)

    it("refuses a key whose layer width does not match the model", function()
      local key = wb.keygen{model = m, layer = "fc2", data = data, bits = 8, seed = 1, keys_per_class = 10}
      local other = ds.models.mlp{20, 48, 32, 4}
      assert.has_error(function() wb.extract(other, key) end,
        "whitebox: the key expects layer fc2 of width 48, the model's layer has width 32")
      local no_layer = ds.models.mlp{20, 48, 4}
      assert.has_error(function() wb.extract(no_layer, key) end)
    end)

    it("refuses tampered, truncated and foreign key files", function()
      local dir = H.tmpdir()
      local key = wb.keygen{model = m, layer = "fc2", data = data, bits = 8, seed = 1, keys_per_class = 10}
      local p = dir .. "/k.safetensors"
      key:save(p)
      local f = assert(io.open(p, "rb")); local s = f:read("a"); f:close()
      -- flip one byte of the data section
      local t = s:sub(1, #s - 10) .. string.char((s:byte(#s - 9) + 1) % 256) .. s:sub(#s - 8)
      local g = assert(io.open(p, "wb")); g:write(t); g:close()
      assert.has_error(function() wb.load(p) end,
        p .. ": the key's SHA-256 does not match its content: the file was modified or corrupted")
      g = assert(io.open(p, "wb")); g:write(s:sub(1, #s // 2)); g:close()
      assert.has_error(function() wb.load(p) end)
      ds.save(p, {a = ds.ones(1)}, {format = "deepsigns-model"})
      assert.has_error(function() wb.load(p) end, p .. ": not a deepsigns-wb-key file (format: deepsigns-model)")
    end)
  end)
end)
