local H = require "helper"
local ds = H.ds
local wb = ds.watermark.whitebox
local L = ds.watermark.losses
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

  describe("loss ops (gradient checks)", function()
    it("pull, push, separation, unit norm and projection", function()
      ds.manual_seed(4)
      local y = ds.tensor{0, 2, 1, 2, 0}
      H.gradcheck(function(h, c) return L.pull(h, y, c, nil, 3) end, {ds.randn(5, 4), ds.randn(3, 4)})
      local map = {1, 0, 2} -- classes 0 and 2 have centres rows 1 and 2
      H.gradcheck(function(h, c) return L.pull(h, y, c, map, 3) end, {ds.randn(5, 4), ds.randn(2, 4)})
      H.gradcheck(function(h) return L.push(h, y, ds.tensor{{0, 0, 0, 0}, {3, 3, 3, 3}}, map, 3) end, {ds.randn(5, 4)})
      H.gradcheck(function(c) return L.separation(c, y) end, {ds.randn(3, 4)})
      H.gradcheck(function(c) return L.unit_norm(c) end, {ds.randn(3, 4)})
      local a, b = ds.randn(4, 6), ds.tensor{{1, 0, 1, 1, 0, 0}, {0, 0, 1, 0, 1, 1}}
      H.gradcheck(function(m) return L.projection(m, a, b) end, {ds.randn(2, 4) * 0.3})
    end)

    it("each variant's fused regularizer: gradient checks and equal to its terms composed", function()
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
      local map = {2, 0, 1, 0} -- class 0 -> mean row 2, class 2 -> row 1
      local mu = ds.tensor{{0, 0, 0, 0}, {2, 2, 2, 2}}
      -- with respect to h (the means are held constant in the push term by design, so
      -- theirs is checked against the composed ops below); rows between the means keep
      -- every push below its cap, away from the cap's kink
      H.gradcheck(function(h) return L.paper(h, y, mu, a, b, map, l1, l2) end, {ds.randn(7, 4) * 0.3 + 1})

      -- the same values and gradients as the separate ops
      local function grads(f, h, c)
        h, c = h:clone():requires_grad(), c:clone():requires_grad()
        local v = f(h, c)
        v:backward()
        return v:item(), h.grad, c.grad
      end
      local h0, c0 = ds.randn(7, 4), ds.randn(4, 4)
      local fused = {grads(function(h, c) return L.reference(h, y, c, a, b, targets, l1, l2) end, h0, c0)}
      local composed = {grads(function(h, c)
        local ct, bt = c:index_select({3, 1}), b
        return (L.pull(h, y, c, nil, 4) + L.separation(c, y) + L.unit_norm(c)) * l1 + L.projection(ct, a, bt) * l2
      end, h0, c0)}
      assert.near(composed[1], fused[1], 1e-4 * math.abs(composed[1]))
      for i = 2, 3 do assert.is_true((fused[i] - composed[i]):abs():max():item() < 1e-4) end

      fused = {grads(function(h, m) return L.paper(h, y, m, a, b, map, l1, l2) end, h0, mu)}
      composed = {grads(function(h, m)
        local rows = {1, 2, 4, 5, 7} -- the target-class rows (classes 0 and 2), batch order
        local ht, yt = h:index_select(rows), ds.tensor{0, 2, 2, 0, 2}
        local loss = (L.pull(ht, yt, m, map, 4) * 2 - L.push(ht, yt, m, map, 4)) * (l1 / 7)
        -- mean row k for the class mapped to row k: class 2 first, then class 0
        local means = ds.cat({ht:index_select({2, 3, 5}):mean(1, true), ht:index_select({1, 4}):mean(1, true)}, 1)
        return loss + L.projection(means, a, b) * l2
      end, h0, mu)}
      assert.near(composed[1], fused[1], 1e-4 * math.abs(composed[1]))
      for i = 2, 3 do assert.is_true((fused[i] - composed[i]):abs():max():item() < 1e-4) end
      -- on a ReLU's output the pull's gradient is folded into the ReLU's backward: the
      -- same gradients as through a node that does not fold it, and gradient-checked
      local w = ds.randn(7, 4)
      local function through_relu(fold)
        local x, c = (h0 * 0.7):requires_grad(), c0:clone():requires_grad()
        local h = x:relu()
        if not fold then h = h * 1 end -- a multiply in between: the separate add
        local v = (h * w):sum() + L.reference(h, y, c, a, b, targets, l1, l2)
        v:backward()
        return x.grad, c.grad
      end
      local xf, cf = through_relu(true)
      local xs, cs = through_relu(false)
      assert.is_true((xf - xs):abs():max():item() < 1e-6)
      assert.is_true((cf - cs):abs():max():item() < 1e-6)
      H.gradcheck(function(x, c) return (x:relu() * w):sum() + L.reference(x:relu(), y, c, a, b, targets, l1, l2) end,
        {(ds.randn(7, 4) * 0.5):sign() * (ds.rand(7, 4) * 0.5 + 0.2), c5:narrow(1, 1, 4):clone()})
      H.gradcheck(function(x, c)
        local h = x:relu()
        return (h * w):sum() + L.reference(h, y, c, a, b, targets, l1, l2)
      end, {(ds.randn(7, 4) * 0.5):sign() * (ds.rand(7, 4) * 0.5 + 0.2), c5:narrow(1, 1, 4):clone()})
      assert.has_error(function() ds.core.wm_relu_pull_backward(ds.randn(7, 4), ds.randn(7, 3), y, c0, nil, 4, 1) end,
        "wm_relu_pull_backward: gradient 7x3 does not match activations 7x4")
      -- more classes than centre rows and no class map: an error, not a read past the centres
      for _, op in ipairs {"wm_pull", "wm_relu_pull_backward"} do
        local args = op == "wm_pull" and {ds.randn(4, 3), ds.tensor{0, 1, 5, 7}, ds.randn(2, 3), nil, 8}
          or {ds.randn(4, 3), ds.randn(4, 3), ds.tensor{0, 1, 5, 7}, ds.randn(2, 3), nil, 8, 1}
        assert.has_error(function() ds.core[op](table.unpack(args, 1, op == "wm_pull" and 5 or 7)) end,
          op .. ": 8 classes but 2 centre rows (pass a class map)")
      end

      -- a batch large enough for the pull and the centre terms to run side by side on two
      -- threads: the same loss and centre gradient as on one (up to float rounding)
      do
        local n_threads = ds.get_num_threads()
        local labels = {}
        for i = 1, 128 do labels[i] = (i - 1) % 10 end
        local hb, yb, cb = ds.rand(128, 512), ds.tensor(labels), ds.randn(10, 512) * 0.05
        local ab, bb = ds.randn(512, 32), (ds.rand(2, 32) - 0.5):sign() * 0.5 + 0.5
        ds.set_num_threads(2)
        local v2, g2 = ds.core.wm_reference_loss(hb, yb, cb, ab, bb, {0, 3}, 0.01, 0.01)
        ds.set_num_threads(1)
        local v1, g1 = ds.core.wm_reference_loss(hb, yb, cb, ab, bb, {0, 3}, 0.01, 0.01)
        assert.near(v1:item(), v2:item(), 1e-5 * math.abs(v1:item()))
        assert.is_true((g1 - g2):abs():max():item() < 1e-6)
        -- bad input on the two-thread path says what is wrong (a message set on the
        -- second thread would be lost: the inputs are checked before)
        labels[5] = 12
        local bad = ds.tensor(labels)
        for _, n in ipairs{1, 2} do
          ds.set_num_threads(n)
          local ok, err = pcall(ds.core.wm_reference_loss, hb, bad, cb, ab, bb, {0, 3}, 0.01, 0.01)
          assert.is_false(ok)
          assert.matches("label 12 at row 5 is not a class id in 0..9", err, 1, true)
        end
        ds.set_num_threads(n_threads)
      end

      -- no target-class row in the batch: zero loss and gradients
      local none = L.paper(ds.randn(2, 4), ds.tensor{1, 3}, mu, a, b, map, l1, l2)
      assert.equal(0, none:item())

      -- fan-out: the regularizer's gradient meets others on the same activations (the
      -- sums are made in place when a buffer is the backward's own), in either order
      local function fan(order)
        local x, c = h0:clone():requires_grad(), c0:clone():requires_grad()
        local h = x * 1
        local reg = L.reference(h, y, c, a, b, targets, l1, l2)
        local other = (h * h):sum() + (h * 3):sum()
        local total = order == 1 and reg + other or other + reg
        total:backward()
        return x.grad, c.grad
      end
      local gh_only
      do
        local h = h0:clone():requires_grad()
        L.reference(h, y, c0, a, b, targets, l1, l2):backward()
        gh_only = h.grad
      end
      local want = gh_only + h0 * 2 + 3
      for order = 1, 2 do
        local gx = fan(order)
        assert.is_true((gx - want):abs():max():item() < 1e-4, "order " .. order)
      end
      -- the paper variant adds its target rows the same way; a retained graph gives the
      -- same gradients on a second backward
      local hp = h0:clone():requires_grad()
      L.paper(hp, y, mu, a, b, map, l1, l2):backward()
      local want_p = hp.grad + h0 * 2
      local xp = h0:clone():requires_grad()
      local hh = xp * 1
      local total = (hh * hh):sum() + L.paper(hh, y, mu, a, b, map, l1, l2)
      total:backward(nil, true)
      assert.is_true((xp.grad - want_p):abs():max():item() < 1e-4)
      total:backward()
      assert.is_true((xp.grad - want_p * 2):abs():max():item() < 1e-4)
      -- a leaf's gradient is never summed in place: one held before a second backward keeps its value
      local x = h0:clone():requires_grad()
      L.reference(x, y, c0, a, b, targets, l1, l2):backward()
      local first = x.grad
      local snapshot = first:clone()
      L.reference(x, y, c0, a, b, targets, l1, l2):backward()
      assert.is_true((first - snapshot):abs():max():item() == 0)
      assert.is_true((x.grad - snapshot * 2):abs():max():item() < 1e-5)
    end)

    it("the reference loss made by the layer's ReLU equals the op's own", function()
      ds.manual_seed(21)
      local n_threads = ds.get_num_threads()
      -- the C op: relu(x) exactly, the pull's value and centre gradient as wm_pull's
      local labels = {}
      for i = 1, 128 do labels[i] = (i * 7) % 4 end
      local x, y, c = ds.randn(128, 256), ds.tensor(labels), ds.randn(4, 256) * 0.3
      for _, n in ipairs{1, 2} do
        ds.set_num_threads(n)
        local h, v, gc = ds.core.wm_relu_pull(x, y, c, nil, 4, 0.5)
        assert.equal(0, (h - x:relu()):abs():max():item())
        local want = ds.core.wm_pull(h, y, c, nil, 4):item()
        assert.near(want, v, 1e-5 * want)
        local _, gc_want = ds.core.wm_pull_backward(h, y, c, nil, 4, 0.5)
        assert.is_true((gc - gc_want):abs():max():item() < 1e-5 * gc_want:abs():max():item())
        labels[3] = 4
        local ok, err = pcall(ds.core.wm_relu_pull, x, ds.tensor(labels), c, nil, 4, 0.5)
        labels[3] = (3 * 7) % 4
        assert.is_false(ok)
        assert.matches("wm_relu_pull: label 4 at row 3 is not a class id in 0..3", err, 1, true)
        -- the whole reference loss made on the way: as wm_reference_loss on relu(x)
        local a, b = ds.randn(256, 12), (ds.rand(2, 12) - 0.5):sign() * 0.5 + 0.5
        local h2, v2, gc2 = ds.core.wm_relu_reference(x, y, c, a, b, {1, 3}, 0.05, 0.02)
        assert.equal(0, (h2 - x:relu()):abs():max():item())
        local v3, gc3 = ds.core.wm_reference_loss(h2, y, c, a, b, {1, 3}, 0.05, 0.02)
        assert.near(v3:item(), v2:item(), 1e-5 * math.abs(v3:item()))
        assert.is_true((gc2 - gc3):abs():max():item() < 1e-5 * gc3:abs():max():item())
        ok, err = pcall(ds.core.wm_relu_reference, x, y, c, a, b, {1, 7}, 0.05, 0.02)
        assert.is_false(ok)
        assert.matches("target class 7 has no centre row", err, 1, true)
        -- written over x (the layer's own output): the same results, x now holds relu(x)
        local xo = x:clone()
        local h4, v4, gc4 = ds.core.wm_relu_reference(xo, y, c, a, b, {1, 3}, 0.05, 0.02, true)
        assert.same(h2:totable(), h4:totable())
        assert.same(h2:totable(), xo:totable())
        assert.equal(v2:item(), v4:item())
        assert.same(gc2:totable(), gc4:totable())
        -- a transposed view of the activations: named as such, not as a size mismatch
        ok, err = pcall(ds.core.wm_relu_reference, x:t():contiguous():t(), y, c, a, b, {1, 3}, 0.05, 0.02, true)
        assert.is_false(ok)
        assert.matches("wm_reference_loss: the activations and the labels must be contiguous", err, 1, true)
        -- the folded backward written over the incoming gradient: the same values
        local gh = ds.randn(table.unpack(x:size()))
        local want_g = ds.core.wm_relu_pull_backward(x, gh, y, c, nil, 4, 0.3)
        local over = gh:clone()
        ds.core.wm_relu_pull_backward(x, over, y, c, nil, 4, 0.3, over)
        assert.same(want_g:totable(), over:totable())
      end
      -- through the regularizer: the same loss and gradients with the layer's ReLU making
      -- the loss (prepare, as ds.train does) as without
      local syn = H.synthetic(128, 20, 4, 5)
      local base = ds.models.mlp{20, 64, 256, 4}
      local key = wb.keygen{model = base, layer = "fc2", data = syn, bits = 16, targets = {1}, seed = 2,
        variant = "reference", keys_per_class = 8}
      local bx, by
      for xx, yy in syn:batches{size = 128, shuffle = false} do bx, by = xx, yy end
      local calls, relu_reference = 0, ds.core.wm_relu_reference
      ds.core.wm_relu_reference = function(...) calls = calls + 1; return relu_reference(...) end
      local function step(fused)
        local m = base:clone()
        local reg = key:regularizer()
        key.centres.grad = nil
        local layer = m:layer("fc2")
        local batch = {x = bx, y = by}
        if fused then reg.prepare(batch, {fc2 = layer}) end
        local logits
        local cap = m:with_capture({layer}, function() logits = m(bx) end)
        layer._relu_with = nil
        local rl = reg.loss(batch, {fc2 = cap[layer]})
        ;(ds.functional.cross_entropy(logits, by) + rl):backward()
        local out = {rl:item()}
        for _, p in ipairs(m:parameters()) do out[#out + 1] = p.grad:clone() end
        out[#out + 1] = key.centres.grad:clone()
        return out
      end
      for _, n in ipairs{1, 2} do
        ds.set_num_threads(n)
        calls = 0
        local plain = step(false)
        assert.equal(0, calls)
        local fused = step(true)
        assert.equal(1, calls)
        assert.near(plain[1], fused[1], 1e-5 * math.abs(plain[1]))
        for i = 2, #plain do
          local scale = math.max(plain[i]:abs():max():item(), 1e-6)
          assert.is_true((plain[i] - fused[i]):abs():max():item() < 1e-5 * scale, "gradient " .. (i - 1))
        end
      end
      -- ds.train asks for it (once per batch)
      calls = 0
      local m = base:clone()
      ds.train{model = m, data = syn, epochs = 1, batch_size = 32, regularizers = {key:regularizer()}, progress = false}
      assert.equal(4, calls)
      assert.is_nil(m:layer("fc2")._relu_with)
      ds.core.wm_relu_reference = relu_reference
      ds.set_num_threads(n_threads)
    end)

    it("separation on wide centres (the vector loops and their tails) equals its formula", function()
      -- (1/B) sum_i (c_y . c_n - 1) ||c_y - c_n||^2, n the nearest other centre of y, and its
      -- gradient with the nearest held fixed, in Lua doubles
      for _, m in ipairs {7, 8, 31, 33, 45, 77, 512} do
        ds.manual_seed(m)
        local k = 5
        local c = ds.randn(k, m) * (1 / math.sqrt(m))
        local y = ds.tensor{0, 1, 1, 3, 4, 4, 4, 2, 0}
        local ct, yt, b = c:totable(), y:totable(), 9
        local function d2(u, v) local s = 0; for j = 1, m do s = s + (ct[u][j] - ct[v][j]) ^ 2 end; return s end
        local function dotp(u, v) local s = 0; for j = 1, m do s = s + ct[u][j] * ct[v][j] end; return s end
        local near = {}
        for u = 1, k do
          local best = math.huge
          for v = 1, k do if v ~= u and d2(u, v) < best then best, near[u] = d2(u, v), v end end
        end
        local value, grad = 0, {}
        for u = 1, k do grad[u] = {}; for j = 1, m do grad[u][j] = 0 end end
        for i = 1, b do
          local u = yt[i] + 1
          local v, s, d = near[u], dotp(u, near[u]), d2(u, near[u])
          value = value + (s - 1) * d / b
          for j = 1, m do
            local diff = ct[u][j] - ct[v][j]
            grad[u][j] = grad[u][j] + (ct[v][j] * d + (s - 1) * 2 * diff) / b
            grad[v][j] = grad[v][j] + (ct[u][j] * d - (s - 1) * 2 * diff) / b
          end
        end
        assert.near(value, L.separation(c, y):item(), 1e-5 * math.max(1, math.abs(value)))
        local cg = c:clone():requires_grad()
        L.separation(cg, y):backward()
        local got = cg.grad:totable()
        for u = 1, k do
          for j = 1, m do assert.near(grad[u][j], got[u][j], 1e-5) end
        end
      end
    end)

    it("compute the reference formulas", function()
      local h, c, y = ds.tensor{{1, 2}, {3, 4}}, ds.tensor{{0, 0}, {1, 1}}, ds.tensor{0, 1}
      assert.near(0.5 * (5 + 13), L.pull(h, y, c, nil, 2):item(), 1e-5)
      -- L2: c_0 . c_1 = 0, ||c_0 - c_1||^2 = 2 -> (0 - 1) * 2 for both samples, averaged
      assert.near(-2, L.separation(c, y):item(), 1e-6)
      assert.near(1 + 1, L.unit_norm(c):item(), 1e-6) -- |1 - 0| + |1 - 2|
      local z = 0.5 -- projection of one mean on one bit: BCE(1, sigmoid(0.5))
      assert.near(math.log(1 + math.exp(-z)), L.projection(ds.tensor{{0.5}}, ds.tensor{{1}}, ds.tensor{{1}}):item(), 1e-6)
      -- the capped push: h at its own centre is pushed by exactly the centres' distance
      assert.near(8, L.push(ds.tensor{{0, 0}}, ds.tensor{0}, ds.tensor{{0, 0}, {2, 2}}, nil, 2):item(), 1e-6)
      assert.near(8, L.push(ds.tensor{{-5, -5}}, ds.tensor{0}, ds.tensor{{0, 0}, {2, 2}}, nil, 2):item(), 1e-6)
    end)
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

  describe("the reference regularizer inside ds.train (its direct path)", function()
    local nn = ds.nn
    local class = require "deepsigns.class"
    -- fc2 (16 -> 16, ReLU) applied `uses` times in a row; with side = true its output
    -- leads nowhere (the logits come from fc1's)
    local Net = class("spec.TwiceNet", nn.Module)
    function Net:__init(uses, side)
      nn.Module.__init(self)
      self.uses, self.side = uses, side
      self.fc1 = self:add_child("fc1", nn.Linear(20, 16, {activation = "relu"}):named("fc1"))
      self.fc2 = self:add_child("fc2", nn.Linear(16, 16, {activation = "relu"}):named("fc2"))
      self.out = self:add_child("out", nn.Linear(16, 4):named("out"))
    end
    function Net:forward(x)
      local h = self.fc1(x)
      local g = h
      for _ = 1, self.uses do g = self.fc2(g) end
      return self.out(self.side and h or g)
    end
    local data = H.synthetic(96, 20, 4, 7)

    -- a key on a fresh copy of the same model and seed: two trainings never share centres
    local function train_with(uses, direct, side, uses_in_training)
      ds.manual_seed(4)
      local m = Net(uses, side)
      local key = wb.keygen{model = m, layer = "fc2", data = data, bits = 8, targets = {1}, seed = 5,
        variant = "reference", keys_per_class = 6}
      m.uses = uses_in_training or uses
      local reg = key:regularizer()
      local r = reg
      if not direct then -- the same regularizer, asked for its graph node as a hand-written loop would
        r = {name = reg.name, layers = reg.layers, optimizer = reg.optimizer, loss = reg.loss,
          prepare = function(batch, modules) reg.prepare(batch, modules) end}
      end
      ds.manual_seed(6)
      local h = ds.train{model = m, data = data, epochs = 2, batch_size = 32, regularizers = {r}, progress = false}
      return m, key, h
    end

    for _, uses in ipairs {1, 2} do
      it("gives the same bits as its graph node, the layer used " .. uses .. " time(s) per forward pass", function()
        local m1, k1, h1 = train_with(uses, true)
        local m2, k2, h2 = train_with(uses, false)
        for i, p in ipairs(m1:parameters()) do assert.same(m2:parameters()[i]:totable(), p:totable()) end
        assert.same(k2.centres:totable(), k1.centres:totable())
        assert.equal(h2[2].regularizers.watermark, h1[2].regularizers.watermark)
        assert.is_true(h1[2].regularizers.watermark > 0)
      end)
    end

    it("stops with a clear error when the layer's output does not lead to the loss, or it did not run", function()
      local ok, err = pcall(train_with, 1, true, true)
      assert.is_false(ok)
      assert.matches("did not reach layer fc2", tostring(err))
      ok, err = pcall(train_with, 1, true, false, 0)
      assert.is_false(ok)
      assert.matches("layer fc2 did not run in this forward pass", tostring(err))
    end)
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
        'whitebox.keygen: variant must be "reference" or "paper", got v3')
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
