-- Reproduces the paper's fine-tuning table: 50/100/200 epochs of fine-tuning (all
-- layers) on the attacker's third of the data; --scale 0.1 runs 5/10/20 epochs.
-- Run: build/bin/deepsigns examples/paper_finetune.lua [--scale 1] [--lr 1e-4]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {epochs = 5, seed = 1, out = "results", K = 20, scale = 0.1, lr = 1e-4})
local AT, wb, bb = ds.attacks, ds.watermark.whitebox, ds.watermark.blackbox

local owner = require("marked").get(opts)
local attacker = owner.train:split(1 / 3, 99)
print(string.format("%s; fine-tuning FTAL with Adam lr %g on %d samples (paper MNIST: WB BER 0 at ~98.2%%, BB detected)",
  owner.what, opts.lr, #attacker))
print(string.format("%7s | %9s | %6s %9s | %5s %6s", "epochs", "accuracy", "BER", "WB", "mism.", "BB"))
local m, done, rows = owner.model, 0, {}
for _, e in ipairs {50, 100, 200} do
  local target = math.max(1, math.floor(e * opts.scale + 0.5))
  m = AT.finetune(m, attacker, {mode = "FTAL", epochs = target - done, optimizer = "adam", lr = opts.lr})
  done = target
  local w, d = wb.extract(m, owner.wb_key), bb.detect(m, owner.bb_key)
  local r = {strength = target, accuracy = ds.evaluate(m, owner.test).accuracy, ber = w.ber, mismatches = d.mismatches}
  rows[#rows + 1] = r
  print(string.format("%7d | %9s | %6.3f %9s | %5d %6s", target, C.pct(r.accuracy), w.ber,
    w.detected and "detected" or "lost", d.mismatches, d.owned and "owned" or "lost"))
end
C.report(rows, opts.out .. "/paper_finetune", "fine-tuning", "epochs")
