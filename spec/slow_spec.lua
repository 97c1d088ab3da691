-- The claims the README's results rest on, at full size (make test-slow, a few minutes):
-- the white-box defaults on three data sets and several seeds, and the black-box mark
-- through its attacks with no false claim on unmarked models.
local H = require "helper"

local bin = H.root .. "/build/bin/deepsigns"

local function run(args)
  local p = assert(io.popen("cd " .. H.root .. " && " .. bin .. " " .. args .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  assert(ok, out)
  return out
end

-- The (BER, accuracy difference) columns of whitebox_defaults' rows.
local function defaults_rows(out)
  local rows = {}
  for diff, ber in out:gmatch("%d%%%s+%d+%.%d+%%%s+([+-]%d+%.%d+) |%s+(%d%.%d+)") do
    rows[#rows + 1] = {diff = tonumber(diff), ber = tonumber(ber)}
  end
  return rows
end

describe("#slow results at full size", function()
  local dir = H.tmpdir()

  it("white-box defaults: BER 0 within 1 point on Fashion-MNIST and MNIST-format, 3 seeds", function()
    local out = run("examples/whitebox_defaults.lua --sets fashion,mnist --seeds 3 --test-size 10000 --out " .. dir)
    local rows = defaults_rows(out)
    assert.equal(12, #rows, out)
    for _, r in ipairs(rows) do
      assert.equal(0, r.ber, out)
      assert.is_true(r.diff >= -1, out)
    end
  end)

  it("white-box defaults: BER 0 with the paper CNN on CIFAR-format data", function()
    local out = run("examples/whitebox_defaults.lua --sets cifar --seeds 1 --test-size 10000 --cifar-model cnn --out " .. dir)
    local rows = defaults_rows(out)
    assert.equal(2, #rows, out)
    for _, r in ipairs(rows) do
      assert.equal(0, r.ber, out)
      assert.is_true(r.diff >= -1, out)
    end
  end)

  it("black-box: owned after every attack of the example, no unmarked model claimed", function()
    local out = run("examples/blackbox.lua --out " .. dir)
    assert.matches("false claims: 0 of 5", out)
    local attacks = out:match("\nattack%s.-\n(.*)$")
    assert.is_string(attacks, out)
    local n = 0
    for line in attacks:gmatch("[^\n]+") do
      if line:match("%d+%.%d+%%") then
        n = n + 1
        assert.matches("true$", line)
      end
    end
    assert.equal(4, n, out)
  end)

  it("false positives: neither key claims any of 21 unmarked models", function()
    local out = run("examples/false_positives.lua --out " .. dir)
    assert.matches("false claims: white%-box 0 of the 12 models it can read %(p < 0%.001%), 0 by the paper's rule "
      .. "%(BER = 0%); black%-box 0 of 21", out)
  end)
end)
