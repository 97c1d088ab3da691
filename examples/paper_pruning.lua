-- The paper's pruning figure (white-box and black-box, MNIST-MLP setting; Fashion-MNIST
-- by default) with the paper's protocol: magnitude pruning, then retraining on the
-- attacker's third of the training data with the pruned weights held at exactly 0
-- (Han et al.), beside one-shot pruning and the paper's numbers. Each row also gives the
-- smallest fraction of zeros left in a pruned layer.
-- Run: build/bin/deepsigns examples/paper_pruning.lua [--scope layer|global] [--retrain-epochs 3]
--      [--retrain-lr 3e-4] [--K 20] [--mnist DIR --model mlp|cnn] [--out results]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {epochs = 5, seed = 1, out = "results", K = 20, scope = "layer",
  retrain_epochs = 3, retrain_lr = 3e-4})
local AT, wb, bb = ds.attacks, ds.watermark.whitebox, ds.watermark.blackbox

local owner = require("marked").get(opts)
local attacker = owner.train:split(1 / 3, 99)
local base = ds.evaluate(owner.model, owner.test).accuracy
-- paper v1, Fig. (MNIST-MLP): WB BER; BB mismatches (K = 10)
local paper_ber = {[0.1] = 0, [0.2] = 0, [0.3] = 0, [0.4] = 0, [0.5] = 0, [0.6] = 0, [0.7] = 0, [0.8] = 0, [0.9] = 0,
  [0.95] = 0.25, [0.99] = 0.25}
local paper_mism = {[0.1] = 0, [0.2] = 0, [0.3] = 0, [0.4] = 0, [0.5] = 1, [0.6] = 2, [0.7] = 5, [0.8] = 7}
local theta = bb.threshold{K = owner.bb_key.K, classes = 10, p = owner.bb_key.p}
print(string.format("%s; marked model %s; pruning scope %s, retraining %d epoch(s) of Adam %g on %d samples",
  owner.what, C.pct(base), opts.scope, opts.retrain_epochs, opts.retrain_lr, #attacker))
print(string.format("white-box 32 bits (paper: 4 of MNIST); black-box K = %d (theta %d; paper: K = 10, theta ~4)",
  owner.bb_key.K, theta))
print(string.format("%6s | %9s %6s %5s | %9s %7s %6s %5s %6s | %6s %5s", "", "one-shot", "", "", "retrained", "", "", "",
  "zeros", "paper", ""))
print(string.format("%6s | %9s %6s %5s | %9s %7s %6s %5s %6s | %6s %5s", "rate", "accuracy", "BER", "mism.", "accuracy",
  "drop", "BER", "mism.", "min", "BER", "mism."))
local rows = {}
for _, rate in ipairs {0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99} do
  local once = AT.prune(owner.model, {rate = rate, scope = opts.scope})
  local m = AT.prune(owner.model, {rate = rate, scope = opts.scope,
    retrain = {data = attacker, epochs = opts.retrain_epochs, lr = opts.retrain_lr}})
  local zeros = 1
  for _, v in pairs(AT.sparsity(m)) do zeros = math.min(zeros, v) end
  local w0, d0 = wb.extract(once, owner.wb_key), bb.detect(once, owner.bb_key)
  local w, d = wb.extract(m, owner.wb_key), bb.detect(m, owner.bb_key)
  local acc0, acc = ds.evaluate(once, owner.test).accuracy, ds.evaluate(m, owner.test).accuracy
  rows[#rows + 1] = ds.robustness_verdicts({attack = "prune+retrain", strength = rate, accuracy = acc,
    accuracy_drop = 100 * (base - acc), ber = w.ber, wb_detected = w.detected, wb_detected_paper = w.detected_paper,
    mismatches = d.mismatches, bb_owned = d.owned, one_shot_accuracy = acc0, one_shot_ber = w0.ber,
    one_shot_mismatches = d0.mismatches, min_zeros = zeros})
  print(string.format("%6g | %9s %6.3f %5d | %9s %+7.2f %6.3f %5d %5.1f%% | %6s %5s", rate, C.pct(acc0), w0.ber,
    d0.mismatches, C.pct(acc), 100 * (acc - base), w.ber, d.mismatches, 100 * zeros,
    paper_ber[rate] and string.format("%.2f", paper_ber[rate]) or "-", paper_mism[rate] and tostring(paper_mism[rate]) or "-"))
end
C.report(rows, opts.out .. "/paper_pruning", "pruning and retraining", "pruning rate")
