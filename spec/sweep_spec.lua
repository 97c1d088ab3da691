-- Sweeps over any named parameter: grids, job scripts and functions, rows that record
-- their parameters, status and resumption, failures kept and retried on request, the
-- command line, and workers killed mid-run without a row lost or doubled.
local H = require "helper"
local ds = H.ds
local SW = require "deepsigns.sweep"

local bin = H.root .. "/build/bin/deepsigns"

-- A job script: value from a and b, a seeded random draw (the job's seed), an optional
-- pause, and a failure of a = 3 while the file "fail" sits beside the script.
local JOB = [[
local here = debug.getinfo(1, "S").source:sub(2):match("^(.*)/")
return {params = {"a", "b", "seed", "pause"}, run = function(p)
  local ds = require "deepsigns"
  if p.pause then os.execute("sleep " .. p.pause) end
  local flag = io.open(here .. "/fail")
  if flag and p.a == 3 then flag:close(); error("asked to fail") end
  if flag then flag:close() end
  return {value = p.a * 10 + (p.b == "y" and 1 or 0), draw = ds.randn(4):sum():item()}
end}
]]

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

-- rows without the fields that differ between runs (timing, host)
local function stable(rows)
  local out = {}
  for i, r in ipairs(rows) do
    local c = {}
    for k, v in pairs(r) do if k ~= "seconds" and k ~= "host" then c[k] = v end end
    out[i] = c
  end
  return out
end

local function count_parts(out)
  local n = 0
  for f in require("lfs").dir(out .. ".d") do if f:match("%.json$") then n = n + 1 end end
  return n
end

describe("sweeps over a grid", function()
  local dir = H.tmpdir()
  local job = dir .. "/job.lua"
  write(job, JOB)

  it("runs every combination and records parameters, version, seed and status", function()
    local rows, st = ds.sweep{grid = {a = {1, 2, 3}, b = {"x", "y"}, seed = {7}}, job = job, out = dir .. "/g.jsonl",
      progress = false}
    assert.equal(6, #rows)
    assert.same({total = 6, finished = 6, failed = 0, running = 0, remaining = 0},
      {total = st.total, finished = st.finished, failed = st.failed, running = st.running, remaining = st.remaining})
    assert.equal("a=1,b=x,seed=7", rows[1].id)
    assert.equal("a=1,b=y,seed=7", rows[2].id) -- the last name varies fastest
    assert.equal(11, rows[2].value)
    assert.equal("y", rows[2].b)
    assert.equal(7, rows[2].seed)
    assert.equal(ds.version, rows[2].version)
    assert.equal("ok", rows[2].status)
    assert.is_number(rows[2].seconds)
    local csv = io.open(dir .. "/g.csv"):read("a")
    assert.matches("^a,b,seed,status,", csv)
    -- the same jobs from a function, in another order: the same rows (each job seeded by its seed)
    local fn = dofile(job).run
    local again = ds.sweep{grid = {b = {"x", "y"}, a = {1, 2, 3}, seed = {7}}, order = {"b", "a", "seed"}, job = fn,
      out = dir .. "/g2.jsonl", progress = false}
    local by_id = {}
    for _, r in ipairs(again) do by_id[r.id] = r end
    for _, r in ipairs(rows) do assert.equal(r.draw, by_id[r.id].draw) end
    assert.equal("a=1,b=x,seed=7", again[1].id)
    assert.equal("a=2,b=x,seed=7", again[2].id)
  end)

  it("refuses bad specs with a clear error", function()
    local out = dir .. "/bad.jsonl"
    assert.has_error(function() ds.sweep{grid = {a = {1}, bb = {"x"}}, job = job, out = out} end,
      "sweep: unknown grid parameter 'bb' (did you mean 'b'?) (this job takes: a, b, seed, pause)")
    assert.has_error(function() ds.sweep{grid = {}, job = job, out = out} end,
      "sweep: 'grid' must name at least one parameter with a list of values, e.g. grid = {bits = {16, 32}}")
    assert.has_error(function() ds.sweep{grid = {a = {}}, job = job, out = out} end, "sweep: grid parameter 'a' has no values")
    assert.has_error(function() ds.sweep{grid = {a = {0 / 0}}, job = job, out = out} end,
      "sweep: grid parameter 'a' value 1 is NaN")
    assert.has_error(function() ds.sweep{grid = {a = {1}}, job = job, out = out, worker = 2} end,
      "sweep: unknown option 'worker' (did you mean 'workers'?) (options: alpha, attacks, grid, job, log, max_drop, mode, "
      .. "name, options, order, out, p, progress, realign, retry_failed, seed, seeds, setup, setup_args, setups, slurm, "
      .. "threads, workers)")
    assert.has_error(function() ds.sweep{grid = {a = {1}}, job = dir .. "/missing.lua", out = out} end)
    assert.has_error(function() ds.sweep{grid = {a = {1}}, job = function() end, out = out, mode = "jobs"} end,
      "sweep: a job list runs in other processes: give 'job' as the path of a Lua file")
    assert.has_error(function() ds.sweep{grid = {attack = {"prunne"}, strength = {1}}, setup = job, out = out} end,
      "sweep: unknown attack 'prunne'")
    assert.has_error(function() ds.sweep{grid = {attack = {"prune"}, rate = {1}}, setup = job, out = out} end,
      "sweep: unknown grid parameter 'rate' (this job takes: attack, strength, seed, setup)")
    assert.has_error(function() ds.sweep_status(dir .. "/nothing.jsonl") end,
      "sweep: no sweep spec at " .. dir .. "/nothing.spec.json")
  end)

  it("keeps failed jobs with their error, retries them only when asked", function()
    local out = dir .. "/f.jsonl"
    local spec = {grid = {a = {1, 2, 3, 4}, b = {"x"}}, job = job, out = out, progress = false}
    write(dir .. "/fail", "")
    local rows, st = ds.sweep(spec)
    assert.equal(3, #rows)
    assert.equal(1, st.failed)
    assert.equal("a=3,b=x", st.failed_jobs[1].id)
    assert.matches("asked to fail", st.failed_jobs[1].error)
    local text = sh(bin .. " sweep status " .. out)
    assert.matches("4 jobs: 3 finished, 1 failed, 0 running, 0 remaining", text, 1, true)
    assert.matches("failed   a=3,b=x: .*asked to fail", text)
    os.remove(dir .. "/fail")
    local said = {}
    spec.progress, spec.log = true, function(m) said[#said + 1] = m end
    rows = ds.sweep(spec) -- not retried
    assert.equal(3, #rows)
    assert.matches("1 failed before (retry_failed = true runs them)", said[1], 1, true)
    spec.retry_failed = true
    rows, st = ds.sweep(spec)
    assert.equal(4, #rows)
    assert.equal(0, st.failed)
    assert.equal(30, rows[3].value)
  end)

  it("stops at a setup that errors, keeping what was done", function()
    local good, bad = dir .. "/good_setup.lua", dir .. "/bad_setup.lua"
    write(good, string.format([[
package.path = %q .. ";" .. package.path
local H = require "helper"
return function()
  local ds = require "deepsigns"
  ds.manual_seed(1)
  local data = H.synthetic(300, 8, 3, 2)
  local m = ds.models.mlp{8, 16, 3}
  ds.train{model = m, data = data, epochs = 2, progress = false}
  return {model = m, test = data, data = data}
end
]], H.root .. "/spec/?.lua"))
    write(bad, "return function() error('no such model file') end\n")
    local out = dir .. "/s.jsonl"
    assert.has_error(function()
      ds.sweep{setups = {{name = "good", path = good}, {name = "bad", path = bad}},
        grid = {setup = {"good", "bad"}, attack = {"noise"}, strength = {0.1, 0.2}}, out = out, progress = false}
    end, "sweep: the setup " .. bad .. " failed: no such model file")
    local st = ds.sweep_status(out)
    assert.equal(2, st.finished)
    assert.equal(2, st.remaining)
    assert.equal(0, st.running) -- no marker left behind
  end)

  it("writes and submits a Slurm script; says so when there is no Slurm", function()
    local out = dir .. "/slurm.jsonl"
    local spec = {grid = {a = {1, 2}}, job = job, out = out, threads = 2, mode = "jobs", name = "capacity",
      slurm = {partition = "cpu", time = "0:30:00", mem = "2G", modules = {"openblas"}, max_running = 8}}
    local files = ds.sweep(spec)
    local script = io.open(files.slurm):read("a")
    for _, line in ipairs {"#SBATCH --job-name=capacity", "#SBATCH --array=1-2%8", "#SBATCH --cpus-per-task=2",
      "#SBATCH --partition=cpu", "#SBATCH --time=0:30:00", "#SBATCH --mem=2G", "module load openblas",
      "export OMP_NUM_THREADS=2"} do
      assert.matches(line, script, 1, true)
    end
    assert.matches("sweep job '[^']*slurm%.spec%.json' \"%$SLURM_ARRAY_TASK_ID\"", script)
    assert.has_error(function() ds.sweep{grid = {a = {1}}, job = job, out = out, slurm = {partitoin = "x"}} end,
      "sweep: slurm: unknown option 'partitoin' (did you mean 'partition'?) (options: account, cpus, max_running, "
      .. "mem, modules, options, partition, qos, time)")
    -- a machine without sbatch: the script stays, the error says where
    local msg = select(1, sh("PATH=/nonexistent " .. bin .. " -e " .. string.format("%q", string.format(
      "ds.sweep{grid = {a = {1}}, job = %q, out = %q, mode = 'slurm'}", job, dir .. "/noslurm.jsonl"))))
    assert.matches("sbatch is not on PATH", msg, 1, true)
    assert.is_not_nil(io.open(dir .. "/noslurm.slurm"))
  end)

  it("loses no row and doubles none when workers are killed mid-run", function()
    local out = dir .. "/k.jsonl"
    local spec = {grid = {a = {1, 2, 3, 4, 5, 6, 7, 8}, b = {"x"}, pause = {0.3}}, job = job, out = out, progress = false}
    local files = ds.sweep{grid = spec.grid, job = job, out = out, mode = "jobs"}
    local pids = {}
    for w = 1, 2 do
      local p = assert(io.popen(string.format("%s sweep worker '%s' %d 2 >/dev/null 2>&1 & echo $!", bin, files.spec, w)))
      pids[w] = p:read("l")
      p:close()
    end
    local waited = 0
    while count_parts(out) < 3 and waited < 200 do os.execute("sleep 0.05"); waited = waited + 1 end
    os.execute("kill -9 " .. table.concat(pids, " "))
    os.execute("sleep 0.2")
    local st = ds.sweep_status(out)
    assert.is_true(st.finished >= 3 and st.finished < 8, "finished " .. st.finished)
    assert.equal(0, st.running) -- the killed workers' jobs are not running any more
    assert.equal(8, st.finished + st.remaining)
    -- a corrupt part file counts as not done and is redone
    write(out .. ".d/" .. ds.core.sys.sha256("a=1,b=x,pause=0.3"):sub(1, 20) .. ".json", "{\"id\": \"a=1,b=x,pa")
    local said = {}
    spec.workers, spec.progress, spec.log = 2, true, function(m) said[#said + 1] = m end
    local rows = ds.sweep(spec)
    assert.matches("already done", said[1], 1, true)
    assert.equal(8, #rows)
    local ids = {}
    for _, r in ipairs(rows) do assert.is_nil(ids[r.id]); ids[r.id] = true end
    -- equal, row for row, to one uninterrupted run in this process
    local whole = ds.sweep{grid = spec.grid, job = job, out = dir .. "/k2.jsonl", progress = false}
    assert.same(stable(whole), stable(rows))
    -- merging again gives the same file
    local before = io.open(out):read("a")
    sh(bin .. " sweep merge " .. files.spec)
    assert.equal(before, io.open(out):read("a"))
  end)

  it("has a command line", function()
    local text, ok = sh(bin .. " sweep")
    assert.is_falsy(ok)
    assert.matches("usage: deepsigns sweep status SPEC", text, 1, true)
    text, ok = sh(bin .. " sweep frobnicate x")
    assert.is_falsy(ok)
    assert.matches("unknown command 'frobnicate'", text, 1, true)
    local out = dir .. "/c.jsonl"
    ds.sweep{grid = {a = {1, 2}, b = {"y"}}, job = job, out = out, mode = "jobs"}
    text, ok = sh(bin .. " sweep status " .. out)
    assert.is_true(ok)
    assert.matches("2 jobs: 0 finished, 0 failed, 0 running, 2 remaining", text, 1, true)
    text, ok = sh(bin .. " sweep job " .. out .. " 2")
    assert.is_true(ok, text)
    text = sh(bin .. " sweep run " .. out)
    assert.matches("1 of 2 jobs already done, 1 to run", text, 1, true)
    assert.matches("2/2 done", text, 1, true)
    assert.equal(2, #ds.report.read_jsonl(out))
  end)
end)
