local H = require "helper"
local ds = H.ds
local wb = ds.watermark.whitebox
local AT = ds.attacks

local data = H.synthetic(1200, 20, 4, 3)

-- a marked model and its key (paper variant, 16 bits in 2 classes)
local function marked_model()
  ds.manual_seed(21)
  local m = ds.models.mlp{20, 48, 48, 4}
  local key = wb.keygen{model = m, layer = "fc2", data = data, bits = 16, targets = {1, 3}, variant = "paper", seed = 5,
    keys_per_class = 100}
  wb.embed{model = m, key = key, data = data, epochs = 8, batch_size = 64, progress = false,
    optimizer = ds.optim.Adam(m:parameters(), {lr = 3e-3})}
  return m, key
end

local function same_weights(a, b)
  for name, p in a:named_parameters() do
    if ds.core.tensor.to_bytes(p) ~= ds.core.tensor.to_bytes(b:state_dict()[name]) then return false end
  end
  return true
end

describe("attacks", function()
  local model, key = marked_model()
  local original = model:clone()

  after_each(function() assert.is_true(same_weights(model, original), "an attack changed its input model") end)

  it("prunes the smallest weights per layer and globally", function()
    local p = AT.prune(model, {rate = 0.5})
    for name, t in p:named_parameters() do
      if t:dim() == 2 then
        local zeros = t:eq(0):sum():item()
        assert.near(0.5 * t:numel(), zeros, 1)
      end
    end
    local g = AT.prune(model, {rate = 0.9, scope = "global"})
    local z, n = 0, 0
    for _, t in ipairs(g:parameters()) do if t:dim() == 2 then z = z + t:eq(0):sum():item(); n = n + t:numel() end end
    assert.near(0.9, z / n, 0.01)
    local b = AT.prune(model, {rate = 0.999, biases = true})
    assert.is_true(b:layer("fc1").bias:eq(0):sum():item() >= 47)
  end)

  it("keeps the white-box mark after 50% pruning", function()
    assert.equal(0, wb.extract(AT.prune(model, {rate = 0.5}), key).ber)
  end)

  it("fine-tunes in the four modes", function()
    for _, mode in ipairs {"FTLL", "FTAL", "RTLL", "RTAL"} do
      local f = AT.finetune(model, data, {mode = mode, epochs = 1, lr = 1e-3, fraction = 0.5})
      local changed_first = ds.core.tensor.to_bytes(f:layer("fc1").weight) ~= ds.core.tensor.to_bytes(model:layer("fc1").weight)
      local changed_last = ds.core.tensor.to_bytes(f:layer("fc3").weight) ~= ds.core.tensor.to_bytes(model:layer("fc3").weight)
      assert.is_true(changed_last, mode)
      assert.equal(mode:sub(3) == "AL", changed_first, mode)
    end
  end)

  it("quantizes to k bits and adds weight noise", function()
    local q = AT.quantize(model, {bits = 4})
    local w = q:layer("fc1").weight
    local levels = {}
    for _, v in ipairs(ds.core.tensor.flat(w)) do levels[string.format("%.6f", v == 0 and 0 or v)] = true end
    local count = 0
    for _ in pairs(levels) do count = count + 1 end
    assert.is_true(count <= 15)
    local n = AT.noise(model, {sigma = 0.5})
    local d = (n:layer("fc2").weight - model:layer("fc2").weight)
    local _, sd = ds.core.ops.moments(model:layer("fc2").weight)
    local _, dsd = ds.core.ops.moments(d)
    assert.near(0.5 * sd, dsd, 0.1 * sd)
  end)

  it("permutes and rescales units without changing the function; realignment recovers the mark", function()
    local p = AT.permute(model, {layer = "fc2", seed = 9, scale = true})
    local x = data.x:narrow(1, 1, 50)
    assert.tensor_near(model(x), p(x), 1e-4)
    local plain = AT.permute(model, {layer = "fc2", seed = 9})
    assert.equal(ds.evaluate(model, data).accuracy, ds.evaluate(plain, data).accuracy)
    assert.is_true(wb.extract(p, key).ber > 0.2)
    local r = wb.extract(p, key, {realign = true})
    assert.equal(0, r.ber)
    assert.is_true(r.detected)
  end)

  it("fine-prunes the least active units and holds them at zero through the fine-tuning", function()
    local f = AT.fineprune(model, data, {layer = "fc2", rate = 0.5, epochs = 3})
    assert.equal(24, f.pruned_units)
    local zero_rows, bias = 0, f:layer("fc2").bias:totable()
    for i, row in ipairs(f:layer("fc2").weight:totable()) do
      local all = true
      for _, v in ipairs(row) do if v ~= 0 then all = false break end end
      if all then
        zero_rows = zero_rows + 1
        assert.equal(0, bias[i])
      end
    end
    assert.equal(24, zero_rows)
    -- the pruned units' outputs stay exactly 0 on any input
    local acts = f:activations(data.x:narrow(1, 1, 50), "fc2"):totable()
    local dead = 0
    for j = 1, 48 do
      local all = true
      for i = 1, 50 do if acts[i][j] ~= 0 then all = false end end
      if all then dead = dead + 1 end
    end
    assert.is_true(dead >= 24)
  end)

  it("retrains after pruning with the pruned weights held at exactly 0", function()
    local p = AT.prune(model, {rate = 0.8, retrain = {data = data, epochs = 2, lr = 1e-3}})
    local once = AT.prune(model, {rate = 0.8})
    for name, w in pairs(AT.sparsity(p)) do
      assert.is_true(w >= 0.799, name .. " " .. w) -- k = round(0.8 n) of each layer's n weights
      -- exactly the weights one-shot pruning zeroed are zero, and the others trained
      local a, b = w, AT.sparsity(once)[name]
      assert.near(b, a, 1e-9)
    end
    local wp, wo = p:layer("fc1").weight:totable(), once:layer("fc1").weight:totable()
    local moved = 0
    for i = 1, #wp do
      for j = 1, #wp[i] do
        assert.equal(wo[i][j] == 0, wp[i][j] == 0)
        if wp[i][j] ~= wo[i][j] then moved = moved + 1 end
      end
    end
    assert.is_true(moved > 0)
    -- the optimiser's mask: moments and weight decay never move a held entry
    for _, make in ipairs {function(ps) return ds.optim.Adam(ps, {lr = 0.1, weight_decay = 0.1}) end,
      function(ps) return ds.optim.AdamW(ps, {lr = 0.1}) end,
      function(ps) return ds.optim.SGD(ps, {lr = 0.1, momentum = 0.9, weight_decay = 0.1}) end,
      function(ps) return ds.optim.RMSprop(ps, {lr = 0.1, weight_decay = 0.1}) end} do
      local w = ds.randn(3, 4):requires_grad()
      local mask = ds.tensor{{1, 0, 1, 1}, {0, 0, 1, 1}, {1, 1, 1, 0}}
      local opt = make({w})
      opt:set_mask(w, mask)
      for _ = 1, 5 do
        opt:zero_grad()
        ;(w * ds.randn(3, 4)):sum():backward()
        opt:step()
      end
      assert.same((w * mask):totable(), w:totable())
      for _, st in pairs(opt.state[1]) do
        if ds.is_tensor(st) then assert.equal(0, (st * (1 - mask)):abs():sum():item()) end
      end
    end
  end)

  it("distils into a fresh student and overwrites a mark", function()
    ds.manual_seed(4)
    local s = AT.distill(model, ds.models.mlp{20, 32, 4}, data, {T = 3, epochs = 3})
    assert.is_true(ds.evaluate(s, data).accuracy > 0.8)
    local attacked, akey = AT.overwrite(model, data, {scheme = "whitebox", key = key, seed = 77, epochs = 8})
    assert.equal(0, wb.extract(attacked, akey).ber)
    assert.are_not.same(key.A:totable(), akey.A:totable())
  end)

  it("checks its arguments", function()
    assert.has_error(function() AT.prune(model, {rate = 2}) end, "attacks.prune: rate must be a number in [0, 1], got 2")
    assert.has_error(function() AT.finetune(model, data, {mode = "XX"}) end,
      "attacks.finetune: mode must be FTLL, FTAL, RTLL or RTAL, got XX")
    assert.has_error(function() AT.permute(model, {}) end, "attacks.permute: option 'layer' is required")
    assert.has_error(function() AT.quantize(model, {bits = 1}) end, "attacks.quantize: bits must be an integer in 2..16")
    assert.has_error(function() AT.prune(model, {rate = 0.5, retrian = {}}) end,
      "attacks.prune: unknown option 'retrian' (did you mean 'retrain'?) (options: biases, rate, retrain, scope)")
    -- an optimiser made beforehand holds the original model's tensors, not the attacked copy's
    assert.has_error(function()
      AT.prune(model, {rate = 0.5, retrain = {data = data, optimizer = ds.optim.Adam(model:parameters())}})
    end)
    local other = ds.models.mlp{20, 16, 4}
    local ok, err = pcall(AT.prune, model, {rate = 0.5, retrain = {data = data,
      optimizer = function() return ds.optim.Adam(other:parameters()) end}})
    assert.is_false(ok)
    assert.matches("the optimizer function's optimiser holds", err, 1, true)
    assert.has_error(function() AT.finetune(model, data:subset({}), {}) end)
    ok, err = pcall(AT.finetune, model, data:subset({}), {})
    assert.matches("attacks.finetune: the attacker's data set synthetic is empty", err, 1, true)
    local w = ds.randn(2, 2):requires_grad()
    local opt = ds.optim.SGD({w}, {lr = 0.1})
    assert.has_error(function() opt:set_mask(w, ds.ones(3)) end,
      "optim.SGD:set_mask: a mask of shape 3 does not fit parameter 1 of shape 2x2")
    assert.has_error(function() opt:set_mask(ds.ones(2, 2), ds.ones(2, 2)) end,
      "optim.SGD:set_mask: the tensor is not one of this optimiser's parameters")
  end)

  describe("evaluation", function()
    it("returns one row per strength with a verdict per mark and both detection rules", function()
      local rows = ds.robustness{model = model, test = data, attack = "prune", strengths = {0.3, 0.999}, wb_key = key,
        max_drop = 5}
      assert.equal(2, #rows)
      assert.equal("prune", rows[1].attack)
      assert.equal(0, rows[1].ber)
      assert.is_true(rows[1].wb_detected and rows[1].wb_detected_paper)
      assert.is_false(rows[1].wb_attack_success)
      assert.is_false(rows[1].wb_attack_success_paper)
      assert.is_nil(rows[1].bb_owned)
      assert.is_number(rows[2].accuracy_drop)
      assert.equal(not rows[2].wb_detected and rows[2].accuracy_drop <= 5, rows[2].wb_attack_success)
      assert.equal(rows[2].ber > 0 and rows[2].accuracy_drop <= 5, rows[2].wb_attack_success_paper)
      -- one mark lost and the other kept: each row says so separately
      local row = ds.robustness_verdicts({accuracy_drop = 1, wb_detected = true, wb_detected_paper = false, bb_owned = false})
      assert.is_false(row.wb_attack_success)
      assert.is_true(row.wb_attack_success_paper)
      assert.is_true(row.bb_attack_success)
    end)

    it("prints the overwriting cross matrix", function()
      ds.manual_seed(8)
      local unmarked = ds.models.mlp{20, 48, 48, 4}
      ds.train{model = unmarked, data = data, epochs = 3, progress = false}
      local matrix = ds.robustness_matrix and nil or require("deepsigns.robustness").overwrite_matrix{model = model,
        data = data, unmarked = unmarked, wb_key = key, options = {seed = 77, epochs = 8}}
      assert.equal(6, #matrix)
      assert.equal("owner key", matrix[1].key)
      assert.equal("attacked", matrix[1].model)
      assert.is_true(matrix[2].detected) -- owner key on the original
      assert.is_true(matrix[4].detected) -- attacker key on the attacked model
      assert.is_false(matrix[5].detected) -- attacker key on the owner's original
      assert.matches("owner key", require("deepsigns.robustness").format_matrix(matrix))
    end)
  end)

  describe("sweeps", function()
    local dir = H.tmpdir()
    model:save(dir .. "/model.safetensors")
    key:save(dir .. "/key.safetensors")
    local f = assert(io.open(dir .. "/setup.lua", "w"))
    f:write(string.format([[
package.path = %q .. ";" .. package.path
local H = require "helper"
return function()
  local ds = require "deepsigns"
  local data = H.synthetic(1200, 20, 4, 3)
  return {model = ds.models.mlp{20, 48, 48, 4}:load(%q), test = data, data = data,
    wb_key = ds.watermark.whitebox.load(%q)}
end
]], H.root .. "/spec/?.lua", dir .. "/model.safetensors", dir .. "/key.safetensors"))
    f:close()
    local function spec(out, extra)
      local s = {setup = dir .. "/setup.lua", out = out, progress = false,
        attacks = {{name = "prune", strengths = {0.2, 0.6, 0.95}}, {name = "noise", strengths = {0.1, 1}}}, seeds = {1, 2}}
      for k, v in pairs(extra or {}) do s[k] = v end
      return s
    end
    local function strip(rows)
      local out = {}
      for i, r in ipairs(rows) do out[i] = {r.id, r.accuracy, r.ber, r.wb_p_value} end
      return out
    end

    it("runs in process, resumes without redoing rows, and matches worker processes and GNU parallel", function()
      local out = dir .. "/a.jsonl"
      local rows = ds.sweep(spec(out))
      assert.equal(10, #rows)
      -- a sweep "killed" after 4 rows: keep the first 4 rows, then restart
      local kept = {}
      local fh = io.open(out)
      for line in fh:lines() do if #kept < 4 then kept[#kept + 1] = line end end
      fh:close()
      local partial = dir .. "/b.jsonl"
      fh = io.open(partial, "w"); fh:write(table.concat(kept, "\n") .. "\n"); fh:close()
      local ran, said = 0, {}
      local resumed = ds.sweep(spec(partial, {progress = true, log = function(m)
        said[#said + 1] = m
        if m:match("^sweep: %d+/10 done") then ran = ran + 1 end
      end}))
      assert.equal(6, ran)
      assert.matches("4 of 10 jobs already done, 6 to run", said[1], 1, true)
      assert.matches("^sweep: 10/10 done, %d+s elapsed %- ", said[#said])
      assert.same(strip(rows), strip(resumed))
      -- two worker processes
      local par = ds.sweep(spec(dir .. "/c.jsonl", {workers = 2}))
      assert.same(strip(rows), strip(par))
      -- the GNU parallel job list
      if os.execute("command -v parallel >/dev/null 2>&1") ~= true then
        pending("GNU parallel is not installed")
        return
      end
      local s = spec(dir .. "/d.jsonl", {mode = "jobs"})
      local files = ds.sweep(s)
      assert.is_true(os.execute("parallel -j 2 --will-cite < " .. files.jobs .. " >/dev/null 2>&1"))
      assert.is_true(os.execute(files.merge .. " >/dev/null"))
      local merged = ds.report.read_jsonl(dir .. "/d.jsonl")
      assert.same(strip(rows), strip(merged))
      local slurm = io.open(files.slurm):read("a")
      assert.matches("#SBATCH --array=1-10", slurm, 1, true)
      local csv = io.open(dir .. "/d.csv"):read("a")
      assert.matches("^attack,strength,seed,status,accuracy", csv)
    end)
  end)

  it("sweeps over several setups (schemes, bit counts)", function()
    local dir = H.tmpdir()
    model:save(dir .. "/m.safetensors")
    key:save(dir .. "/k.safetensors")
    local paths = {}
    for _, name in ipairs {"wb16", "bb"} do
      paths[name] = dir .. "/" .. name .. ".lua"
      local f = assert(io.open(paths[name], "w"))
      f:write(string.format([[
package.path = %q .. ";" .. package.path
local H = require "helper"
return function()
  local ds = require "deepsigns"
  local data = H.synthetic(1200, 20, 4, 3)
  local cfg = {model = ds.models.mlp{20, 48, 48, 4}:load(%q), test = data, data = data}
  if %q == "wb16" then cfg.wb_key = ds.watermark.whitebox.load(%q)
  else cfg.bb_key = ds.watermark.blackbox.Key{inputs = data.x:narrow(1, 1, 8), labels = data.y:narrow(1, 1, 8),
    K = 8, classes = 4, p = 0.05, input_shape = {20}} end
  return cfg
end
]], H.root .. "/spec/?.lua", dir .. "/m.safetensors", name, dir .. "/k.safetensors"))
      f:close()
    end
    local rows = ds.sweep{setups = {{name = "wb16", path = paths.wb16}, {name = "bb", path = paths.bb}},
      attacks = {{name = "prune", strengths = {0.1, 0.5}}}, out = dir .. "/s.jsonl", progress = false}
    assert.equal(4, #rows)
    assert.equal("attack=prune,seed=1,setup=wb16,strength=0.1", rows[1].id)
    assert.equal("wb16", rows[1].setup)
    assert.is_number(rows[1].ber)
    assert.equal("bb", rows[3].setup)
    assert.is_number(rows[3].mismatches)
  end)

  it("plots with gnuplot", function()
    if not ds.report.gnuplot_available() then pending("gnuplot is not installed") return end
    local dir = H.tmpdir()
    local rows = {{strength = 0.1, ber = 0, accuracy = 0.9}, {strength = 0.5, ber = 0.1, accuracy = 0.85}}
    local png, svg = ds.report.plot(rows, dir .. "/fig", {title = "pruning"})
    assert.is_not_nil(io.open(png))
    assert.matches("<svg", io.open(svg):read("a"))
  end)
end)
