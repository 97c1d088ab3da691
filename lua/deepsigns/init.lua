-- deepsigns: DeepSigns watermarks for deep neural networks, on a C tensor core.
-- local ds = require "deepsigns"   (sets no globals)
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"
local U = require "deepsigns.util"

local ds = {version = U.VERSION, core = core, Tensor = T.methods}

for _, name in ipairs {"tensor", "zeros", "ones", "empty", "full", "rand", "randn", "uniform", "normal",
  "arange", "zeros_like", "ones_like", "cat", "is_tensor"} do
  ds[name] = T[name]
end

ds.no_grad = A.no_grad
ds.is_grad_enabled = A.is_enabled

function ds.manual_seed(n)
  if math.type(n) ~= "integer" then error("manual_seed: seed must be an integer, got " .. tostring(n), 2) end
  core.rng.seed(n)
end

function ds.set_num_threads(n)
  if math.type(n) ~= "integer" or n < 1 then error("set_num_threads: expects an integer >= 1, got " .. tostring(n), 2) end
  core.sys.set_num_threads(n)
end
ds.get_num_threads = core.sys.get_num_threads

-- {tensors = live tensor headers, bytes = live tensor storage}
function ds.memory() return core.sys.memory() end

-- Monotonic wall-clock seconds (for timing), and resident memory in bytes.
ds.clock = core.sys.clock
function ds.rss() return {current = core.sys.rss(), peak = core.sys.peak_rss()} end

-- A random permutation of 1..n from the seeded generator.
function ds.randperm(n) return core.rng.randperm(n) end

-- Everything else loads on first use, so `require "deepsigns"` stays quick.
local lazy = {nn = "deepsigns.nn", optim = "deepsigns.optim", functional = "deepsigns.functional",
  data = "deepsigns.data", models = "deepsigns.models", safetensors = "deepsigns.safetensors",
  watermark = "deepsigns.watermark", attacks = "deepsigns.attacks", report = "deepsigns.report",
  stats = "deepsigns.stats"}

function ds.robustness(cfg) return require("deepsigns.robustness").run(cfg) end
function ds.sweep(spec) return require("deepsigns.sweep").run(spec) end

function ds.train(opts) return require("deepsigns.train").train(opts) end
function ds.evaluate(model, data, opts) return require("deepsigns.train").evaluate(model, data, opts) end

-- ds.save(path, model_or_tensors, metadata?); ds.load(path) --> tensors, metadata
function ds.save(path, what, metadata)
  if type(path) ~= "string" then error("save: argument #1 must be a file path", 2) end
  local S = require "deepsigns.safetensors"
  if type(what) == "table" and type(what.state_dict) == "function" then return what:save(path, metadata) end
  if type(what) ~= "table" then error("save: argument #2 must be a model or a table of tensors", 2) end
  S.save(path, what, metadata)
end
function ds.load(path)
  if type(path) ~= "string" then error("load: argument #1 must be a file path", 2) end
  return require("deepsigns.safetensors").load(path)
end
return setmetatable(ds, {
  __keys = lazy, -- for the REPL's tab completion
  __index = function(t, k)
    local mod = lazy[k]
    if mod then
      local v = require(mod)
      rawset(t, k, v)
      return v
    end
  end,
})
