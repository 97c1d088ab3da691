-- make bench: the performance suite. Prints a table and writes results/bench.json.
-- Each figure is measured in this run, beside its reference (raw sgemm, plain training).
-- Run: build/bin/deepsigns examples/bench/run.lua [--quick] [--out results]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local cjson = require "cjson"
local opts = require("args")(arg, {out = "results"})
local core = ds.core
local results, lines = {}, {}

-- target: ">= 95% of raw" (value / reference), ">= N", "<= N", "< N"; met is recorded
-- with the result, and the summary at the end says by how much a missed one is short.
local function target_met(value, ref, target)
  if not target then return nil end
  local pct = target:match("^>= (%d+)%% of raw$")
  if pct then return value / ref >= tonumber(pct) / 100, value / ref * 100, tonumber(pct), "% of raw" end
  local op, limit = target:match("^([<>]=?) ([%d.]+)")
  limit = tonumber(limit)
  local ok = (op == ">=" and value >= limit) or (op == "<=" and value <= limit) or (op == "<" and value < limit)
    or (op == ">" and value > limit)
  return ok, value, limit, ""
end

-- se: the value's standard error, where the measurement gives one (NaN: none)
local function record(name, value, unit, ref, target, bound, se)
  if se ~= se then se = nil end -- JSON has no NaN
  local met = target_met(value, ref, target)
  results[#results + 1] = {name = name, value = value, unit = unit, reference = ref, target = target, met = met,
    bound = bound, se = se}
  local line = string.format("%-44s %12.1f %-10s", name, value, unit)
  if ref then line = line .. string.format("  (reference %.1f)", ref) end
  if se then line = line .. string.format("  (+- %.1f se)", se) end
  if target then line = line .. "  target " .. target .. (met and "" or "  MISSED") end
  print(line)
end

local function median(t)
  table.sort(t)
  return #t % 2 == 1 and t[(#t + 1) // 2] or (t[#t // 2] + t[#t // 2 + 1]) / 2
end

print(string.format("threads: %d; machine: %s", ds.get_num_threads(),
  (io.popen("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"):read("l") or "?"):gsub("^%s+", "")))

-- 1. matmul through ds vs raw cblas_sgemm, same shapes, same run
print("\n-- matmul (GFLOP/s)")
local shapes = {{512, 512, 512, "512^3"}, {128, 512, 784, "MLP fc1 forward (128x784 . 784x512)"},
  {128, 512, 512, "MLP fc2 forward (128x512 . 512x512)"}, {512, 784, 128, "MLP fc1 weight grad (512x128 . 128x784)"},
  {128, 784, 512, "MLP fc1 input grad (128x512 . 512x784)"}, {128, 512, 10, "MLP fc3 input grad (128x10 . 10x512)"}}
for _, s in ipairs(shapes) do
  local m, n, k = s[1], s[2], s[3]
  local flop = 2 * m * n * k
  local reps = math.max(3, math.floor(2e9 / flop)) -- ~15 ms a chunk
  local a, b = ds.randn(m, k), ds.randn(k, n)
  -- 21 chunks of each, alternating ds and raw, so both see the machine's drift alike
  -- (on a shared machine the rate swings by 20% within seconds); the figure of each
  -- is its median chunk rate
  local rate_ds, rate_raw = {}, {}
  for r = 1, 21 do
    local t0 = ds.clock()
    for _ = 1, reps do core.tensor.free(core.ops.matmul(a, b)) end -- result freed at once, its buffer reused
    rate_ds[r] = flop * reps / (ds.clock() - t0) / 1e9
    rate_raw[r] = core.sys.bench_raw_sgemm(m, n, k, reps)
  end
  local g_ds, g_raw = median(rate_ds), median(rate_raw)
  record("ds matmul " .. s[4], g_ds, "GFLOP/s", g_raw, ">= 95% of raw")
  results[#results].ratio = g_ds / g_raw
end

-- 2. paper MLP on Fashion-MNIST: training (Adam, batch 128) and inference
print("\n-- paper MLP, Fashion-MNIST, batch 128, Adam")
local train, test = ds.data.fashion_mnist{normalize = true}
local n_sub = opts.quick and 10000 or 30000
local sub = train:subset(ds.arange(n_sub):totable())
-- The machine's own limit at this moment: a training step's eight GEMMs (forward,
-- weight and input gradients) through raw cblas_sgemm, timed between the epochs, as
-- samples/s. Training's share of it does not swing with the machine as its rate does.
local step_gemms = {{128, 512, 784}, {128, 512, 512}, {128, 10, 512}, {512, 784, 128}, {512, 512, 128},
  {10, 512, 128}, {128, 512, 10}, {128, 512, 512}}
local function gemm_bound()
  local secs = 0
  for _, g in ipairs(step_gemms) do
    local m, n, k = g[1], g[2], g[3]
    secs = secs + 2 * m * n * k / (core.sys.bench_raw_sgemm(m, n, k, 40) * 1e9)
  end
  return 128 / secs
end
local function mlp_rate(dropout)
  local rates, shares, bounds = {}, {}, {}
  for rep = 1, 3 do
    ds.manual_seed(rep)
    local m = ds.models.mlp{784, 512, 512, 10, dropout = dropout}
    local h = ds.train{model = m, data = sub, epochs = 1, progress = false}
    rates[rep] = h[1].samples_per_sec
    bounds[rep] = gemm_bound()
    shares[rep] = rates[rep] / bounds[rep]
  end
  return median(rates), median(bounds), median(shares)
end
-- PyTorch 1.13 CPU (2 threads) on the same training, measured on this machine when it
-- could be installed (README): the paper MLP with dropout trained at 11,000-12,500 samples/s.
local PYTORCH_MLP = 12500
for _, p in ipairs {0.2, 0} do
  local rate, bound, share = mlp_rate(p)
  if p > 0 then
    record("MLP training vs PyTorch 1.13 (12,500 samples/s)", rate / PYTORCH_MLP, "x", nil, ">= 3")
  end
  record(p > 0 and "MLP training, dropout 0.2" or "MLP training, no dropout", rate, "samples/s", nil,
    p > 0 and ">= 25000" or nil, string.format("the machine's GEMM-bound limit beside it was %.0f samples/s, of which "
      .. "training reached %.0f%%; the rest of a step is Adam's pass over 19 MB of state, the batch gather and "
      .. "the elementwise ops, all bound by memory", bound, 100 * share))
  record(string.format("  share of the GEMM-bound limit (%.0f now)", bound), 100 * share, "%")
end
local m = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}
local t0 = ds.clock()
ds.evaluate(m, test, {batch_size = 128})
record("MLP inference (batch 128)", #test / (ds.clock() - t0), "samples/s")

-- 3. paper CNN training
print("\n-- paper CNN, batch 128, Adam (random inputs)")
for _, input in ipairs {{1, 28, 28}, {3, 32, 32}} do
  local n = opts.quick and 640 or 1920
  ds.manual_seed(1)
  local x = ds.rand(n, table.unpack(input))
  local y = {}
  for i = 1, n do y[i] = (i - 1) % 10 end
  local d = ds.data.Dataset{x = x, y = ds.tensor(y), classes = 10}
  local c = ds.models.cifar_cnn{input = input}
  ds.train{model = c, data = d:subset(ds.arange(256):totable()), epochs = 1, progress = false} -- warm-up
  -- the median of 3 epochs: the machine has slow spells of several seconds
  local h = ds.train{model = c, data = d, epochs = opts.quick and 1 or 3, progress = false}
  local rates = {}
  for i, e in ipairs(h) do rates[i] = e.samples_per_sec end
  record("CNN training " .. table.concat(input, "x"), median(rates), "samples/s", nil,
    input[1] == 1 and ">= 1000" or ">= 700")
end

-- 4. white-box overhead: each variant trained in lockstep with plain training
-- (examples/lockstep.lua: one batch each in turn, ABBA, the collector's time charged by
-- allocation), so that both see the same machine at the same moments; a plain-vs-plain
-- pair shows the method's own noise. Six pairs of fresh models of 2 epochs each, since a
-- pair keeps its offset for its whole run; the standard error comes from the pairs'
-- spread (doc/performance.md).
local wb, bb = ds.watermark.whitebox, ds.watermark.blackbox
local lockstep = require "lockstep"
local n_pairs, epochs = opts.quick and 2 or 6, opts.quick and 1 or 2
print(string.format("\n-- white-box watermark (32 bits in class 0, fc2), each beside plain training in lockstep: %d pairs of fresh models, %d epoch(s) of %d samples each",
  n_pairs, epochs, n_sub))
local key, marked, control_over
for _, variant in ipairs {"none (plain vs plain)", "reference", "paper"} do
  local control = variant:match("^none")
  local over, se, each = lockstep.replicated(function(i)
    ds.manual_seed(i)
    local plain = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}
    ds.manual_seed(i)
    marked = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}
    key = wb.keygen{model = marked, layer = "fc2", data = sub, bits = 32, targets = {0}, seed = i,
      variant = control and "paper" or variant}
    return plain, marked, not control and {key:regularizer()} or nil
  end, sub, n_pairs, epochs)
  if control then control_over = over end
  local per = {}
  for i, v in ipairs(each) do per[i] = string.format("%+.1f", 100 * v) end
  record("white-box overhead, " .. variant, 100 * over, "%", nil, not control and "<= 5" or nil,
    not control and string.format("its standard error in this run was %.1f points (pairs: %s%%), and the plain-vs-plain "
      .. "pairs read %+.1f%% (the measurement's own noise)", 100 * se, table.concat(per, " "), 100 * control_over) or nil,
    100 * se)
  results[#results].pairs = each
  print(string.format("%44s pairs: %s%%", "", table.concat(per, " ")))
end
t0 = ds.clock()
for _ = 1, 5 do wb.extract(marked, key) end
record("white-box extraction (500 triggers)", (ds.clock() - t0) / 5 * 1000, "ms")
local bkey = bb.Key{inputs = ds.rand(20, 1, 28, 28), labels = ds.zeros(20), K = 20, classes = 10, p = 1e-4,
  input_shape = {1, 28, 28}}
t0 = ds.clock()
for _ = 1, 20 do bb.detect(marked, bkey) end
record("black-box detection (K = 20)", (ds.clock() - t0) / 20 * 1000, "ms")

-- 5. memory: the paper MLP on all of Fashion-MNIST, in a fresh process
print("\n-- memory, paper MLP trained on all 60000 images (fresh process)")
local bin = arg[-1] or "deepsigns"
local p = io.popen(string.format("%s examples/bench/memory.lua %d", bin, opts.quick and 2 or 3))
local mem = cjson.decode(p:read("a"))
p:close()
record("resident memory after the first epoch", mem.first / 2 ^ 20, "MiB")
record("growth from epoch 1 to the last", (mem.last - mem.first) / 2 ^ 20, "MiB", nil, "< 2") -- allocator noise: +0.0-0.8 in 20 runs
record("peak resident memory", mem.peak / 2 ^ 20, "MiB", nil, "< 400")

-- 6. the verdict: each target, and by how much a missed one is short
local met, missed = 0, {}
for _, r in ipairs(results) do
  if r.met == true then met = met + 1 elseif r.met == false then missed[#missed + 1] = r end
end
print(string.format("\n-- targets: %d met, %d missed", met, #missed))
for _, r in ipairs(missed) do
  local _, got, limit, unit = target_met(r.value, r.reference, r.target)
  unit = unit ~= "" and unit or (" " .. r.unit)
  local by = r.target:match("^>") and string.format("%.1f%% short", 100 * (limit - got) / limit)
    or string.format("over by %.1f%s", got - limit, unit)
  print(string.format("MISSED %s: %.1f%s against %s (%s)%s", r.name, got, unit, r.target, by,
    r.bound and ("; " .. r.bound) or ""))
end

os.execute("mkdir -p " .. opts.out)
local f = assert(io.open(opts.out .. "/bench.json", "w"))
f:write(cjson.encode({threads = ds.get_num_threads(), results = results}), "\n")
f:close()
print("\nwritten to " .. opts.out .. "/bench.json")
