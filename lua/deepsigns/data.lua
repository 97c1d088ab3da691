-- Data sets: loaders for Fashion-MNIST, MNIST (IDX, raw or gzip) and CIFAR-10
-- (binary batches), and the Dataset type: x (N x C x H x W in [0,1]), y (class ids).
local core = require "deepsigns.core"
local T = require "deepsigns.tensor"
local class = require "deepsigns.class"
local U = require "deepsigns.util"

local D = {}
D.FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

local Dataset = class("data.Dataset")
D.Dataset = Dataset

-- Dataset{x=, y=, classes=, name=}
function Dataset:__init(t)
  local x, y = t.x, t.y
  if not (T.is_tensor(x) and T.is_tensor(y)) then error("Dataset: x and y must be tensors", 3) end
  if core.tensor.dim(y) ~= 1 or core.tensor.dim(x) < 1 or core.tensor.size(x, 1) ~= core.tensor.size(y, 1) then
    error(string.format("Dataset: x (%s) and y (%s) must have the same number of rows",
      U.shape_str(x), U.shape_str(y)), 3)
  end
  self.x, self.y = x, y
  self.name = t.name or "data"
  self.classes = t.classes or (core.tensor.numel(y) > 0 and math.tointeger(core.tensor.item(core.ops.max(y))) + 1 or 0)
  local ys = core.tensor.flat(y)
  for i, v in ipairs(ys) do
    if v ~= math.floor(v) or v < 0 or v >= self.classes then
      error(string.format("Dataset %s: label %g at row %d is not a class id in 0..%d", self.name, v, i, self.classes - 1), 3)
    end
  end
end

function Dataset:__len() return core.tensor.size(self.y, 1) end

function Dataset:__tostring()
  return string.format("Dataset %s: %d samples of %s, %d classes", self.name, #self, table.concat(core.tensor.size(self.x), "x", 2), self.classes)
end

-- input shape of one sample, e.g. {1, 28, 28}
function Dataset:input_shape()
  local s = core.tensor.size(self.x)
  table.remove(s, 1)
  return s
end

-- d:subset(indices) -- the rows at 1-based indices (a table or a 1-D tensor), in that order
-- d:subset{n=, seed=0} -- a random sample of n rows without replacement, in data order
-- (the sample comes from `seed` alone and leaves the global generator as it was)
function Dataset:subset(which, name)
  if type(which) == "table" and not T.is_tensor(which) and (which.n ~= nil or which.seed ~= nil) then
    U.check_options("subset", which, {"n", "seed"})
    local n = which.n
    if math.type(n) ~= "integer" or n < 1 then error("subset: n must be a positive integer, got " .. tostring(n), 2) end
    if n > #self then
      error(string.format("subset: n = %d, but %s holds only %d samples", n, self.name, #self), 2)
    end
    local saved = core.rng.state()
    core.rng.seed(which.seed or 0)
    local perm = core.rng.randperm(#self)
    core.rng.set_state(saved)
    local idx = table.move(perm, 1, n, 1, {})
    table.sort(idx)
    which = idx
  end
  if type(which) ~= "table" and not T.is_tensor(which) then
    error("subset: expects a list of indices or {n=, seed=}, got " .. type(which), 2)
  end
  return Dataset{x = core.ops.index_select(self.x, which), y = core.ops.index_select(self.y, which),
    classes = self.classes, name = name or self.name}
end

-- Indices (1-based) of the samples of the given classes.
function Dataset:indices_of(...)
  local want = {}
  for _, c in ipairs {...} do want[c] = true end
  local idx = {}
  for i, v in ipairs(core.tensor.flat(self.y)) do
    if want[v] then idx[#idx + 1] = i end
  end
  return idx
end

function Dataset:where_class(...)
  local cs = {...}
  for _, c in ipairs(cs) do
    if math.type(c) ~= "integer" or c < 0 or c >= self.classes then
      error(string.format("where_class: %s is not a class of %s (0..%d)", tostring(c), self.name, self.classes - 1), 2)
    end
  end
  local idx = self:indices_of(...)
  if #idx == 0 then
    error("where_class: " .. self.name .. " has no samples of class " .. table.concat(cs, ", "), 2)
  end
  return self:subset(idx)
end

-- Samples per class, keyed by class id: counts[c] for c = 0 .. classes - 1.
function Dataset:class_counts()
  local counts = {}
  for c = 0, self.classes - 1 do counts[c] = 0 end
  for _, v in ipairs(core.tensor.flat(self.y)) do counts[v] = counts[v] + 1 end
  return counts
end

-- Raises "who: ... is empty" for a data set without samples, and names the first sample
-- holding NaN or an infinite value.
function Dataset:check_usable(who, level)
  level = (level or 2) + 1
  if #self == 0 then error(who .. ": the data set " .. tostring(self.name) .. " is empty", level) end
  if not core.ops.all_finite(self.x) then
    local n = #self
    for i = 1, n do
      if not core.ops.all_finite(core.tensor.select(self.x, 1, i)) then
        error(string.format("%s: sample %d of %s holds NaN or an infinite value", who, i, tostring(self.name)), level)
      end
    end
  end
  return self
end

-- Random disjoint split: the first part holds `fraction` of the samples.
-- The permutation comes from `seed` alone, so it does not disturb the global generator.
function Dataset:split(fraction, seed)
  if type(fraction) ~= "number" or fraction <= 0 or fraction >= 1 then
    error("split: fraction must be in (0, 1), got " .. tostring(fraction), 2)
  end
  local saved = core.rng.state()
  core.rng.seed(seed or 0)
  local perm = core.rng.randperm(#self)
  core.rng.set_state(saved)
  local k = math.floor(#self * fraction + 0.5)
  local a, b = {}, {}
  for i = 1, #perm do
    if i <= k then a[#a + 1] = perm[i] else b[#b + 1] = perm[i] end
  end
  table.sort(a); table.sort(b)
  return self:subset(a), self:subset(b)
end

-- Concatenation of data sets with the same input shape.
function D.concat(list, name)
  local xs, ys, classes = {}, {}, 0
  for i, d in ipairs(list) do
    xs[i], ys[i] = d.x, d.y
    classes = math.max(classes, d.classes)
  end
  return Dataset{x = T.cat(xs, 1), y = T.cat(ys, 1), classes = classes, name = name or list[1].name}
end

-- In-place per-channel normalisation (x - mean) / std; returns self.
function Dataset:normalize(mean, std)
  local c = core.tensor.size(self.x, 2)
  if type(mean) ~= "table" or #mean ~= c or type(std) ~= "table" or #std ~= c then
    error("normalize: mean and std must be tables with one value per channel (" .. c .. ")", 2)
  end
  local shape = {1, c, 1, 1}
  core.ops.binary_("sub", self.x, self.x, core.tensor.reshape(core.tensor.from_table(mean), shape))
  core.ops.binary_("div", self.x, self.x, core.tensor.reshape(core.tensor.from_table(std), shape))
  self.mean, self.std = mean, std
  return self
end

-- Per-channel mean and std of x (no copies).
function Dataset:channel_stats()
  local mean, std = {}, {}
  for k = 1, core.tensor.size(self.x, 2) do
    mean[k], std[k] = core.ops.moments(core.tensor.select(self.x, 2, k))
  end
  return mean, std
end

-- Iterator of (x, y) batches: for x, y in d:batches{size=128, shuffle=true} do ... end
-- opts: size, shuffle (seeded by the global generator), drop_last, augment ({pad=4, flip=0.5}).
function Dataset:batches(opts)
  opts = opts or {}
  local size = opts.size or opts.batch_size or 128
  if math.type(size) ~= "integer" or size < 1 then error("batches: size must be a positive integer", 2) end
  local n = #self
  local order
  if opts.shuffle then order = core.rng.randperm(n) end
  local nb = opts.drop_last and n // size or (n + size - 1) // size
  local b = 0
  local aug = opts.augment
  return function()
    b = b + 1
    if b > nb then return nil end
    local first, last = (b - 1) * size + 1, math.min(b * size, n)
    local x, y
    if order then
      local idx = table.move(order, first, last, 1, {})
      x, y = core.ops.index_select(self.x, idx), core.ops.index_select(self.y, idx)
    else
      x, y = core.tensor.narrow(self.x, 1, first, last - first + 1), core.tensor.narrow(self.y, 1, first, last - first + 1)
    end
    if aug then x = core.data.augment_crop_flip(x, aug.pad or 4, aug.flip or 0.5) end
    return x, y, b
  end, nb
end

function Dataset:num_batches(size, drop_last)
  local n = #self
  return drop_last and n // size or (n + size - 1) // size
end

-- ---- loaders ----

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

-- The first existing of path.gz or path.
local function find(dir, base)
  for _, p in ipairs {dir .. "/" .. base .. ".gz", dir .. "/" .. base} do
    if exists(p) then return p end
  end
end

function D.idx(path)
  if type(path) ~= "string" then error("data.idx: expects a file path", 2) end
  return core.data.read_idx(path)
end

local function idx_pair(dir, images, labels, name, hint)
  local ip, lp = find(dir, images), find(dir, labels)
  if not (ip and lp) then
    error(string.format("%s: cannot find %s(.gz) and %s(.gz) in %s%s", name, images, labels, dir, hint or ""), 3)
  end
  local x, y = core.data.read_idx(ip), core.data.read_idx(lp)
  local xs = core.tensor.size(x)
  if #xs ~= 3 then error(string.format("%s: %s holds %s, expected N x H x W images", name, ip, U.shape_str(xs)), 3) end
  if core.tensor.dim(y) ~= 1 or core.tensor.size(y, 1) ~= xs[1] then
    error(string.format("%s: %s has %d labels for %d images in %s", name, lp, core.tensor.numel(y), xs[1], ip), 3)
  end
  for i, v in ipairs(core.tensor.flat(y)) do
    if v < 0 or v > 9 then error(string.format("%s: %s: label %g at row %d is out of range 0..9", name, lp, v, i), 3) end
  end
  x = core.tensor.reshape(x, {xs[1], 1, xs[2], xs[3]})
  core.ops.binary_("div", x, x, 255)
  return Dataset{x = x, y = y, classes = 10, name = name}
end

-- Normalises both sets with the training set's per-channel statistics.
local function normalize_by(train, test)
  local m, s = train:channel_stats()
  train:normalize(m, s)
  test:normalize(m, s)
end

-- train, test = loader{dir=, normalize=false}
local function mnist_like(name, default_dir, hint)
  return function(opts)
    opts = opts or {}
    local dir = opts.dir or default_dir
    if not dir then error(name .. ": give the directory holding the IDX files: {dir=...}", 2) end
    local train = idx_pair(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", name .. "/train", hint)
    local test = idx_pair(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", name .. "/test", hint)
    if opts.normalize then normalize_by(train, test) end
    return train, test
  end
end

D.fashion_mnist = mnist_like("fashion_mnist", D.FASHION_MNIST_DIR,
  " (the default directory comes with Debian's package: apt-get install dataset-fashion-mnist)")
D.mnist = mnist_like("mnist", nil)

-- CIFAR-10 binary version: data_batch_1..5.bin and test_batch.bin in dir.
function D.cifar10(opts)
  opts = opts or {}
  local dir = opts.dir
  if not dir then error("cifar10: give the directory holding data_batch_1.bin ... test_batch.bin: {dir=...}", 2) end
  local function load(files, name)
    local xs, ys = {}, {}
    for _, f in ipairs(files) do
      local p = dir .. "/" .. f
      if not exists(p) then
        error("cifar10: missing " .. p .. " (expected data_batch_1.bin .. data_batch_5.bin and test_batch.bin)", 3)
      end
      local x, y = core.data.read_cifar(p)
      xs[#xs + 1], ys[#ys + 1] = x, y
    end
    local x = #xs == 1 and xs[1] or T.cat(xs, 1)
    local y = #ys == 1 and ys[1] or T.cat(ys, 1)
    return Dataset{x = x, y = y, classes = 10, name = name}
  end
  local batches = opts.batches or {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"}
  local train = load(batches, "cifar10/train")
  local test = load({"test_batch.bin"}, "cifar10/test")
  if opts.normalize then normalize_by(train, test) end
  return train, test
end

return D
