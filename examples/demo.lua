-- make demo: the whole DeepSigns story on Fashion-MNIST in a few minutes on 2 cores.
-- Train a baseline, embed white-box and black-box marks, verify, attack (pruning
-- sweep, fine-tuning, overwriting, permutation, quantisation), verify again,
-- print a compact report and write the plots.
-- Run: build/bin/deepsigns examples/demo.lua [--epochs 5] [--out results] [--fresh]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {epochs = 5, seed = 1, out = "results", K = 20})
local wb, bb = ds.watermark.whitebox, ds.watermark.blackbox
local AT, RB = ds.attacks, require "deepsigns.robustness"
local t_start = ds.clock()

local function section(title) print("\n== " .. title .. " ==") end

section("1. the owner trains and marks the paper MLP on Fashion-MNIST")
local owner = require("marked").get({epochs = opts.epochs, seed = opts.seed, out = opts.out, K = opts.K, fresh = opts.fresh})
local model, test, train = owner.model, owner.test, owner.train
local base_acc, acc = ds.evaluate(owner.unmarked, test).accuracy, ds.evaluate(model, test).accuracy
print(owner.cached and "(loaded from " .. opts.out .. "/; --fresh retrains)" or string.format("done in %.0f s", owner.seconds))
print(string.format("unmarked baseline %s; marked model %s (%+.2f points)", C.pct(base_acc), C.pct(acc), 100 * (acc - base_acc)))
do
  -- the watermark's training overhead, measured beside plain training in lockstep (two
  -- trainings of fresh models switched every batch: epochs timed one after the other
  -- differ by 10-30% on a shared machine), with a key of its own (the owner's stays as is)
  local lockstep = require "lockstep"
  local part = train:split(0.5, 7)
  ds.manual_seed(opts.seed)
  local p1, p2 = owner.new_model(), owner.new_model()
  local k = wb.keygen{model = p2, layer = owner.layer, data = part, bits = 32, targets = {0}, seed = 7}
  local over, se = lockstep.overhead(p1, p2, part, {k:regularizer()}, 2)
  print(string.format("white-box training overhead: %+.1f%% +- %.1f (standard error; paper variant, beside plain "
    .. "training in lockstep, 2 epochs of %d images; make bench measures it longer)", 100 * over, 100 * se, #part))
end
print(tostring(owner.wb_key))
print(tostring(owner.bb_key))

section("2. verification")
local function verify(m)
  local w = wb.extract(m, owner.wb_key)
  local b = bb.detect(m, owner.bb_key)
  return w, b
end
local w, b = verify(model)
print(string.format("marked:   white-box BER %.3f (p = %.1e, detected %s); black-box %d/%d mismatches (theta %d, p = %.1e, owned %s)",
  w.ber, w.p_value, tostring(w.detected), b.mismatches, b.K, b.theta, b.p_value, tostring(b.owned)))
local w0, b0 = verify(owner.unmarked)
print(string.format("unmarked: white-box BER %.3f (p = %.2f, detected %s); black-box %d/%d mismatches (p = %.2f, owned %s)",
  w0.ber, w0.p_value, tostring(w0.detected), b0.mismatches, b0.K, b0.p_value, tostring(b0.owned)))

local report = {}
local function add(name, strength, m, seconds)
  local a = ds.evaluate(m, test).accuracy
  local ww, bbr = verify(m)
  local row = RB.verdicts({attack = name, strength = strength, accuracy = a, accuracy_drop = 100 * (acc - a),
    ber = ww.ber, wb_detected = ww.detected, wb_detected_paper = ww.detected_paper, mismatches = bbr.mismatches,
    bb_owned = bbr.owned, attack_seconds = seconds})
  report[#report + 1] = row
  return row
end

section("3. attacks")
local attacker_data = train:split(1 / 3, 99) -- the attacker holds a third of the training data
print("pruning (per layer), then retraining 2 epochs with the pruned weights held at 0 (the paper's protocol) ...")
local prune_rows = {}
for _, rate in ipairs {0.3, 0.5, 0.7, 0.9, 0.95, 0.99} do
  local t0 = ds.clock()
  local pruned = AT.prune(model, {rate = rate, retrain = {data = attacker_data, epochs = 2, lr = 3e-4}})
  prune_rows[#prune_rows + 1] = add("prune+retrain", rate, pruned, ds.clock() - t0)
end
print("fine-tuning (FTAL, 5 epochs, lr 1e-3, a third of the data) ...")
local t0 = ds.clock()
add("finetune FTAL", 5, AT.finetune(model, attacker_data, {mode = "FTAL", epochs = 5, optimizer = "adam", lr = 1e-3}), ds.clock() - t0)
t0 = ds.clock()
add("finetune RTLL", 5, AT.finetune(model, attacker_data, {mode = "RTLL", epochs = 5, optimizer = "adam", lr = 1e-3}), ds.clock() - t0)
print("quantisation and weight noise ...")
for _, bits in ipairs {8, 4} do add("quantize", bits, AT.quantize(model, {bits = bits}), 0) end
add("noise", 0.5, AT.noise(model, {sigma = 0.5}), 0)
print("neuron permutation with scaling of fc2 ...")
local permuted = AT.permute(model, {layer = "fc2", seed = 5, scale = true})
add("permute+scale", 1, permuted, 0)
local naive, realigned = wb.extract(permuted, owner.wb_key), wb.extract(permuted, owner.wb_key, {realign = true})
print("white-box overwriting (the attacker embeds his own 32 bits in fc2, 2 epochs) ...")
local matrix = RB.overwrite_matrix{model = model, data = attacker_data, unmarked = owner.unmarked, wb_key = owner.wb_key,
  options = {seed = 4242, epochs = 2, bits = 32}}

section("4. report")
-- per mark: detected (white-box: p < 1e-3 / the paper's BER = 0), and whether the attack
-- succeeded against it (mark gone with at most 5 points of accuracy lost)
local function verdict(detected, success) return (detected and "kept" or "GONE") .. (success and "*" or "") end
print(string.format("%-14s %8s | %9s %6s | %6s %9s | %5s %5s", "attack", "strength", "accuracy", "drop",
  "BER", "white-box", "mism.", "black-box"))
for _, r in ipairs(report) do
  print(string.format("%-14s %8s | %9s %+6.2f | %6.3f %4s/%-4s | %5d %5s", r.attack, tostring(r.strength),
    C.pct(r.accuracy), -r.accuracy_drop, r.ber, verdict(r.wb_detected, r.wb_attack_success),
    verdict(r.wb_detected_paper, r.wb_attack_success_paper), r.mismatches, verdict(r.bb_owned, r.bb_attack_success)))
end
print("white-box: our rule (p < 1e-3) / the paper's (BER = 0); * the attack succeeded against that mark "
  .. "(gone with at most 5 points of accuracy lost)")
print(string.format("\npermuted model: naive white-box extraction BER %.3f (detected %s); realigned BER %.3f (detected %s)",
  naive.ber, tostring(naive.detected), realigned.ber, tostring(realigned.detected)))
print("\noverwriting cross matrix (white-box):")
print(RB.format_matrix(matrix))
local owner_after = matrix[1]
print(owner_after.detected and "the owner's mark is still detected in the overwritten model"
  or "the owner's mark is NOT detected in the overwritten model (overwriting succeeded here)")

local csv = opts.out .. "/demo_report.csv"
ds.report.csv(report, csv)
print("\nrows written to " .. csv)
if ds.report.gnuplot_available() then
  local png = ds.report.plot(prune_rows, opts.out .. "/demo_prune_wb", {title = "white-box mark under pruning", xlabel = "pruning rate", score = "ber"})
  local png2 = ds.report.plot(prune_rows, opts.out .. "/demo_prune_bb", {title = "black-box mark under pruning", xlabel = "pruning rate", score = "mismatches"})
  print("plots: " .. png .. ", " .. png2 .. " (and .svg)")
else
  print("(gnuplot is not installed: no plots)")
end
print(string.format("\ndemo finished in %.0f s", ds.clock() - t_start))
