-- Black-box DeepSigns on the paper MLP (Fashion-MNIST by default), K = 20 keys, with
-- keygen's default: the keys learned throughout the model's training. Compares the
-- marked model with an unmarked one of the same seed, then checks the marked model and
-- at least 5 unmarked models trained with other seeds (the integrity check) against the
-- exact binomial threshold.
-- Then attacks the marked model (fine-tuning, pruning with and without retraining) and
-- checks it again.
-- Run: build/bin/deepsigns examples/blackbox.lua [--K 20] [--p 1e-4] [--epochs 5] [--unmarked 5]
--      [--embed training|finetune] [--out results]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {K = 20, p = 1e-4, epochs = 5, unmarked = 5, filters = 2, seed = 1, out = "results",
  embed = "training"})
local bb = ds.watermark.blackbox
local stats = ds.stats

local train, test, new_model, _, what = C.experiment(opts)
print(string.format("%s; K = %d keys, false-alarm level p = %g", what, opts.K, opts.p))
local function trained(seed, epochs)
  ds.manual_seed(seed)
  local m = new_model()
  C.fit(m, train, epochs)
  return m
end

local before = ds.evaluate(trained(opts.seed, opts.epochs), test).accuracy
-- independently trained unmarked models that key generation uses to drop keys that transfer
local filters = {}
for i = 1, opts.filters do filters[i] = trained(100 + i, opts.epochs) end
ds.manual_seed(opts.seed)
local model = new_model()
if opts.embed == "finetune" then C.fit(model, train, opts.epochs) end -- the paper: keys fine-tuned into a trained model
local key = bb.keygen{model = model, data = train, K = opts.K, p = opts.p, seed = 7, null_models = filters,
  embed = opts.embed, epochs = opts.embed == "training" and opts.epochs or nil}
local after = ds.evaluate(model, test).accuracy
print(string.format("accuracy unmarked %s, marked %s (%+.2f points); key generation and training took %.1f s",
  C.pct(before), C.pct(after), 100 * (after - before), key.seconds))
os.execute("mkdir -p " .. opts.out)
key:save(opts.out .. "/bb_key.safetensors")
model:save(opts.out .. "/bb_model.safetensors")

local theta = bb.threshold{K = key.K, classes = key.classes, p = opts.p}
local expected, sd = stats.binom_moments(key.K, 1 - 1 / key.classes)
print(string.format("threshold: claimed when mismatches < theta = %d (unmarked models: %.1f +- %.1f expected)",
  theta, expected, sd))
print(string.format("\n%-22s %10s %12s %6s", "model", "mismatches", "p-value", "owned"))
local reloaded = bb.load(opts.out .. "/bb_key.safetensors")
local r = bb.detect(new_model():load(opts.out .. "/bb_model.safetensors"), reloaded, {p = opts.p})
print(string.format("%-22s %10d %12.2e %6s", "marked (from files)", r.mismatches, r.p_value, tostring(r.owned)))
local claims, total = 0, 0
for i = 1, opts.unmarked do
  local seed = 200 + i
  local u = trained(seed, opts.epochs)
  local d = bb.detect(u, key, {p = opts.p})
  total = total + d.mismatches
  if d.owned then claims = claims + 1 end
  print(string.format("%-22s %10d %12.2e %6s", "unmarked, seed " .. seed, d.mismatches, d.p_value, tostring(d.owned)))
end
print(string.format("\nunmarked models: mean mismatches %.1f (binomial model: %.1f +- %.1f); false claims: %d of %d",
  total / opts.unmarked, expected, sd, claims, opts.unmarked))

-- attacks: each on a copy of the marked model, the attacker holding a third of the data
-- (or all of it), as deepsigns.md §5
local AT = ds.attacks
local attacker = train:split(1 / 3, 99)
print(string.format("\n%-40s %9s %7s %10s %6s", "attack", "accuracy", "drop", "mismatches", "owned"))
for _, a in ipairs {
  {"FTAL 5 epochs, Adam 1e-3, a third", function()
    return AT.finetune(model, attacker, {mode = "FTAL", epochs = 5, optimizer = "adam", lr = 1e-3}) end},
  {"FTAL 20 epochs, SGD 1e-3 m 0.9, all", function()
    return AT.finetune(model, train, {mode = "FTAL", epochs = 20, optimizer = "sgd", lr = 1e-3, momentum = 0.9}) end},
  {"prune 0.5 (per layer, no retraining)", function() return AT.prune(model, {rate = 0.5}) end},
  {"prune 0.9 + retrain 3 epochs Adam 3e-4", function()
    return AT.prune(model, {rate = 0.9, retrain = {data = attacker, epochs = 3, lr = 3e-4}}) end},
} do
  local m = a[2]()
  local acc = ds.evaluate(m, test).accuracy
  local d = bb.detect(m, key, {p = opts.p})
  print(string.format("%-40s %9s %+7.2f %10d %6s", a[1], C.pct(acc), 100 * (acc - after), d.mismatches, tostring(d.owned)))
end
