local H = require "helper"
local ds = H.ds

-- writes an IDX file: big-endian dims, type 0x08 (ubyte)
local function write_idx(path, dims, values, opts)
  opts = opts or {}
  local parts = {string.char(0, 0, opts.type or 8, #dims)}
  for _, d in ipairs(dims) do parts[#parts + 1] = string.pack(">I4", d) end
  for _, v in ipairs(values) do parts[#parts + 1] = string.char(v) end
  local f = assert(io.open(path, "wb"))
  f:write(opts.raw or table.concat(parts))
  f:close()
end

local function mnist_dir(n_train, n_test, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local function images(n) local v = {} for i = 1, n * 4 * 4 do v[i] = (i * 7) % 256 end return v end
  local function labels(n) local v = {} for i = 1, n do v[i] = (i - 1) % 10 end return v end
  write_idx(dir .. "/train-images-idx3-ubyte", {n_train, 4, 4}, images(n_train))
  write_idx(dir .. "/train-labels-idx1-ubyte", {n_train}, labels(n_train))
  write_idx(dir .. "/t10k-images-idx3-ubyte", {n_test, 4, 4}, images(n_test))
  write_idx(dir .. "/t10k-labels-idx1-ubyte", {n_test}, labels(n_test))
  if opts.gzip then assert(os.execute("gzip " .. dir .. "/*-ubyte")) end
  return dir
end

local function cifar_file(path, n, bad_label)
  local parts = {}
  for i = 1, n do
    parts[#parts + 1] = string.char(bad_label and i == n and 10 or (i - 1) % 10)
    parts[#parts + 1] = string.rep(string.char(i % 256), 3072)
  end
  local f = assert(io.open(path, "wb")); f:write(table.concat(parts)); f:close()
end

describe("data", function()
  it("reads IDX files, raw and gzipped", function()
    for _, gz in ipairs {false, true} do
      local dir = mnist_dir(20, 10, {gzip = gz})
      local train, test = ds.data.mnist{dir = dir}
      assert.equal(20, #train)
      assert.equal(10, #test)
      assert.same({20, 1, 4, 4}, train.x:size())
      assert.near(7 / 255, train.x:get(1, 1, 1, 1), 1e-6)
      assert.same({0, 1, 2}, {train.y[1], train.y[2], train.y[3]})
      local raw = ds.data.idx(dir .. "/train-labels-idx1-ubyte" .. (gz and ".gz" or ""))
      assert.same({20}, raw:size())
    end
  end)

  it("reads CIFAR-10 binary batches", function()
    local dir = H.tmpdir()
    for i = 1, 5 do cifar_file(dir .. "/data_batch_" .. i .. ".bin", 3) end
    cifar_file(dir .. "/test_batch.bin", 4)
    local train, test = ds.data.cifar10{dir = dir}
    assert.equal(15, #train)
    assert.equal(4, #test)
    assert.same({15, 3, 32, 32}, train.x:size())
    assert.near(2 / 255, train.x:get(2, 3, 32, 32), 1e-6)
    assert.same({0, 1, 2}, {train.y[1], train.y[2], train.y[3]})
  end)

  it("loads the real Fashion-MNIST when it is installed", function()
    local f = io.open(ds.data.FASHION_MNIST_DIR .. "/train-labels-idx1-ubyte.gz")
    if not f then pending("dataset-fashion-mnist is not installed") return end
    f:close()
    local train, test = ds.data.fashion_mnist()
    assert.same({60000, 1, 28, 28}, train.x:size())
    assert.same({10000, 1, 28, 28}, test.x:size())
    for c = 0, 9 do assert.equal(6000, train:class_counts()[c]) end
    for c = 0, 9 do assert.equal(1000, test:class_counts()[c]) end
    assert.is_true(train.x:max():item() <= 1)
  end)

  it("batches repeatably for a seed, in order without shuffling", function()
    local dir = mnist_dir(50, 10)
    local train = ds.data.mnist{dir = dir}
    local function labels_of(opts)
      local out = {}
      for _, y in train:batches(opts) do for _, v in ipairs(y:totable()) do out[#out + 1] = v end end
      return out
    end
    ds.manual_seed(9)
    local a = labels_of{size = 8, shuffle = true}
    ds.manual_seed(9)
    local b = labels_of{size = 8, shuffle = true}
    assert.same(a, b)
    assert.equal(50, #a)
    local plain = labels_of{size = 8}
    assert.equal(0, plain[1]); assert.equal(9, plain[10])
    local n = 0
    for x in train:batches{size = 8, drop_last = true} do n = n + 1; assert.equal(8, x:size(1)) end
    assert.equal(6, n)
    local _, nb = train:batches{size = 8}
    assert.equal(7, nb)
  end)

  it("splits and subsets disjointly and completely", function()
    local dir = mnist_dir(40, 10)
    local train = ds.data.mnist{dir = dir}
    local a, b = train:split(0.25, 3)
    assert.equal(10, #a)
    assert.equal(30, #b)
    local a2 = train:split(0.25, 3)
    assert.same(a.y:totable(), a2.y:totable())
    -- disjoint and complete: compare the image rows
    local seen = {}
    for _, d in ipairs {a, b} do
      for i = 1, #d do
        local key = table.concat(d.x[i]:reshape(16):totable(), ",") .. "|" .. d.y[i]
        seen[key] = (seen[key] or 0) + 1
      end
    end
    local total = 0
    for _ in pairs(seen) do total = total + 1 end
    assert.equal(40, total)
    local sub = train:subset({1, 3, 5})
    assert.same({0, 2, 4}, sub.y:totable())
    local twos = train:where_class(2, 3)
    assert.equal(8, #twos)
    for _, v in ipairs(twos.y:totable()) do assert.is_true(v == 2 or v == 3) end
  end)

  it("normalises per channel and augments", function()
    local dir = mnist_dir(30, 10)
    local train = ds.data.mnist{dir = dir, normalize = true}
    local m, s = train:channel_stats()
    assert.near(0, m[1], 1e-5)
    assert.near(1, s[1], 1e-4)
    ds.manual_seed(2)
    local x = ds.randn(4, 3, 8, 8)
    local y = ds.core.data.augment_crop_flip(x, 2, 1)
    assert.same(x:size(), y:size())
    local z = ds.core.data.augment_crop_flip(x, 0, 1) -- pure flip
    assert.equal(x:get(1, 1, 1, 1), z:get(1, 1, 1, 8))
  end)

  describe("bad input", function()
    it("says which files were expected and how to get the default", function()
      assert.has_error(function() ds.data.fashion_mnist{dir = "/nonexistent"} end,
        "fashion_mnist/train: cannot find train-images-idx3-ubyte(.gz) and train-labels-idx1-ubyte(.gz) in "
        .. "/nonexistent (the default directory comes with Debian's package: apt-get install dataset-fashion-mnist)")
      assert.has_error(function() ds.data.cifar10{dir = "/nonexistent"} end,
        "cifar10: missing /nonexistent/data_batch_1.bin (expected data_batch_1.bin .. data_batch_5.bin and test_batch.bin)")
    end)

    it("rejects wrong magic, truncated and inconsistent files", function()
      local dir = H.tmpdir()
      local p = dir .. "/f"
      write_idx(p, {}, {}, {raw = "\1\2\3\4\0\0\0\1x"})
      assert.has_error(function() ds.data.idx(p) end, p .. ": not an IDX file (bad magic number 01020304)")
      write_idx(p, {10, 4}, {1, 2, 3})
      assert.has_error(function() ds.data.idx(p) end,
        p .. ": truncated: the header announces 40 values (40 bytes) but 3 bytes follow")
      write_idx(p, {}, {}, {raw = "\0\0\8\3\0\0"})
      assert.has_error(function() ds.data.idx(p) end, p .. ": truncated IDX header")
      write_idx(p, {1}, {}, {raw = "\0\0\7\1\0\0\0\1x"})
      assert.has_error(function() ds.data.idx(p) end, p .. ": unknown IDX element type 0x07")
      write_idx(p, {}, {}, {raw = "\0\0\8\2\255\255\255\255\255\255\255\255"})
      assert.has_error(function() ds.data.idx(p) end)
      -- a corrupt gzip stream
      local g = assert(io.open(dir .. "/c.gz", "wb")); g:write("\31\139\8\0\0\0\0\0\0\3garbage"); g:close()
      assert.has_error(function() ds.data.idx(dir .. "/c.gz") end)
      -- labels out of range and mismatched counts
      local mdir = mnist_dir(5, 5)
      write_idx(mdir .. "/train-labels-idx1-ubyte", {5}, {0, 1, 2, 3, 12})
      assert.has_error(function() ds.data.mnist{dir = mdir} end,
        "mnist/train: " .. mdir .. "/train-labels-idx1-ubyte: label 12 at row 5 is out of range 0..9")
      write_idx(mdir .. "/train-labels-idx1-ubyte", {4}, {0, 1, 2, 3})
      assert.has_error(function() ds.data.mnist{dir = mdir} end,
        "mnist/train: " .. mdir .. "/train-labels-idx1-ubyte has 4 labels for 5 images in " .. mdir .. "/train-images-idx3-ubyte")
    end)

    it("rejects truncated CIFAR files and bad labels", function()
      local dir = H.tmpdir()
      local f = assert(io.open(dir .. "/b.bin", "wb")); f:write(string.rep("\0", 3073 + 5)); f:close()
      assert.has_error(function() ds.core.data.read_cifar(dir .. "/b.bin") end,
        dir .. "/b.bin: not a CIFAR-10 binary batch: 3078 bytes is not a whole number of 3073-byte records (truncated or another format)")
      cifar_file(dir .. "/c.bin", 2, true)
      assert.has_error(function() ds.core.data.read_cifar(dir .. "/c.bin") end,
        dir .. "/c.bin: record 2 has label 10 (CIFAR-10 labels are 0..9)")
    end)

    it("checks where_class and split arguments", function()
      local train = ds.data.mnist{dir = mnist_dir(10, 10)}
      assert.has_error(function() train:where_class(11) end, "where_class: 11 is not a class of mnist/train (0..9)")
      assert.has_error(function() train:split(1.5) end, "split: fraction must be in (0, 1), got 1.5")
      assert.has_error(function() train:subset({11}) end, "index 1 is out of range, want an integer in 1..10")
    end)
  end)
end)
