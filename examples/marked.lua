-- The owner's marked model shared by the demo and the paper scripts: the paper
-- MLP (or CNN) trained with a white-box mark (the defaults: paper variant, 32 bits in
-- class 0 of layer fc2), then given a black-box mark (K keys); plus an unmarked
-- baseline from the same seed. Cached under opts.out (named by this version of
-- deepsigns) so the scripts can share them (--fresh rebuilds).
local ds = require "deepsigns"
local C = require "common"
local wb, bb = ds.watermark.whitebox, ds.watermark.blackbox

local M = {}

local function exists(p) local f = io.open(p) if f then f:close() return true end return false end

function M.get(opts)
  local train, test, new_model, layer, what, pool = C.experiment(opts)
  local dir = opts.out or "results"
  os.execute("mkdir -p " .. dir)
  local K = opts.K or 20
  local tag = string.format("%s/owner_%s_%s_%s_K%d_e%d_s%d", dir, ds.version,
    opts.cifar and "cifar" or (opts.mnist and "mnist" or "fashion"), opts.model or "default", K, opts.epochs, opts.seed)
  if opts.train_size then tag = tag .. "_n" .. opts.train_size end
  local files = {model = tag .. "_marked.safetensors", base = tag .. "_unmarked.safetensors",
    wb = tag .. "_wb_key.safetensors", bb = tag .. "_bb_key.safetensors"}
  local r = {train = train, test = test, new_model = new_model, layer = layer, what = what}
  if not opts.fresh and exists(files.model) and exists(files.base) and exists(files.wb) and exists(files.bb) then
    r.model = new_model():load(files.model)
    r.unmarked = new_model():load(files.base)
    r.wb_key, r.bb_key = wb.load(files.wb), bb.load(files.bb)
    r.cached = true
    return r
  end
  local t0 = ds.clock()
  ds.manual_seed(opts.seed)
  r.unmarked = new_model()
  C.fit(r.unmarked, train, opts.epochs)
  -- independently trained unmarked models drop candidate keys that transfer to them
  local nulls = {}
  for i = 1, opts.null_models or 2 do
    ds.manual_seed(opts.seed + 500 + i)
    nulls[i] = new_model()
    C.fit(nulls[i], train, math.max(1, opts.epochs // 2))
  end
  -- both marks in one training of the same length as the baseline's: the black-box keys
  -- are learned throughout it (keygen's default) with the white-box regularizer on
  ds.manual_seed(opts.seed)
  r.model = new_model()
  r.wb_key = wb.keygen{model = r.model, layer = layer, pool = pool, data = train, bits = opts.bits or 32, targets = {0},
    seed = opts.seed + 100}
  r.bb_key = bb.keygen{model = r.model, data = train, K = K, seed = opts.seed + 200, null_models = nulls,
    epochs = opts.epochs, regularizers = {r.wb_key:regularizer()}}
  r.wb_key:record(r.model)
  r.model:save(files.model, {seed = opts.seed})
  r.unmarked:save(files.base, {seed = opts.seed})
  r.wb_key:save(files.wb)
  r.bb_key:save(files.bb)
  r.seconds = ds.clock() - t0
  return r
end

return M
