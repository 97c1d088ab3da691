local H = require "helper"
local ds = H.ds

describe("checkpoints", function()
  local data = H.synthetic(400, 10, 3, 2)

  local function run(epochs, extra)
    ds.manual_seed(3)
    local m = ds.models.mlp{10, 32, 32, 3, dropout = 0.2}
    local opt = ds.optim.Adam(m:parameters(), {lr = 3e-3})
    local args = {model = m, data = data, epochs = epochs, optimizer = opt, batch_size = 32, progress = false,
      schedule = ds.optim.StepLR(opt, {step_size = 1, gamma = 0.7})}
    for k, v in pairs(extra or {}) do args[k] = v end
    local h = ds.train(args)
    return m, h
  end

  it("resumes to exactly the weights of an uninterrupted run", function()
    local dir = H.tmpdir()
    local full = run(4)
    -- interrupted after 2 epochs (the process "died"), then resumed in a fresh model
    run(2, {checkpoint = dir .. "/ck.safetensors"})
    ds.manual_seed(12345) -- whatever the generator holds now, the checkpoint restores it
    local m = ds.models.mlp{10, 32, 32, 3, dropout = 0.2}
    local opt = ds.optim.Adam(m:parameters(), {lr = 3e-3})
    local h = ds.train{model = m, data = data, epochs = 4, optimizer = opt, batch_size = 32, progress = false,
      schedule = ds.optim.StepLR(opt, {step_size = 1, gamma = 0.7}), checkpoint = dir .. "/ck.safetensors"}
    assert.equal(4, #h)
    for name, p in full:named_parameters() do
      assert.equal(ds.core.tensor.to_bytes(p), ds.core.tensor.to_bytes(m:state_dict()[name]), name)
    end
  end)

  it("resumes a white-box embedding with its centres", function()
    local dir = H.tmpdir()
    local wb = ds.watermark.whitebox
    local function embed(epochs, extra)
      ds.manual_seed(3)
      local m = ds.models.mlp{10, 32, 32, 3}
      local key = wb.keygen{model = m, layer = "fc2", data = data, bits = 8, seed = 1, variant = "reference", keys_per_class = 20}
      local args = {model = m, key = key, data = data, epochs = epochs, batch_size = 32, progress = false,
        optimizer = ds.optim.Adam(m:parameters(), {lr = 3e-3})}
      for k, v in pairs(extra or {}) do args[k] = v end
      wb.embed(args)
      return m, key
    end
    local full, k1 = embed(3)
    local half = embed(1, {checkpoint = dir .. "/c.safetensors"})
    local _, md = ds.load(dir .. "/c.safetensors")
    assert.equal("1", md.epoch)
    assert.are_not.equal(ds.core.tensor.to_bytes(full:layer("fc2").weight), ds.core.tensor.to_bytes(half:layer("fc2").weight))
    local res, k2 = embed(3, {checkpoint = dir .. "/c.safetensors"})
    assert.equal(ds.core.tensor.to_bytes(full:layer("fc2").weight), ds.core.tensor.to_bytes(res:layer("fc2").weight))
    assert.equal(ds.core.tensor.to_bytes(k1.centres), ds.core.tensor.to_bytes(k2.centres))
  end)

  it("refuses a checkpoint of another model", function()
    local dir = H.tmpdir()
    run(1, {checkpoint = dir .. "/ck.safetensors"})
    local other = ds.models.mlp{10, 16, 3}
    assert.has_error(function()
      ds.train{model = other, data = data, epochs = 2, progress = false, checkpoint = dir .. "/ck.safetensors"}
    end)
  end)
end)
