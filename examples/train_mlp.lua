-- The paper's MNIST-MLP (784-512-512-10, dropout 0.2) on Fashion-MNIST:
-- Adam 1e-3 (cosine-annealed over the run), batch 128, 5 epochs, inputs normalised
-- per channel. Quality bar: >= 88% test accuracy (PyTorch's constant-lr run: 87-88%).
-- Run: build/bin/deepsigns examples/train_mlp.lua [epochs] [out.safetensors]
local ds = require "deepsigns"
local epochs = tonumber(arg and arg[1]) or 5
local out = arg and arg[2] or "results/mlp_fashion.safetensors"

ds.manual_seed(1)
local train, test = ds.data.fashion_mnist{normalize = true}
print(train)
local model = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}
print(model)
local opt = ds.optim.Adam(model:parameters(), {lr = 1e-3})
ds.train{model = model, data = train, test = test, epochs = epochs, batch_size = 128, optimizer = opt,
  schedule = ds.optim.CosineAnnealingLR(opt, {T_max = epochs})}
local final = ds.evaluate(model, test)
print(string.format("test accuracy after %d epochs: %.2f%% (target >= 88%%)", epochs, 100 * final.accuracy))
os.execute("mkdir -p " .. (out:match("^(.*)/") or "."))
model:save(out, {seed = 1, epochs = epochs})
print("saved " .. out)
local check = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}:load(out)
print(string.format("reloaded model: %.2f%%", 100 * ds.evaluate(check, test).accuracy))
