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
    local ok, secs, rounds = pcall(lockstep.run, {fake {1, 1, 1, 1, 1, 1, 4}, fake {2, 1, 3, 1, 1, 2, 1, 9}})
    ds.clock = real
    assert(ok, secs)
    assert.same({10, 20}, secs)
    -- a run's last resume (it returns) is its own round; rounds where one run had
    -- finished are left out of the pairs
    assert.same({{1, 2}, {1, 1}, {1, 3}, {1, 1}, {1, 1}, {1, 2}, {4, 1}}, rounds)
    local over, se = lockstep.estimate(secs, rounds)
    assert.near(1, over, 1e-12)
    -- over pairs of rounds (one ABBA each; the odd last round is left out): differences
    -- 1, 2, 1 (mean 4/3, variance 1/3) over a base of 2 per pair
    assert.near(math.sqrt((1 / 3) / 3) / 2, se, 1e-12)
  end)

  it("does the collector's work between rounds and charges it by what each run allocated", function()
    local now, real = 0, ds.clock
    local kb, alloc, collect = 0, lockstep.allocated, lockstep.collect
    local collected = {}
    local function fake(costs, kbs)
      return function()
        for r, c in ipairs(costs) do
          now, kb = now + c, kb + kbs[r]
          coroutine.yield()
        end
      end
    end
    ds.clock = function() return now end
    lockstep.allocated = function() return kb end
    lockstep.collect = function(k) collected[#collected + 1] = k; now = now + k / 10 end -- 0.1 s a KB
    local was = collectgarbage("isrunning")
    local ok, secs, rounds = pcall(lockstep.run, {fake({1, 1}, {10, 30}), fake({2, 2}, {30, 10})})
    ds.clock, lockstep.allocated, lockstep.collect = real, alloc, collect
    assert(ok, secs)
    assert.equal(was, collectgarbage("isrunning")) -- the collector as it was
    assert.same({40, 40}, collected) -- each round's allocation, collected after it (none in the last)
    -- round 1: 10 and 30 KB, 4 s of collection: 1 s and 3 s; round 2: 3 s and 1 s
    assert.same({{2, 5}, {4, 3}}, rounds)
    assert.same({6, 8}, secs)
    -- an error in a run leaves the collector as it was
    local failing = function() error("boom") end
    assert.has_error(function() lockstep.run {failing} end, "boom")
    assert.equal(was, collectgarbage("isrunning"))
  end)

  it("gives the standard error of the mean difference over pairs of rounds", function()
    -- pair differences 1 + 3 = 4 and 2 + 0 = 2 (mean 3, sd sqrt(2)), a base of 20 per pair
    local over, se = lockstep.estimate({40, 46}, {{10, 11}, {10, 13}, {10, 12}, {10, 10}})
    assert.near(0.15, over, 1e-12)
    assert.near(math.sqrt(2 / 2) / 20, se, 1e-12)
    local _, none = lockstep.estimate({20, 24}, {{10, 11}, {10, 13}})
    assert.is_true(none ~= none) -- one pair: no spread to estimate from
  end)

  it("replicates pairs of fresh trainings: the overhead over all their time, the error from their spread", function()
    local run, made = lockstep.run, {}
    local fake = {{10, 11}, {10, 12}, {20, 21}} -- the pairs' seconds: +10%, +20%, +5%
    local k = 0
    lockstep.run = function(runs)
      assert.equal(2, #runs)
      k = k + 1
      return fake[k], {}
    end
    local ok, over, se, each = pcall(lockstep.replicated, function(i)
      made[#made + 1] = i
      return {}, {}, nil
    end, {}, 3, 1)
    lockstep.run = run
    assert(ok, over)
    assert.same({1, 2, 3}, made) -- fresh models for every pair
    assert.near(44 / 40 - 1, over, 1e-12) -- over all the time, not the mean of the pairs
    assert.same(3, #each)
    assert.near(0.2, each[2], 1e-12)
    -- the pairs' figures 0.1, 0.2, 0.05: mean 0.35/3, sd over 2 degrees of freedom
    local mean = 0.35 / 3
    local sd = math.sqrt(((0.1 - mean) ^ 2 + (0.2 - mean) ^ 2 + (0.05 - mean) ^ 2) / 2)
    assert.near(sd / math.sqrt(3), se, 1e-12)
  end)

  it("measures two trainings", function()
    local data = H.synthetic(1024, 8, 3, 1) -- 8 batches: 4 pairs of rounds
    ds.manual_seed(1)
    local a, b = ds.models.mlp{8, 16, 3}, ds.models.mlp{8, 16, 3}
    local over, se = lockstep.overhead(a, b, data, nil, 1)
    assert.is_true(over > -1 and over < 10)
    assert.is_true(se >= 0)
  end)
end)
