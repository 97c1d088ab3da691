-- Training overhead measured in lockstep: a plain and a marked ds.train run as
-- coroutines switched every batch inside the loss (the order rotates every round),
-- so both see the same machine at the same moment. On a shared machine, epochs run one
-- after the other differ by +-10% on their own; each side's time here is summed over
-- whole epochs. Used by examples/bench/run.lua and examples/whitebox.lua.
local ds = require "deepsigns"
local F = require "deepsigns.functional"

local M = {}

-- The collector is stopped while the runs are timed and does its work between rounds:
-- M.collect(kb) makes the incremental steps that the round's allocation (M.allocated()
-- around each resume) would have triggered, and its time is charged to the runs in
-- proportion to what each allocated. Inside the timed resumes its steps would fall on
-- whichever run crosses the threshold, which would then pay for both
-- (doc/performance.md).
M.allocated = function() return collectgarbage("count") end
M.collect = function(kb) collectgarbage("step", math.ceil(kb)) end

-- runs: list of functions; returns the seconds spent inside each, and the seconds of
-- each round (one batch of each run; rounds where some run had finished are left out)
function M.run(runs)
  local cos, secs, rounds = {}, {}, {}
  for i, run in ipairs(runs) do cos[i], secs[i] = coroutine.create(run), 0 end
  local running = collectgarbage("isrunning")
  collectgarbage("stop")
  local ok, err = pcall(function()
    local live, round = #cos, 0
    while live > 0 do
      round = round + 1
      local this, kb, total, whole = {}, {}, 0, live == #cos
      for j = 1, #cos do
        -- the order rotates by one every round: no run ever follows itself (its data
        -- still in cache) more often than another (for two runs: ABBA)
        local i = (j + round - 2) % #cos + 1
        local co = cos[i]
        if coroutine.status(co) ~= "dead" then
          local a0 = M.allocated()
          local t = ds.clock()
          local ok, err = coroutine.resume(co)
          local dt = ds.clock() - t
          kb[i] = math.max(0, M.allocated() - a0)
          total = total + kb[i]
          secs[i], this[i] = secs[i] + dt, dt
          if not ok then error(err, 0) end
          if coroutine.status(co) == "dead" then live, whole = live - 1, false end
        end
      end
      if total > 0 then
        local t = ds.clock()
        M.collect(total)
        local gc = ds.clock() - t
        for i, a in pairs(kb) do
          local share = gc * a / total
          secs[i], this[i] = secs[i] + share, this[i] + share
        end
      end
      if whole then rounds[#rounds + 1] = this end
    end
  end)
  if running then collectgarbage("restart") end
  if not ok then error(err, 0) end
  return secs, rounds
end

local function yielding_loss(logits, y)
  local l = F.cross_entropy(logits, y)
  coroutine.yield()
  return l
end

-- A run for M.run: `epochs` epochs of ds.train on `data` (regularizers may be nil),
-- yielding after every batch.
function M.trainer(model, data, regularizers, epochs)
  return function()
    ds.train{model = model, data = data, epochs = epochs, progress = false, loss = yielding_loss,
      regularizers = regularizers}
  end
end

-- Extra time of run 2 over run 1 as a fraction, from M.run's results, and its standard
-- error from the spread of the per-batch differences. The differences alternate with
-- the ABBA order (the run that follows itself finds its data warm), so the spread is
-- taken over pairs of rounds, each one ABBA. NaN with fewer than two pairs.
function M.estimate(secs, rounds)
  local n, sum, sq, base = 0, 0, 0, 0
  for i = 1, #rounds - 1, 2 do
    local r, q = rounds[i], rounds[i + 1]
    local d = (r[2] - r[1]) + (q[2] - q[1])
    n, sum, sq, base = n + 1, sum + d, sq + d * d, base + r[1] + q[1]
  end
  local se = 0 / 0
  if n > 1 and base > 0 then
    local mean = sum / n
    se = math.sqrt(math.max(0, (sq - n * mean * mean) / (n - 1)) / n) / (base / n)
  end
  return secs[2] / secs[1] - 1, se
end

-- Extra time of training `marked` with `regularizers` (nil: none, the method's own
-- noise) over training `plain`, as a fraction, over `epochs` epochs of `data`, and its
-- standard error.
local function run_pair(plain, marked, data, regularizers, epochs)
  return M.run {M.trainer(plain, data, nil, epochs), M.trainer(marked, data, regularizers, epochs)}
end

function M.overhead(plain, marked, data, regularizers, epochs)
  return M.estimate(run_pair(plain, marked, data, regularizers, epochs))
end

-- The overhead over `n_pairs` pairs of fresh trainings, make(i) -> plain, marked,
-- regularizers for pair i, each trained in lockstep for `epochs` epochs of `data`. A
-- pair's two trainings keep the timing offset they start with for the whole run (where
-- their buffers landed, or the machine they met), so one long pair measures its own two
-- instances; several shorter ones average over them. Returns the overhead over all the
-- pairs' time, its standard error from the spread of the pairs' own figures (NaN with
-- one pair), and the list of those figures.
function M.replicated(make, data, n_pairs, epochs)
  local s1, s2, each, sum = 0, 0, {}, 0
  for i = 1, n_pairs do
    local plain, marked, regularizers = make(i)
    local secs = run_pair(plain, marked, data, regularizers, epochs)
    s1, s2 = s1 + secs[1], s2 + secs[2]
    each[i] = secs[2] / secs[1] - 1
    sum = sum + each[i]
  end
  local se = 0 / 0
  if n_pairs > 1 then
    local mean, ss = sum / n_pairs, 0
    for _, v in ipairs(each) do ss = ss + (v - mean) ^ 2 end
    se = math.sqrt(ss / (n_pairs - 1) / n_pairs)
  end
  return s2 / s1 - 1, se, each
end

return M
