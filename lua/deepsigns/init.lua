--- deepsigns: DeepSigns watermarks for deep neural networks, on a C tensor core.
-- `local ds = require "deepsigns"` sets no globals. The tensor constructors, training,
-- files and the library's modules (ds.nn, ds.optim, ds.data, ds.models, ds.watermark,
-- ds.attacks, ds.report, ds.stats) hang off this table; modules load on first use.
-- ds.help(x) returns the reference of any of them.
-- @module deepsigns
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"
local U = require "deepsigns.util"
local TR = require "deepsigns.train"
local help = require "deepsigns.help"

local ds = {version = U.VERSION, core = core, Tensor = T.methods}

for _, name in ipairs {"tensor", "zeros", "ones", "empty", "full", "rand", "randn", "uniform", "normal",
  "arange", "zeros_like", "ones_like", "cat", "is_tensor"} do
  ds[name] = T[name]
end

ds.no_grad = A.no_grad
ds.is_grad_enabled = A.is_enabled
ds.train, ds.evaluate = TR.train, TR.evaluate
ds.help, ds.help_printer = help.help, help.print

--- Seeds the one generator that drives initialisation, shuffling, dropout and key
-- generation: the same seed gives the same bits, keys and accuracies on one machine.
-- @tparam integer n the seed
-- @raise when n is not an integer
-- @usage ds.manual_seed(1)
function ds.manual_seed(n)
  if math.type(n) ~= "integer" then error("manual_seed: seed must be an integer, got " .. tostring(n), 2) end
  core.rng.seed(n)
end

--- Sets the number of threads of the core's loops and of OpenBLAS.
-- @tparam integer n at least 1
-- @usage ds.set_num_threads(1)
function ds.set_num_threads(n)
  if math.type(n) ~= "integer" or n < 1 then error("set_num_threads: expects an integer >= 1, got " .. tostring(n), 2) end
  core.sys.set_num_threads(n)
end

--- The number of threads the core's loops and OpenBLAS use.
-- @treturn integer
function ds.get_num_threads() return core.sys.get_num_threads() end

--- Live tensor memory, outside Lua's heap (the specs use it to show nothing leaks).
-- @treturn table {tensors = live tensor headers, bytes = live tensor storage}
function ds.memory() return core.sys.memory() end

--- Monotonic wall-clock seconds, for timing.
-- @treturn number
function ds.clock() return core.sys.clock() end

--- The process's resident memory.
-- @treturn table {current = bytes, peak = bytes}
function ds.rss() return {current = core.sys.rss(), peak = core.sys.peak_rss()} end

--- A random permutation of 1..n from the seeded generator.
-- @tparam integer n
-- @treturn table a list of the integers 1..n
function ds.randperm(n) return core.rng.randperm(n) end

--- Saves a model (model:save) or a table of named tensors as a safetensors file,
-- atomically: the file is written whole or not at all.
-- @tparam string path
-- @param what a model, or a table {name = tensor}
-- @tparam[opt] table metadata string keys and values stored in the file's header
-- @raise when path is not a string or the tensors cannot be written
-- @usage ds.save("w.safetensors", {w = ds.randn(3, 3)}, {note = "a test"})
function ds.save(path, what, metadata)
  if type(path) ~= "string" then error("save: argument #1 must be a file path", 2) end
  local S = require "deepsigns.safetensors"
  if type(what) == "table" and type(what.state_dict) == "function" then return what:save(path, metadata) end
  if type(what) ~= "table" then error("save: argument #2 must be a model or a table of tensors", 2) end
  S.save(path, what, metadata)
end

--- Reads a safetensors file (float32 or converted from F64, I64, I32, I16, I8, U8, BOOL).
-- @tparam string path
-- @treturn table {name = tensor}
-- @treturn table its metadata
-- @raise for a file that is missing, truncated, corrupt or holds NaN
-- @usage local tensors, md = ds.load("w.safetensors")
function ds.load(path)
  if type(path) ~= "string" then error("load: argument #1 must be a file path", 2) end
  return require("deepsigns.safetensors").load(path)
end

--- The model a file written by model:save holds, rebuilt from the architecture recorded
-- in it (the ds.models constructor and its options, or the tree of library layers),
-- with its weights.
-- @tparam string path
-- @return the model
-- @treturn table the file's metadata
-- @raise for a file without a recorded architecture, or whose weights do not fit it
-- @usage local model = ds.load_model("results/mlp.safetensors")
function ds.load_model(path) return require("deepsigns.models").load(path) end

-- Everything else loads on first use, so `require "deepsigns"` stays quick: modules,
-- and functions of modules ({module, field}).
local lazy = {nn = "deepsigns.nn", optim = "deepsigns.optim", functional = "deepsigns.functional",
  data = "deepsigns.data", models = "deepsigns.models", safetensors = "deepsigns.safetensors",
  watermark = "deepsigns.watermark", attacks = "deepsigns.attacks", report = "deepsigns.report",
  stats = "deepsigns.stats", robustness = {"deepsigns.robustness", "run"},
  robustness_verdicts = {"deepsigns.robustness", "verdicts"}, sweep = {"deepsigns.sweep", "run"},
  sweep_status = {"deepsigns.sweep", "status"}}

return setmetatable(ds, {
  __keys = lazy, -- for the REPL's tab completion and help(ds)
  __index = function(t, k)
    local what = lazy[k]
    if what == nil then return nil end
    local v = type(what) == "string" and require(what) or require(what[1])[what[2]]
    rawset(t, k, v)
    return v
  end,
})
