-- Integrity of ownership claims: the owner's white-box and black-box keys read from
-- unmarked models that took no part in making them - at least 20 of at least three
-- architectures (MLPs of other widths and depths, and the paper CNN), trained with
-- other seeds and data orders - against what the binomial model predicts. The
-- black-box key is first calibrated on a separate set of unmarked models
-- (blackbox.calibrate), so each claim is also judged on that empirical null.
-- Run: build/bin/deepsigns examples/false_positives.lua [--epochs 5] [--null-epochs 3] [--calibration 5]
--      [--cnn 3] [--out results]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {epochs = 5, null_epochs = 3, calibration = 5, cnn = 3, seed = 1, out = "results",
  K = 20})
local wb, bb, stats = ds.watermark.whitebox, ds.watermark.blackbox, ds.stats

local owner = require("marked").get(opts)
local train, test = owner.train, owner.test
local key = owner.bb_key

-- unmarked models: {architecture, constructor, epochs}
local ARCHS = {
  {"MLP 784-512-512-10", function() return ds.models.mlp{784, 512, 512, 10, dropout = 0.2} end},
  {"MLP 784-256-10", function() return ds.models.mlp{784, 256, 10} end},
  {"MLP 784-1024-512-256-10", function() return ds.models.mlp{784, 1024, 512, 256, 10, dropout = 0.1} end},
  {"paper CNN", function() return ds.models.cifar_cnn{input = {1, 28, 28}} end},
}
local function trained(arch, seed, epochs)
  ds.manual_seed(seed) -- the seed sets the initial weights and the data order
  local m = ARCHS[arch][2]()
  C.fit(m, train, epochs)
  return m
end

-- the calibration set: independent of the owner's keygen filters and of the test set below
local calibration = {}
for i = 1, opts.calibration do calibration[i] = trained(1, 5000 + i, opts.null_epochs) end
bb.calibrate{key = key, null_models = calibration}

local plan = {}
for i = 1, 8 do plan[#plan + 1] = {1, 6000 + i} end
for i = 1, 6 do plan[#plan + 1] = {2, 6100 + i} end
for i = 1, 4 do plan[#plan + 1] = {3, 6200 + i} end
for i = 1, opts.cnn do plan[#plan + 1] = {4, 6300 + i} end
local theta = bb.threshold{K = key.K, classes = key.classes, p = key.p}
print(string.format("%s; owner's keys: white-box %d bits (alpha %g), black-box K = %d (theta %d, p = %g)", owner.what,
  owner.wb_key.bits, wb.DEFAULT_ALPHA, key.K, theta, key.p))
print(string.format("%-26s %5s %8s | %6s %8s %5s | %5s %9s %9s %5s", "unmarked model", "seed", "accuracy", "BER", "p-value",
  "claim", "mism.", "p binom.", "p calib.", "claim"))
-- The white-box key reads only a model with the key's layer at the key's width (here the
-- 784-512-512-10 and 784-1024-512-256-10 MLPs); another architecture gives no claim.
local function wb_read(m)
  local ok, w = pcall(wb.extract, m, owner.wb_key)
  if ok then return w end
  if not tostring(w):match("the key expects layer") and not tostring(w):match("is not in the model") then error(w, 0) end
  return {}
end
local rows, hist = {}, {}
local claims = {wb = 0, wb_paper = 0, wb_read = 0, bb = 0, bb_binomial = 0}
for _, e in ipairs(plan) do
  local arch, seed = e[1], e[2]
  local m = trained(arch, seed, arch == 4 and 1 or opts.null_epochs)
  local w, d = wb_read(m), bb.detect(m, key)
  if w.detected then claims.wb = claims.wb + 1 end
  if w.detected_paper then claims.wb_paper = claims.wb_paper + 1 end
  if w.ber then claims.wb_read = claims.wb_read + 1 end
  if d.owned then claims.bb = claims.bb + 1 end
  if d.p_value <= key.p then claims.bb_binomial = claims.bb_binomial + 1 end
  hist[d.mismatches] = (hist[d.mismatches] or 0) + 1
  local acc = ds.evaluate(m, test).accuracy
  rows[#rows + 1] = {architecture = ARCHS[arch][1], seed = seed, accuracy = acc, ber = w.ber, wb_p_value = w.p_value,
    wb_detected = w.detected, mismatches = d.mismatches, bb_p_value = d.p_value, bb_p_value_calibrated = d.p_value_calibrated,
    bb_owned = d.owned}
  local wb_cells = w.ber and string.format("%6.3f %8.2g %5s", w.ber, w.p_value, w.detected and "YES" or "no")
    or string.format("%6s %8s %5s", "-", "-", "n/a")
  print(string.format("%-26s %5d %8s | %s | %5d %9.2g %9.2g %5s", ARCHS[arch][1], seed, C.pct(acc), wb_cells,
    d.mismatches, d.p_value, d.p_value_calibrated, d.owned and "YES" or "no"))
end
local n = #rows
print(string.format("\nfalse claims: white-box %d of the %d models it can read (p < %g), %d by the paper's rule "
  .. "(BER = 0); black-box %d of %d (binomial p <= %g: %d)", claims.wb, claims.wb_read, wb.DEFAULT_ALPHA, claims.wb_paper,
  claims.bb, n, key.p, claims.bb_binomial))
print("\nblack-box mismatches of the unmarked models against Binomial(K, 1 - 1/C):")
print("| mismatches | models | expected (binomial) |")
print("|---:|---:|---:|")
local perr = 1 - 1 / key.classes
for m = 0, key.K do
  local expected = n * (stats.binom_cdf(m, key.K, perr) - stats.binom_cdf(m - 1, key.K, perr))
  if (hist[m] or 0) > 0 or expected >= 0.05 then
    print(string.format("| %d | %d | %.2f |", m, hist[m] or 0, expected))
  end
end
local fewest = math.huge
for _, r in ipairs(rows) do fewest = math.min(fewest, r.mismatches) end
print(string.format("fewest mismatches: %d (a claim needs fewer than %d); calibration models' mismatches: %s", fewest, theta,
  table.concat(key.calibration.mismatches, " ")))
os.execute("mkdir -p " .. opts.out)
ds.report.csv(rows, opts.out .. "/false_positives.csv")
