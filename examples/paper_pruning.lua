-- Reproduces the paper's pruning figure (white-box and black-box, MNIST-MLP setting)
-- on Fashion-MNIST by default, printing our numbers beside the paper's and writing
-- the plots. --finetune N fine-tunes N epochs on a third of the data after pruning.
-- Run: build/bin/deepsigns examples/paper_pruning.lua [--K 10] [--scope layer|global] [--finetune 0] [--mnist DIR]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {epochs = 5, seed = 1, out = "results", K = 10, scope = "layer", finetune = 0})
local AT, wb, bb = ds.attacks, ds.watermark.whitebox, ds.watermark.blackbox

local owner = require("marked").get(opts)
local attacker = owner.train:split(1 / 3, 99)
-- paper v1, Fig. (MNIST-MLP): WB BER; BB mismatches (K = 10)
local paper_ber = {[0.1] = 0, [0.2] = 0, [0.3] = 0, [0.4] = 0, [0.5] = 0, [0.6] = 0, [0.7] = 0, [0.8] = 0, [0.9] = 0,
  [0.95] = 0.25, [0.99] = 0.25}
local paper_mism = {[0.1] = 0, [0.2] = 0, [0.3] = 0, [0.4] = 0, [0.5] = 1, [0.6] = 2, [0.65] = 5, [0.7] = 5, [0.8] = 7}
print(string.format("%s; pruning scope %s%s; white-box 32 bits, black-box K = %d (theta %d)", owner.what, opts.scope,
  opts.finetune > 0 and (", then " .. opts.finetune .. " fine-tuning epochs") or "", owner.bb_key.K,
  bb.threshold{K = owner.bb_key.K, classes = 10, p = owner.bb_key.p}))
print(string.format("%6s | %9s | %6s %8s | %5s %8s", "rate", "accuracy", "BER", "paper", "mism.", "paper"))
local rows, first_break = {}, nil
for _, rate in ipairs {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999} do
  local m = AT.prune(owner.model, {rate = rate, scope = opts.scope})
  if opts.finetune > 0 then m = AT.finetune(m, attacker, {mode = "FTAL", epochs = opts.finetune, optimizer = "adam", lr = 1e-4}) end
  local r = {strength = rate, accuracy = ds.evaluate(m, owner.test).accuracy}
  local w, d = wb.extract(m, owner.wb_key), bb.detect(m, owner.bb_key)
  r.ber, r.mismatches, r.wb_detected, r.bb_owned = w.ber, d.mismatches, w.detected, d.owned
  rows[#rows + 1] = r
  if not first_break and not w.detected then first_break = r end
  print(string.format("%6g | %9s | %6.3f %8s | %5d %8s", rate, C.pct(r.accuracy), r.ber,
    paper_ber[rate] and string.format("%.2f", paper_ber[rate]) or "-", r.mismatches,
    paper_mism[rate] and tostring(paper_mism[rate]) or "-"))
end
print(first_break and string.format("the white-box mark breaks at rate %g (BER %.3f, accuracy %s)", first_break.strength,
  first_break.ber, C.pct(first_break.accuracy)) or "the white-box mark survives every rate")
C.report(rows, opts.out .. "/paper_pruning", "pruning", "pruning rate")
