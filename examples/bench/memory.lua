-- Resident memory while training the paper MLP on all of Fashion-MNIST (run by
-- examples/bench/run.lua in a fresh process). Prints JSON {first, last, peak} in bytes.
local ds = require "deepsigns"
local epochs = tonumber(arg[1]) or 3
local train = ds.data.fashion_mnist{normalize = true}
local rss = {}
ds.manual_seed(1)
local m = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}
ds.train{model = m, data = train, epochs = epochs, progress = false,
  on_epoch = function(e) collectgarbage(); rss[e] = ds.rss().current end}
print(require("cjson").encode({first = rss[1], last = rss[#rss], peak = ds.rss().peak}))
