-- Reproduces the paper's black-box overwriting experiment: the owner marks with K
-- keys (K = 10, 15, 20), the attacker generates and embeds his own K keys; is the
-- owner still detected? Paper (MNIST): mismatches 1 / 3 / 7, detected.
-- Run: build/bin/deepsigns examples/paper_overwrite.lua [--epochs 5]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {epochs = 5, seed = 1, out = "results"})
local AT, bb, RB = ds.attacks, ds.watermark.blackbox, require "deepsigns.robustness"
local paper = {[10] = 1, [15] = 3, [20] = 7}

local train, test, new_model, _, what = C.experiment(opts)
ds.manual_seed(opts.seed)
local base = new_model()
C.fit(base, train, opts.epochs)
-- two independently trained unmarked models: one filters the owner's candidate keys,
-- the other (which took no part in key generation) is the integrity check
ds.manual_seed(opts.seed + 7)
local filter = new_model()
C.fit(filter, train, opts.epochs)
ds.manual_seed(opts.seed + 8)
local unmarked = new_model()
C.fit(unmarked, train, opts.epochs)
local attacker = train:split(1 / 3, 99)
print(what .. "; black-box overwriting")
local rows = {}
for _, K in ipairs {10, 15, 20} do
  local owner_model = base:clone()
  local key = bb.keygen{model = owner_model, data = train, K = K, seed = 300 + K, null_models = {filter}, embed = "finetune"}
  local matrix, attacked = RB.overwrite_matrix{model = owner_model, data = attacker, unmarked = unmarked, bb_key = key,
    scheme = "blackbox", options = {K = K, seed = 900 + K}}
  print(string.format("\nK = %d (theta %d): owner's keys on the attacked model: %d mismatches (paper: %d), %s",
    K, matrix[1].theta, matrix[1].mismatches, paper[K], matrix[1].detected and "still detected" or "NOT detected"))
  print(RB.format_matrix(matrix))
  rows[#rows + 1] = {strength = K, mismatches = matrix[1].mismatches, accuracy = ds.evaluate(attacked, test).accuracy}
end
ds.report.csv(rows, opts.out .. "/paper_overwrite.csv")
if ds.report.gnuplot_available() then
  ds.report.plot(rows, opts.out .. "/paper_overwrite_bb", {title = "black-box: overwriting (owner keys on the attacked model)",
    xlabel = "K", score = "mismatches"})
  print("plot: " .. opts.out .. "/paper_overwrite_bb.png")
end
