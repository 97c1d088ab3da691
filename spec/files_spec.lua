local H = require "helper"
local ds = H.ds

local function read(path) local f = assert(io.open(path, "rb")); local s = f:read("a"); f:close(); return s end
local function write(path, s) local f = assert(io.open(path, "wb")); f:write(s); f:close() end

describe("model files (safetensors)", function()
  it("round-trips tensors and metadata bit-exactly", function()
    local dir = H.tmpdir()
    ds.manual_seed(3)
    local t = {a = ds.randn(3, 4), b = ds.tensor{1, 2, 3}, s = ds.tensor(7)}
    ds.save(dir .. "/t.safetensors", t, {seed = "3", note = "hello", arch = {kind = "x"}})
    local r, md = ds.load(dir .. "/t.safetensors")
    for k, v in pairs(t) do
      assert.same(v:size(), r[k]:size())
      assert.equal(ds.core.tensor.to_bytes(v), ds.core.tensor.to_bytes(r[k]))
    end
    assert.same({seed = "3", note = "hello", arch = '{"kind":"x"}'}, md)
    -- the header is 8-byte aligned as the format asks
    local s = read(dir .. "/t.safetensors")
    assert.equal(0, string.unpack("<I8", s) % 8)
  end)

  it("saves and loads models with their architecture", function()
    local dir = H.tmpdir()
    ds.manual_seed(2)
    local m = ds.models.mlp{20, 16, 8, 3, dropout = 0.1}
    m:save(dir .. "/m.safetensors", {seed = 2})
    local m2 = ds.models.mlp{20, 16, 8, 3, dropout = 0.1}
    local _, md = m2:load(dir .. "/m.safetensors")
    for name, p in m:named_parameters() do
      assert.equal(ds.core.tensor.to_bytes(p), ds.core.tensor.to_bytes(m2:state_dict()[name]))
    end
    assert.equal("deepsigns-model", md.format)
    assert.equal("2", md.seed)
    assert.matches("nn.Linear(20 -> 16, relu)", md.architecture, 1, true)
  end)

  it("loads weights saved by PyTorch by parameter name", function()
    local exp = dofile(H.root .. "/spec/fixtures/torch_mlp_expected.lua")
    local m = ds.models.mlp{20, 16, 8, 3}
    m:load(H.root .. "/spec/fixtures/torch_mlp.safetensors")
    m:eval()
    local y = m(ds.tensor(exp.x):reshape(4, 20))
    assert.tensor_near(ds.tensor(exp.logits):reshape(4, 3), y, 1e-5)
  end)

  it("refuses a file for another architecture, naming the file, and changes nothing", function()
    local dir = H.tmpdir()
    local p = dir .. "/m.safetensors"
    ds.models.mlp{20, 16, 8, 3}:save(p)
    local other = ds.models.mlp{20, 32, 8, 3}
    local before = other:layer("fc3").weight:clone()
    local ok, err = pcall(other.load, other, p)
    assert.is_false(ok)
    assert.matches(p .. " does not fit this model: load_state_dict: 'fc1.bias' has shape 16, the model expects 32", err, 1, true)
    assert.tensor_near(before, other:layer("fc3").weight, 0)
  end)

  it("never leaves a half-written file: a failed save keeps the old one", function()
    local dir = H.tmpdir()
    local p = dir .. "/m.safetensors"
    ds.save(p, {a = ds.ones(2)})
    local old = read(p)
    assert.has_error(function() ds.save(p, {a = ds.ones(2), b = "not a tensor"}) end, "save: 'b' is a string, not a tensor")
    assert.equal(old, read(p))
    assert.has_error(function() ds.save(dir .. "/no/such/dir/x.safetensors", {a = ds.ones(1)}) end)
    -- no temporary files are left behind
    local p2 = io.popen("ls " .. dir)
    local listing = p2:read("a"); p2:close()
    assert.equal("m.safetensors\n", listing)
  end)

  it("rejects corrupt, truncated and inconsistent files", function()
    local dir = H.tmpdir()
    local p = dir .. "/bad.safetensors"
    ds.save(p, {a = ds.ones(4)})
    local good = read(p)
    local cases = {
      {good:sub(1, #good - 3), "tensor 'a': data_offsets [0, 16] outside the 13 data bytes (truncated file?)"},
      {good:sub(1, 5), "not a safetensors file (only 5 bytes)"},
      {string.pack("<I8", 1 << 40) .. "{}", "header length 1099511627776 does not fit the file (10 bytes): truncated or not safetensors"},
      {string.pack("<I8", 5) .. "{abc}", "header is not valid JSON"},
      {string.pack("<I8", 2) .. "[]", "header is not valid JSON"},
    }
    local function entry(json, data)
      return string.pack("<I8", #json) .. json .. data
    end
    cases[#cases + 1] = {entry('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', "\0\0\0\0"),
      "tensor 'a': 4 bytes for shape {2} of F32 (expected 8)"}
    cases[#cases + 1] = {entry('{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}', "\0\0\0\0"),
      "tensor 'a' has unsupported dtype F16"}
    cases[#cases + 1] = {entry('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', "\0\0\0\0"),
      "tensor 'a': dimension 1 is out of range"}
    cases[#cases + 1] = {entry('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}', "\0\0\0\0\0\0"),
      "tensors 'a' and 'b' overlap"}
    cases[#cases + 1] = {entry('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', string.pack("<f", 0 / 0)),
      "tensor 'a' contains NaN or infinite values"}
    for _, c in ipairs(cases) do
      write(p, c[1])
      local ok, err = pcall(ds.load, p)
      assert.is_false(ok)
      assert.matches(p .. ": " .. c[2], err, 1, true)
    end
    assert.has_error(function() ds.load(dir .. "/missing") end)
  end)

  it("reads integer dtypes that PyTorch writes (BatchNorm's counter)", function()
    local dir = H.tmpdir()
    local json = '{"n":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}'
    write(dir .. "/i.safetensors", string.pack("<I8", #json) .. json .. string.pack("<i8", 42))
    local r = ds.load(dir .. "/i.safetensors")
    assert.equal(42, r.n:item())
  end)
end)
