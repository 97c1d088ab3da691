-- White-box capacity: BER and accuracy for N = 16 ... 512 bits in one target class
-- (paper MLP on Fashion-MNIST, 2nd hidden layer, both variants optional).
-- Run: build/bin/deepsigns examples/capacity.lua [--epochs 5] [--variant paper] [--out results]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {epochs = 5, seed = 1, variant = "paper", out = "results"})
local wb = ds.watermark.whitebox

local train, test, new_model, layer, what = C.experiment(opts)
ds.manual_seed(opts.seed)
local baseline = new_model()
C.fit(baseline, train, opts.epochs)
local base_acc = ds.evaluate(baseline, test).accuracy
print(string.format("%s, %s variant, %d epochs; unmarked baseline %s", what, opts.variant, opts.epochs, C.pct(base_acc)))
print("| bits | BER | p-value | test accuracy | vs. baseline |")
print("|---:|---:|---:|---:|---:|")
local lines = {}
for _, bits in ipairs {16, 32, 64, 128, 256, 512} do
  ds.manual_seed(opts.seed)
  local model = new_model()
  local key = wb.keygen{model = model, layer = layer, data = train, bits = bits, targets = {0}, variant = opts.variant,
    seed = 2000 + bits}
  C.fit(model, train, opts.epochs, {key = key})
  local r = wb.extract(model, key)
  local acc = ds.evaluate(model, test).accuracy
  local line = string.format("| %d | %.4f | %.1e | %s | %+.2f |", bits, r.ber, r.p_value, C.pct(acc), 100 * (acc - base_acc))
  print(line)
  lines[#lines + 1] = line
end
os.execute("mkdir -p " .. opts.out)
local f = io.open(opts.out .. "/capacity_" .. opts.variant .. ".md", "w")
if f then f:write(table.concat(lines, "\n") .. "\n"); f:close() end
