-- The examples' data and model paths on small files written in the real MNIST and
-- CIFAR-10 formats (Fashion-MNIST-derived: examples/common.lua), run as a user runs
-- them: the paper's tables with the MNIST CNN and the CIFAR-10 Wide ResNet, and the
-- white-box defaults on both formats.
local H = require "helper"
local ds = H.ds
package.path = H.root .. "/examples/?.lua;" .. package.path
local C = require "common"

local bin = H.root .. "/build/bin/deepsigns"

local function run(args)
  local p = assert(io.popen("cd " .. H.root .. " && " .. bin .. " " .. args .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  assert(ok, out)
  return out
end

describe("examples on files in the real formats", function()
  local dir = H.tmpdir()
  local mnist = C.derived_data("mnist", dir .. "/mnist", 600, 200, 1)
  local cifar = C.derived_data("cifar", dir .. "/cifar", 400, 100, 2)
  local big = dir .. "/big" -- the defaults' check: 2,000 training images

  it("writes sets the loaders read back", function()
    local tr, te = ds.data.mnist{dir = mnist}
    assert.equal(600, #tr)
    assert.equal(200, #te)
    assert.same({1, 28, 28}, tr:input_shape())
    local ctr, cte = ds.data.cifar10{dir = cifar}
    assert.equal(400, #ctr)
    assert.equal(100, #cte)
    assert.same({3, 32, 32}, ctr:input_shape())
  end)

  it("paper tables: MNIST-format with the paper CNN", function()
    local out = run("examples/paper_tables.lua --mnist " .. mnist .. " --model cnn --epochs 2 --K 6 --out " .. dir)
    assert.matches("MNIST, paper CNN", out)
    assert.matches("| white%-box N = 4 |", out)
    assert.matches("| white%-box N = 32 |", out)
    assert.matches("| black%-box K = 6 | [%d.]+%% | [+-][%d.]+ | 0 mism%.", out)
  end)

  it("paper tables: CIFAR-10-format with a Wide ResNet (white-box on block3, channel means)", function()
    local out = run("examples/paper_tables.lua --cifar " .. cifar .. " --model wrn --wrn-depth 10 --wrn-widen 1 "
      .. "--epochs 2 --K 6 --out " .. dir)
    assert.matches("CIFAR%-10, Wide ResNet", out)
    assert.matches("white%-box in layer block3", out)
    assert.matches("| black%-box K = 6 |", out)
  end)

  it("the paper's studies as sweeps: capacity, overhead, robustness", function()
    local out = run("examples/sweeps.lua --train-size 3000 --epochs 3 --seeds 1 --out " .. dir .. "/sweeps")
    assert.matches("| 16 | 0.0000 | 0.0000 |", out, 1, true)
    assert.matches("| paper | ", out, 1, true)
    assert.matches("| prune | 0.5 | 1 |", out, 1, true)
    local st = ds.sweep_status(dir .. "/sweeps/sweep_robustness.jsonl")
    assert.equal(st.total, st.finished)
    -- run again: every sweep resumes with nothing left to do
    out = run("examples/sweeps.lua --study capacity --train-size 3000 --epochs 3 --seeds 1 --out " .. dir .. "/sweeps")
    assert.matches("7 of 7 jobs already done, 0 to run", out, 1, true)
  end)

  it("white-box defaults embed 32 bits in one class and 64 in two at BER 0 in both formats", function()
    local out = run("examples/whitebox_defaults.lua --sets mnist,cifar --seeds 1 --train-size 2000 --test-size 1000 "
      .. "--epochs 10 --cifar-model mlp --out " .. big)
    assert.matches("worst BER 0.000", out)
    assert.equal(4, select(2, out:gsub("| +0.000 +%d", "")))
  end)
end)
