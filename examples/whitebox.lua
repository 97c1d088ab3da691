-- White-box DeepSigns on the paper's MNIST-MLP experiment (Fashion-MNIST by default).
-- Trains an unmarked baseline and marked models from the same seed, then reports
-- accuracy, BER and p-value on the marked model and on the unmarked one, and the
-- watermark's training overhead, measured in this run (a plain and a marked model trained
-- in lockstep, examples/lockstep.lua, for --overhead-epochs epochs), beside a control pair of
-- two plain trainings measured the same way (the measurement's noise in this run).
-- Run: build/bin/deepsigns examples/whitebox.lua [--epochs 5] [--overhead-epochs 3]
--      [--mnist DIR | --cifar DIR] [--out results]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local lockstep = require "lockstep"
local opts = require("args")(arg, {epochs = 5, seed = 1, out = "results", overhead_epochs = 3})
if math.type(opts.overhead_epochs) ~= "integer" or opts.overhead_epochs < 1 then
  error("--overhead-epochs must be a positive integer, got " .. tostring(opts.overhead_epochs), 0)
end
local wb = ds.watermark.whitebox

local train, test, new_model, layer, what = C.experiment(opts)
print(string.format("%s, %d epochs, seed %d; watermark in layer %s", what, opts.epochs, opts.seed, layer))
os.execute("mkdir -p " .. opts.out)

ds.manual_seed(opts.seed)
local baseline = new_model()
local base_hist = C.fit(baseline, train, opts.epochs)
local base_acc = ds.evaluate(baseline, test).accuracy
local base_sec = C.mean_epoch_seconds(base_hist)
print(string.format("unmarked baseline: test accuracy %s, %.2f s/epoch", C.pct(base_acc), base_sec))

local configs = {
  {variant = "paper", bits = 32, ntargets = 1},
  {variant = "paper", bits = 64, ntargets = 2},
  {variant = "reference", bits = 32, ntargets = 1},
}
print(string.format("\n%-10s %5s %7s | %9s %7s | %6s %9s | %6s %9s | %8s", "variant", "bits", "targets",
  "accuracy", "drop", "BER", "p-value", "BER*", "p-value*", "overhead"))
local rows = {}
for _, cfg in ipairs(configs) do
  ds.manual_seed(opts.seed)
  local model = new_model()
  local key = wb.keygen{model = model, layer = layer, data = train, bits = cfg.bits, ntargets = cfg.ntargets,
    variant = cfg.variant, seed = 1000 + cfg.bits}
  local hist = C.fit(model, train, opts.epochs, {key = key})
  local acc = ds.evaluate(model, test).accuracy
  local r = wb.extract(model, key)
  local null = wb.extract(baseline, key) -- the same key read from the unmarked model
  -- extraction needs only the model file and the key file
  local stem = string.format("%s/wb_%s_%d", opts.out, cfg.variant, cfg.bits)
  model:save(stem .. "_model.safetensors", {seed = opts.seed})
  key:save(stem .. "_key.safetensors")
  local reloaded = new_model():load(stem .. "_model.safetensors")
  local again = wb.extract(reloaded, wb.load(stem .. "_key.safetensors"))
  -- overhead: fresh plain and marked models in lockstep (the key, saved
  -- above, keeps training its centres here)
  ds.manual_seed(opts.seed)
  local p1, p2 = new_model(), new_model()
  local overhead, se = lockstep.overhead(p1, p2, train, {key:regularizer()}, opts.overhead_epochs)
  print(string.format("%-10s %5d %7s | %9s %+6.2f | %6.3f %9.2e | %6.3f %9.2e | %+7.1f%%", cfg.variant, cfg.bits,
    table.concat(key.targets, ","), C.pct(acc), 100 * (acc - base_acc), r.ber, r.p_value, null.ber, null.p_value,
    100 * overhead))
  rows[#rows + 1] = {cfg = cfg, overhead = overhead, se = se,
    ok = r.ber == 0 and again.ber == 0 and not null.detected and math.abs(acc - base_acc) <= 0.005}
end
-- the method's own noise in this run: two identical plain trainings in lockstep
ds.manual_seed(opts.seed)
local c1, c2 = new_model(), new_model()
local control, control_se = lockstep.overhead(c1, c2, train, nil, opts.overhead_epochs)
print("\nBER* and p-value*: the same key read from the unmarked baseline (detected when p < "
  .. wb.DEFAULT_ALPHA .. ").")
print(string.format("overhead: extra training time with the watermark regularizer, beside plain training in lockstep (%d epoch%s);",
  opts.overhead_epochs, opts.overhead_epochs == 1 and "" or "s"))
print(string.format("  control, plain beside plain the same way: %+.1f%% +- %.1f (this run's measurement noise; +-: standard "
  .. "error). Goal: at most 5%%.", 100 * control, 100 * control_se))
for _, r in ipairs(rows) do
  print(string.format("%s %d bits / %d target(s): %s", r.cfg.variant, r.cfg.bits, r.cfg.ntargets,
    (r.ok and "BER 0, accuracy within 0.5 points, unmarked model not detected" or "does NOT meet all of: BER 0, accuracy within 0.5 points, unmarked not detected")
    .. string.format("; overhead %+.1f%% +- %.1f %s", 100 * r.overhead, 100 * r.se,
      r.overhead <= 0.05 and "(<= 5%)" or "(above the 5% goal)")))
end
print("models and keys saved under " .. opts.out .. "/ (re-extracted from the files: same result)")
