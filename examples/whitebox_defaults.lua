-- The white-box defaults on data nobody tuned them for: wb.keygen + wb.embed with no
-- variant or strength options, 32 bits in one target class and 64 bits in two, 10 epochs
-- of Adam 1e-3 (batch 128, from scratch) on 8,000 training images, against the same
-- model trained unmarked from the same seed. Three data sets: Fashion-MNIST subsets, and
-- Fashion-MNIST-derived sets written in the MNIST and CIFAR-10 file formats and loaded
-- through ds.data.mnist / ds.data.cifar10 (common.lua: derived_data); three seeds each.
-- Run: build/bin/deepsigns examples/whitebox_defaults.lua [--seeds 3] [--train-size 8000]
--      [--epochs 10] [--sets fashion,mnist,cifar] [--cifar-model cnn] [--out results]
--      (--variant, --lambda1, --lambda2: to try other settings than the defaults)
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {seeds = 3, train_size = 8000, test_size = 2000, epochs = 10,
  sets = "fashion,mnist,cifar", cifar_model = "cnn", out = "results"})
local wb = ds.watermark.whitebox

local function fit(model, data, epochs, key)
  local args = {model = model, data = data, epochs = epochs, batch_size = 128, progress = false,
    optimizer = ds.optim.Adam(model:parameters(), {lr = 1e-3})}
  if key then args.key = key; return wb.embed(args) end
  return ds.train(args)
end

os.execute("mkdir -p " .. opts.out)
local rows, worst = {}, {ber = 0, drop = math.huge}
print(string.format("%-14s %4s | %4s %7s | %8s %8s %6s | %6s %9s", "data", "seed", "bits", "targets", "unmarked",
  "marked", "diff", "BER", "p-value"))
for set in opts.sets:gmatch("[^,]+") do
  for seed = 1, opts.seeds do
    local o = {seed = seed, train_size = opts.train_size}
    if set == "mnist" or set == "cifar" then
      local dir = string.format("%s/derived_%s_%d", opts.out, set, seed)
      C.derived_data(set, dir, opts.train_size, opts.test_size, 100 + seed)
      o[set] = dir
      if set == "cifar" then o.model = opts.cifar_model end
    elseif set ~= "fashion" then
      error("--sets takes fashion, mnist and cifar, got " .. set, 0)
    end
    local train, test, new_model, layer, what, pool = C.experiment(o)
    if set == "fashion" then test = test:subset{n = opts.test_size, seed = seed} end
    ds.manual_seed(seed)
    local plain = new_model()
    fit(plain, train, opts.epochs)
    local base = ds.evaluate(plain, test).accuracy
    for _, cfg in ipairs {{32, 1}, {64, 2}} do
      ds.manual_seed(seed)
      local model = new_model()
      local key = wb.keygen{model = model, layer = layer, pool = pool, data = train, bits = cfg[1], ntargets = cfg[2],
        seed = 10 * seed + cfg[2], variant = opts.variant, lambda1 = opts.lambda1, lambda2 = opts.lambda2}
      fit(model, train, opts.epochs, key)
      local acc, r = ds.evaluate(model, test).accuracy, wb.extract(model, key)
      local row = {data = set .. " (" .. what .. ")", seed = seed, bits = cfg[1], targets = table.concat(key.targets, " "),
        unmarked = base, accuracy = acc, diff = 100 * (acc - base), ber = r.ber, p_value = r.p_value}
      rows[#rows + 1] = row
      worst.ber, worst.drop = math.max(worst.ber, r.ber), math.min(worst.drop, row.diff)
      print(string.format("%-14s %4d | %4d %7s | %8s %8s %+6.2f | %6.3f %9.1e", set, seed, cfg[1], row.targets,
        C.pct(base), C.pct(acc), row.diff, r.ber, r.p_value))
    end
  end
end
ds.report.csv(rows, opts.out .. "/whitebox_defaults.csv")
print(string.format("\nworst BER %.3f, worst accuracy difference %+.2f points (goal: BER 0, within 1 point); rows in %s",
  worst.ber, worst.drop, opts.out .. "/whitebox_defaults.csv"))
