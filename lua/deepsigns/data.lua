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

--- data.Dataset{x=, y=, classes=, name=}: inputs x (N x ..., images N x C x H x W in
-- [0, 1] or normalised) and labels y (N class ids, 0-based: the data's own values).
-- @tparam table t {x = tensor, y = tensor, classes = (default: max label + 1), name = "data"}
-- @raise when x and y differ in rows, or a label is no class id
-- @usage local d = ds.data.Dataset{x = ds.rand(100, 1, 28, 28), y = ds.zeros(100), classes = 10}
function Dataset:__init(t)
  U.check_options("Dataset", t, {"x", "y", "classes", "name"}, 4)
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

--- #d: the number of samples.
function Dataset:__len() return core.tensor.size(self.y, 1) end

--- A one-line description: name, samples, input shape, classes.
function Dataset:__tostring()
  return string.format("Dataset %s: %d samples of %s, %d classes", self.name, #self, table.concat(core.tensor.size(self.x), "x", 2), self.classes)
end

--- The shape of one sample, e.g. {1, 28, 28}.
function Dataset:input_shape()
  local s = core.tensor.size(self.x)
  table.remove(s, 1)
  return s
end

--- A data set of some of the samples: d:subset(indices) takes the rows at 1-based
-- indices (a table or a 1-D tensor), in that order; d:subset{n=, seed=0} a random
-- sample of n rows without replacement, in data order (from `seed` alone: the global
-- generator is left as it was).
-- @raise for n larger than the data set, or an index out of range
-- @usage local small = train:subset{n = 8000, seed = 1}
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

--- The 1-based indices of the samples of the given class ids.
function Dataset:indices_of(...)
  local want = {}
  for _, c in ipairs {...} do want[c] = true end
  local idx = {}
  for i, v in ipairs(core.tensor.flat(self.y)) do
    if want[v] then idx[#idx + 1] = i end
  end
  return idx
end

--- The samples of the given class ids, as a data set.
-- @raise for a class that is not one, or has no samples
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

--- Samples per class, keyed by class id: counts[c] for c = 0 .. classes - 1.
function Dataset:class_counts()
  local counts = {}
  for c = 0, self.classes - 1 do counts[c] = 0 end
  for _, v in ipairs(core.tensor.flat(self.y)) do counts[v] = counts[v] + 1 end
  return counts
end

--- Raises "who: ... is empty" for a data set without samples, and names the first
-- sample holding NaN or an infinite value; returns the data set.
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

--- A random disjoint split: the first part holds `fraction` of the samples (from `seed`
-- alone: the global generator is left as it was).
-- @tparam number fraction in (0, 1)
-- @tparam[opt=0] integer seed
-- @treturn Dataset the fraction
-- @treturn Dataset the rest
-- @usage local attacker = train:split(1 / 3, 99)
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

--- The data sets of the list, one after the other (same input shape).
function D.concat(list, name)
  local xs, ys, classes = {}, {}, 0
  for i, d in ipairs(list) do
    xs[i], ys[i] = d.x, d.y
    classes = math.max(classes, d.classes)
  end
  return Dataset{x = T.cat(xs, 1), y = T.cat(ys, 1), classes = classes, name = name or list[1].name}
end

--- Normalises x per channel in place, (x - mean) / std; returns the data set.
-- @tparam table mean one value per channel
-- @tparam table std one value per channel
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

--- The per-channel means and standard deviations of x (two lists).
function Dataset:channel_stats()
  local mean, std = {}, {}
  for k = 1, core.tensor.size(self.x, 2) do
    mean[k], std[k] = core.ops.moments(core.tensor.select(self.x, 2, k))
  end
  return mean, std
end

--- An iterator of (x, y, index) batches, and the number of batches.
-- @tparam[opt] table opts
-- @tparam[opt=128] integer opts.size (or batch_size)
-- @tparam[opt=false] boolean opts.shuffle a new order each call, from the seeded generator
-- @tparam[opt=false] boolean opts.drop_last drop a last, smaller batch
-- @tparam[opt] table opts.augment {pad = 4, flip = 0.5}: random crops after padding, and flips
-- @usage for x, y in train:batches{size = 64, shuffle = true} do ... end
function Dataset:batches(opts)
  opts = U.check_options("batches", opts, {"size", "batch_size", "shuffle", "drop_last", "augment"})
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

--- The number of batches of `size`.
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

--- The tensor an IDX file holds (raw or gzipped; any of its element types).
-- @tparam string path
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

local function mnist_like(name, default_dir, hint)
  --- train, test = ds.data.fashion_mnist{dir=, normalize=} / ds.data.mnist{dir=, normalize=}:
  -- the training and test sets of 28x28 grey images (1 x 28 x 28 in [0, 1]) and 10
  -- classes from the four standard IDX files (raw or .gz) in dir. Fashion-MNIST's default
  -- directory is Debian's (package dataset-fashion-mnist); MNIST needs dir.
  -- @tparam[opt] table opts
  -- @tparam string opts.dir
  -- @tparam[opt=false] boolean opts.normalize per-channel standardisation with the training set's statistics
  -- @raise naming a missing or malformed file
  -- @usage local train, test = ds.data.fashion_mnist{normalize = true}
  return function(opts)
    opts = U.check_options(name, opts, {"dir", "normalize"})
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

--- train, test = ds.data.cifar10{dir=, normalize=, batches=}: CIFAR-10's binary
-- version (3 x 32 x 32 images in [0, 1], 10 classes) from data_batch_1..5.bin and
-- test_batch.bin in dir.
-- @tparam table opts
-- @tparam string opts.dir
-- @tparam[opt=false] boolean opts.normalize
-- @tparam[opt] table opts.batches the training files to read (default all five)
-- @raise naming a missing or malformed file
function D.cifar10(opts)
  opts = U.check_options("cifar10", opts, {"dir", "normalize", "batches"})
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

-- ---- writers: the same files the loaders read ----

local function write_file(path, bytes)
  require("deepsigns.safetensors").write_atomic(path, bytes)
end

-- An IDX file of unsigned bytes (big-endian header) from a tensor of byte values.
local function write_idx(path, t)
  local dims = core.tensor.size(t)
  local head = {string.pack(">I4", 0x0800 + #dims)}
  for _, d in ipairs(dims) do head[#head + 1] = string.pack(">I4", d) end
  write_file(path, table.concat(head) .. core.tensor.to_bytes(t, "u8", 1))
end

local function check_images(d, who, channels, h, w)
  if getmetatable(d) ~= Dataset then error(who .. ": expects data sets", 3) end
  local s = core.tensor.size(d.x)
  if #s ~= 4 or s[2] ~= channels or (h and (s[3] ~= h or s[4] ~= w)) then
    error(string.format("%s: %s holds %s, the format takes N x %d x %s images", who, d.name, U.shape_str(s), channels,
      h and (h .. " x " .. w) or "H x W"), 3)
  end
  if d.classes > 10 then error(who .. ": " .. d.name .. " has " .. d.classes .. " classes, the format takes 10", 3) end
end

--- Writes train and test (images in [0, 1], 1 channel) as the four MNIST IDX files in
-- dir, which ds.data.mnist{dir=} reads back (pixels rounded to bytes).
function D.write_mnist(dir, train, test)
  for _, d in ipairs {train, test} do check_images(d, "data.write_mnist", 1) end
  for _, part in ipairs {{train, "train"}, {test, "t10k"}} do
    local d = part[1]
    local s = core.tensor.size(d.x)
    write_idx(dir .. "/" .. part[2] .. "-images-idx3-ubyte", core.ops.binary("mul", core.tensor.reshape(d.x, {s[1], s[3], s[4]}), 255))
    write_idx(dir .. "/" .. part[2] .. "-labels-idx1-ubyte", d.y)
  end
end

--- Writes train (split over `batches` files, default 5) and test (images in [0, 1],
-- 3 x 32 x 32) as CIFAR-10's binary files in dir: data_batch_<i>.bin, test_batch.bin.
function D.write_cifar10(dir, train, test, batches)
  for _, d in ipairs {train, test} do check_images(d, "data.write_cifar10", 3, 32, 32) end
  batches = batches or 5
  local function records(d, first, last)
    local parts = {}
    local labels = core.tensor.flat(d.y)
    for i = first, last do
      parts[#parts + 1] = string.char(labels[i]) .. core.tensor.to_bytes(core.tensor.select(d.x, 1, i), "u8", 255)
    end
    return table.concat(parts)
  end
  local n = #train
  for b = 1, batches do
    local first, last = (b - 1) * n // batches + 1, b * n // batches
    write_file(string.format("%s/data_batch_%d.bin", dir, b), records(train, first, last))
  end
  write_file(dir .. "/test_batch.bin", records(test, 1, #test))
end

return D
