-- examples/lockstep.lua: the overhead measurement make bench and the examples use
package.path = "examples/?.lua;" .. package.path
local H = require "helper"
local ds = H.ds
local lockstep = require "lockstep"

-- runs on a fake clock (ds.clock swapped for the test): each round of run i advances it
-- by cost(i, round), so the times are exact and the test times nothing
describe("lockstep", function()
  it("times each run by rounds and estimates the overhead with its standard error", function()
    local now, real = 0, ds.clock
    local function fake(costs)
      return function()
        for _, c in ipairs(costs) do
          now = now + c
          coroutine.yield()
        end
      end
    end
    ds.clock = function() return now end
    local ok, secs, rounds = pcall(lockstep.run, {fake {1, 1, 1, 1, 5}, fake {2, 1, 2, 1, 1, 7}})
    ds.clock = real
    assert(ok, secs)
    assert.same({9, 14}, secs)
    -- a run's last resume (it returns) is its own round; rounds where one run had
    -- finished are left out of the pairs
    assert.same({{1, 2}, {1, 1}, {1, 2}, {1, 1}, {5, 1}}, rounds)
    local over, se = lockstep.estimate(secs, rounds)
    assert.near(14 / 9 - 1, over, 1e-12)
    -- differences 1, 0, 1, 0, -4 (mean -0.4); run 1's rounds average 1.8
    local d, mean = {1, 0, 1, 0, -4}, -0.4
    local var = 0
    for _, x in ipairs(d) do var = var + (x - mean) ^ 2 end
    var = var / 4
    assert.near(math.sqrt(var / 5) / 1.8, se, 1e-12)
  end)

  it("gives the standard error of the mean difference", function()
    -- differences 1, 3 (mean 2, sd sqrt(2)) over base rounds of 10: se = sqrt(2)/sqrt(2)/10
    local over, se = lockstep.estimate({20, 24}, {{10, 11}, {10, 13}})
    assert.near(0.2, over, 1e-12)
    assert.near(0.1, se, 1e-12)
    local _, none = lockstep.estimate({10, 11}, {{10, 11}})
    assert.is_true(none ~= none) -- one round: no spread to estimate from
  end)

  it("measures two trainings", function()
    local data = H.synthetic(256, 8, 3, 1)
    ds.manual_seed(1)
    local a, b = ds.models.mlp{8, 16, 3}, ds.models.mlp{8, 16, 3}
    local over, se = lockstep.overhead(a, b, data, nil, 1)
    assert.is_true(over > -1 and over < 10)
    assert.is_true(se >= 0)
  end)
end)
