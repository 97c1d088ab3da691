-- Integrity of claims: reads the owner's white-box and black-box keys from unmarked
-- models - trained from scratch with other seeds, and fine-tuned from another,
-- independently trained parent - and reports the empirical false-positive rate
-- beside what the binomial model predicts.
-- Run: build/bin/deepsigns examples/false_positives.lua [--scratch 8] [--children 4] [--epochs 3]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {epochs = 5, null_epochs = 3, scratch = 8, children = 4, seed = 1, out = "results", K = 20})
local wb, bb, stats = ds.watermark.whitebox, ds.watermark.blackbox, ds.stats

local owner = require("marked").get(opts)
local train, test, new_model = owner.train, owner.test, owner.new_model
local models = {}
for i = 1, opts.scratch do
  ds.manual_seed(1000 + i)
  local m = new_model()
  C.fit(m, train, opts.null_epochs)
  models[#models + 1] = {"scratch, seed " .. (1000 + i), m}
end
ds.manual_seed(2000)
local parent = new_model()
C.fit(parent, train, opts.null_epochs)
for i = 1, opts.children do
  ds.manual_seed(3000 + i)
  models[#models + 1] = {"child of another parent " .. i,
    ds.attacks.finetune(parent, train:split(0.3, 3000 + i), {mode = "FTAL", epochs = 1, optimizer = "adam", lr = 1e-4})}
end
local n_bits, K = owner.wb_key.bits, owner.bb_key.K
local theta = bb.threshold{K = K, classes = owner.bb_key.classes, p = owner.bb_key.p}
print(string.format("%-28s %8s %9s %6s | %6s %9s %6s", "unmarked model", "accuracy", "WB BER", "claim", "mism.", "p-value", "claim"))
local wb_claims, bb_claims, bers, mism = 0, 0, 0, 0
for _, e in ipairs(models) do
  local w, d = wb.extract(e[2], owner.wb_key), bb.detect(e[2], owner.bb_key)
  if w.detected then wb_claims = wb_claims + 1 end
  if d.owned then bb_claims = bb_claims + 1 end
  bers, mism = bers + w.ber, mism + d.mismatches
  print(string.format("%-28s %8s %9.3f %6s | %6d %9.2e %6s", e[1], C.pct(ds.evaluate(e[2], test).accuracy), w.ber,
    w.detected and "YES" or "no", d.mismatches, d.p_value, d.owned and "YES" or "no"))
end
local n = #models
local alpha = wb.DEFAULT_ALPHA
-- the binomial model's false-positive probabilities at the thresholds used
local wb_fp = 0
for m = 0, n_bits do if stats.binom_sf(m, n_bits, 0.5) < alpha then wb_fp = stats.binom_sf(m, n_bits, 0.5) break end end
local bb_fp = stats.binom_cdf(theta - 1, K, 1 - 1 / owner.bb_key.classes)
print(string.format("\nwhite-box (%d bits, alpha %g): %d false claims of %d (rate %.3f; binomial model %.1e); mean BER %.3f (model 0.5)",
  n_bits, alpha, wb_claims, n, wb_claims / n, wb_fp, bers / n))
print(string.format("black-box (K = %d, theta %d): %d false claims of %d (rate %.3f; binomial model %.1e); mean mismatches %.1f (model %.1f)",
  K, theta, bb_claims, n, bb_claims / n, bb_fp, mism / n, K * (1 - 1 / owner.bb_key.classes)))
