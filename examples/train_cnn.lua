-- The paper's CIFAR CNN (32C3-32C3-MP2-64C3-64C3-MP2-512FC-10FC) on Fashion-MNIST (1x28x28).
-- Quality bar: >= 90% test accuracy. Adam 1e-3 cosine-annealed, batch 128.
-- Run: build/bin/deepsigns examples/train_cnn.lua [--epochs 5] [--out results]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local opts = require("args")(arg, {epochs = 5, seed = 1, out = "results"})
ds.manual_seed(opts.seed)
local train, test = ds.data.fashion_mnist{normalize = true}
local model = ds.models.cifar_cnn{input = {1, 28, 28}}
print(model)
local opt = ds.optim.Adam(model:parameters(), {lr = 1e-3})
ds.train{model = model, data = train, test = test, epochs = opts.epochs, optimizer = opt,
  schedule = ds.optim.CosineAnnealingLR(opt, {T_max = opts.epochs})}
local acc = ds.evaluate(model, test).accuracy
print(string.format("test accuracy after %d epochs: %.2f%% (target >= 90%%)", opts.epochs, 100 * acc))
os.execute("mkdir -p " .. opts.out)
model:save(opts.out .. "/cnn_fashion.safetensors", {seed = opts.seed, epochs = opts.epochs})
