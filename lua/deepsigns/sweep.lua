-- Sweeps: a grid of named parameters, one job per point, run in this process, in worker
-- processes, by GNU parallel or as a Slurm array. Every finished job's row is written
-- at once to its own part file (sweep/store.lua), so a sweep resumes where it stopped,
-- and any number of processes and nodes can share one result set.
--
-- A job is either a job script (a Lua file returning function(params) -> row table, or
-- {params = {names}, run = function(params)}), or an attack on a marked model from a
-- setup script (attack, strength, seed; see ds.robustness). Each row holds the job's
-- values, its parameters, the code's version, the seed, status ("ok" or "failed", with
-- the error), the host and the seconds it took.
local core = require "deepsigns.core"
local U = require "deepsigns.util"
local Plan = require "deepsigns.sweep.plan"
local Store = require "deepsigns.sweep.store"
local Scripts = require "deepsigns.sweep.scripts"

local SW = {}

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Files a sweep loads (job and setup scripts), once per process, by path.
local loaded = {}
local function load_value(path, what)
  if loaded[path] == nil then
    local chunk, err = loadfile(path)
    if not chunk then error("sweep: cannot load the " .. what .. " " .. path .. ": " .. tostring(err), 0) end
    local ok, v = pcall(chunk)
    if not ok then error("sweep: the " .. what .. " " .. path .. " failed: " .. U.strip_location(v), 0) end
    loaded[path] = v == nil and false or v
  end
  return loaded[path]
end

-- The job function of a job sweep, and the parameter names it declares (nil: any).
local function job_function(spec)
  local j = spec.job
  if j == Plan.FUNCTION_JOB then
    error("sweep: this sweep's job is a function of the process that started it; give 'job' as the path of a "
      .. "Lua file to run its jobs elsewhere", 0)
  end
  if type(j) == "string" then j = load_value(j, "job") end
  if type(j) == "function" then return j, nil end
  if type(j) == "table" and type(j.run) == "function" then return j.run, j.params end
  error("sweep: the job " .. tostring(spec.job) .. " must return a function(params) -> row, or "
    .. "{params = {names...}, run = function(params)}", 0)
end

-- The marked model and keys of an attack sweep's setup (by name for `setups`), once.
local setups = {}
local function setup_config(spec, name)
  local path = spec.setup
  if spec.setups then
    path = nil
    for _, st in ipairs(spec.setups) do if st.name == name then path = st.path end end
    if not path then error("sweep: no setup named " .. tostring(name) .. " in 'setups'", 0) end
  end
  if not setups[path] then
    local fn = load_value(path, "setup")
    if type(fn) ~= "function" then error("sweep: the setup " .. path .. " must return a setup function", 0) end
    local ok, cfg = pcall(fn, spec.setup_args or {})
    if not ok then error("sweep: the setup " .. path .. " failed: " .. U.strip_location(cfg), 0) end
    if type(cfg) ~= "table" or cfg.model == nil or cfg.test == nil then
      error("sweep: the setup " .. path .. " must return {model=, test=, ...} (see ds.robustness)", 0)
    end
    cfg.base_accuracy = cfg.base_accuracy or require("deepsigns.train").evaluate(cfg.model, cfg.test).accuracy
    setups[path] = cfg
  end
  return setups[path]
end

local function attack_options(spec, attack)
  for _, a in ipairs(spec.attacks or {}) do if a.name == attack then return a.options end end
  return spec.options and spec.options[attack]
end

-- A function running the job's work; raises (stopping the sweep) when its job or setup
-- script cannot be loaded, before any work starts.
local function work_of(spec, params, seed)
  if spec.job ~= nil then
    local fn = job_function(spec)
    return function() return fn(params) end
  end
  local base = setup_config(spec, params.setup)
  return function()
    local cfg = {}
    for k, v in pairs(base) do cfg[k] = v end
    cfg.options, cfg.max_drop, cfg.alpha, cfg.p, cfg.realign = attack_options(spec, params.attack), spec.max_drop,
      spec.alpha, spec.p, spec.realign
    return (require("deepsigns.robustness").run_one(cfg, params.attack, params.strength, seed))
  end
end

-- Row values are numbers, strings and booleans; NaN and infinities become strings
-- (JSON has no such numbers).
local function row_of(result)
  if type(result) ~= "table" then error("the job returned a " .. type(result) .. ", not a row table", 0) end
  local row = {}
  for k, v in pairs(result) do
    local t = type(v)
    if type(k) ~= "string" then error("the job's row has a non-string key " .. tostring(k), 0) end
    if t == "number" and (v ~= v or v == math.huge or v == -math.huge) then v = tostring(v)
    elseif t ~= "number" and t ~= "string" and t ~= "boolean" then
      error("the job's row field '" .. k .. "' is a " .. t .. " (rows hold numbers, strings and booleans)", 0)
    end
    row[k] = v
  end
  return row
end

--- Runs one job and writes its row (status "ok", or "failed" with the error); returns
-- the row. An interrupt (Ctrl-C) or a job or setup script that cannot be loaded is
-- raised instead, and leaves no row.
function SW.run_job(spec, job)
  core.sys.set_num_threads(spec.threads or 1)
  local seed = job.params.seed or spec.seed or 1
  local work = work_of(spec, job.params, seed)
  Store.mark_running(spec.out, job.id)
  core.rng.seed(seed)
  local t0 = core.sys.clock()
  local ok, result = pcall(function() return row_of(work()) end)
  if not ok and tostring(result):match("interrupted") then
    Store.clear_marker(spec.out, job.id)
    error(result, 0)
  end
  local row = ok and result or {error = tostring(result)}
  for k, v in pairs(job.params) do row[k] = v end
  row.id, row.version, row.seed, row.status = job.id, U.VERSION, seed, ok and "ok" or "failed"
  row.host, row.seconds = core.sys.hostname(), core.sys.clock() - t0
  Store.write_row(spec.out, job.id, row)
  return row
end

-- Each job's state: "finished", "failed", "running", "remaining" (a job whose process
-- was killed is remaining again, and counted as stale).
local function states(spec, jobs)
  local rows, running = Store.rows(spec.out), Store.running(spec.out)
  local out = {}
  for i, job in ipairs(jobs) do
    local row, mark = rows[job.id], running[job.id]
    local s = {job = job, row = row, mark = mark}
    if mark and mark.alive ~= false then s.state = "running"
    elseif row and row.status == "ok" then s.state = "finished"
    elseif row and row.status == "failed" then s.state = "failed"
    else s.state = "remaining"; s.stale = mark ~= nil end
    out[i] = s
  end
  return out
end

local function summarize(spec, list)
  local st = {out = spec.out, total = #list, finished = 0, failed = 0, running = 0, remaining = 0, stale = 0,
    failed_jobs = {}, running_jobs = {}}
  for _, s in ipairs(list) do
    st[s.state] = st[s.state] + 1
    if s.stale then st.stale = st.stale + 1 end
    if s.state == "failed" then st.failed_jobs[#st.failed_jobs + 1] = {id = s.job.id, error = s.row.error} end
    if s.state == "running" then
      st.running_jobs[#st.running_jobs + 1] = {id = s.job.id, host = s.mark.host, pid = s.mark.pid, started = s.mark.started}
    end
  end
  return st
end

local function duration(s)
  s = math.max(0, math.floor(s + 0.5))
  if s < 60 then return s .. "s" end
  if s < 3600 then return string.format("%dm%02ds", s // 60, s % 60) end
  return string.format("%dh%02dm", s // 3600, s % 3600 // 60)
end

--- A sweep's state from its result files: {total, finished, failed, running, remaining,
-- stale (jobs whose process died; counted as remaining), failed_jobs = {{id, error}},
-- running_jobs = {{id, host, pid, started}}}.
-- @param spec a sweep spec, or the path of its .spec.json or result file
-- @usage print(ds.sweep_status("results/capacity.jsonl").remaining)
function SW.status(spec)
  if type(spec) == "string" then spec = Plan.read(spec)
  else
    Plan.check(spec)
    spec = Plan.resolved(spec)
  end
  return summarize(spec, states(spec, Plan.jobs(spec)))
end

--- The text `deepsigns sweep status` prints for a status table.
function SW.format_status(st)
  local lines = {string.format("sweep %s: %d jobs: %d finished, %d failed, %d running, %d remaining%s", st.out, st.total,
    st.finished, st.failed, st.running, st.remaining, st.stale > 0 and
    string.format(" (%d of them stopped without a row: killed?)", st.stale) or "")}
  for _, f in ipairs(st.failed_jobs) do lines[#lines + 1] = "failed   " .. f.id .. ": " .. tostring(f.error) end
  for _, r in ipairs(st.running_jobs) do
    lines[#lines + 1] = string.format("running  %s on %s (pid %s) for %s", r.id, tostring(r.host), tostring(r.pid),
      duration(os.time() - (r.started or os.time())))
  end
  return table.concat(lines, "\n")
end

-- Whether this run should start a job in state s.
local function to_run(spec, s)
  return s.state == "remaining" or (s.state == "failed" and spec.retry_failed == true)
end

-- Checks the spec (and the job script's declared parameters); returns the resolved
-- spec and its jobs.
local function prepare(spec)
  local kind = Plan.check(spec)
  spec = Plan.resolved(spec)
  if kind == "job" then
    local _, known = job_function(spec)
    if known then Plan.check_params(spec, known) end
  end
  return spec, Plan.jobs(spec)
end

-- The CSV's first columns: the parameters, in grid order.
local function lead_columns(spec)
  local names = {"setup", "attack", "strength", "seed"}
  if spec.grid then
    names = {}
    if spec.order then for i, n in ipairs(spec.order) do names[i] = n end
    else
      for n in pairs(spec.grid) do names[#names + 1] = n end
      table.sort(names)
    end
  end
  names[#names + 1] = "status"
  return names
end

-- Progress lines: done/total, failures, elapsed and the time left at this run's pace.
local function progress_reporter(spec, total, already, todo)
  local log = spec.log or print
  local t0, ran, failed = core.sys.clock(), 0, 0
  return function(id, ok, err)
    ran = ran + 1
    if not ok then failed = failed + 1 end
    if spec.progress == false then return end
    local elapsed = core.sys.clock() - t0
    local left = todo - ran
    log(string.format("sweep: %d/%d done%s, %s elapsed%s - %s %s%s", already + ran, total,
      failed > 0 and string.format(" (%d failed)", failed) or "", duration(elapsed),
      left > 0 and (", ETA " .. duration(elapsed / ran * left)) or "", id, ok and "ok" or "FAILED",
      ok and "" or (": " .. tostring(err))))
  end
end

local function run_here(spec, list, report)
  for _, s in ipairs(list) do
    if to_run(spec, s) then
      local row = SW.run_job(spec, s.job)
      report(s.job.id, row.status == "ok", row.error)
    end
  end
end

local function run_workers(spec, spec_path, workers, report)
  local procs = {}
  for w = 1, workers do
    procs[w] = io.popen(string.format("OMP_NUM_THREADS=%d OMP_WAIT_POLICY=passive %s sweep worker %s %d %d 2>&1",
      spec.threads or 1, quote(Scripts.interpreter()), quote(spec_path), w, workers))
  end
  local broken = {}
  for w, p in ipairs(procs) do
    local other = {}
    for line in p:lines() do
      local what, id, err = line:match("^sweep%-worker: (%a+) ([^\t]+)\t?(.*)$")
      if what then report(id, what == "done", err)
      else other[#other + 1] = line end
    end
    if not p:close() then broken[#broken + 1] = "worker " .. w .. ": " .. table.concat(other, "\n") end
  end
  return broken
end

--- Runs a sweep: one job per point of a grid of named parameters, each row written at
-- once (resumable: finished jobs are never redone; failed ones only with retry_failed),
-- in process, in worker processes, or written out as a job list for GNU parallel and a
-- Slurm array script (and submitted).
-- @tparam table spec
-- @tparam table spec.grid parameter names with their values, e.g. {bits = {16, 32}, seed = {1, 2}};
-- jobs run over every combination, the first name in `order` (default: sorted names) varying slowest
-- @param spec.job a Lua file returning function(params) -> row (or {params = {names}, run = fn},
-- which checks the grid's names), or such a function (in process only)
-- @tparam[opt] string spec.setup an attack sweep instead: a Lua file returning function() ->
-- {model=, test=, data=, wb_key=, bb_key=} (called with spec.setup_args); the grid names
-- attack, strength, seed (and setup, for spec.setups = {{name=, path=}}); spec.options =
-- {attack = {...}}. The older form
-- attacks = {{name=, strengths=, options=}}, seeds = {...} is the same sweep.
-- @tparam string spec.out the result file (.jsonl; a .csv beside it, parts in <out>.d/)
-- @tparam[opt=1] integer spec.workers worker processes on this machine
-- @tparam[opt=1] integer spec.threads threads per job
-- @tparam[opt=false] boolean spec.retry_failed run failed jobs again
-- @tparam[opt] string spec.mode "jobs": write <stem>.jobs.txt and <stem>.slurm; "slurm": also sbatch it
-- @tparam[opt] table spec.slurm partition, time, mem, cpus, account, qos, max_running, modules, options
-- @tparam[opt=1] integer spec.seed the seed of jobs without a seed parameter
-- @treturn table the finished rows, in job order (mode: the files written, and the Slurm job id)
-- @treturn table the status (as ds.sweep_status)
-- @usage ds.sweep{grid = {bits = {16, 32, 64}, seed = {1, 2}}, job = "capacity_job.lua",
--   out = "results/capacity.jsonl"}
function SW.run(spec)
  local jobs
  spec, jobs = prepare(spec)
  if spec.mode then
    if type(spec.job) == "function" then
      error("sweep: a job list runs in other processes: give 'job' as the path of a Lua file", 2)
    end
    local files = Scripts.write(spec, Plan.save(spec), #jobs)
    if spec.mode == "slurm" then files.job_id = Scripts.submit(files) end
    return files
  end
  local spec_path = Plan.save(spec)
  local list = states(spec, jobs)
  local before = summarize(spec, list)
  local todo = 0
  for _, s in ipairs(list) do if to_run(spec, s) then todo = todo + 1 end end
  local log = spec.log or print
  if spec.progress ~= false and todo < #jobs then
    log(string.format("sweep: resuming %s: %d of %d jobs already done, %d to run%s%s", spec.out, before.finished, #jobs,
      todo, before.running > 0 and string.format(", %d running elsewhere", before.running) or "",
      (before.failed > 0 and not spec.retry_failed) and string.format(", %d failed before (retry_failed = true runs them)",
        before.failed) or ""))
  end
  local report = progress_reporter(spec, #jobs, #jobs - todo, todo)
  local broken = {}
  if todo > 0 then
    if (spec.workers or 1) <= 1 then run_here(spec, list, report)
    else
      if type(spec.job) == "function" then
        error("sweep: workers run in other processes: give 'job' as the path of a Lua file", 2)
      end
      broken = run_workers(spec, spec_path, spec.workers, report)
    end
  end
  local rows = Store.merge(spec.out, jobs, lead_columns(spec))
  local st = SW.status(spec_path)
  if #broken > 0 then
    error("sweep: " .. table.concat(broken, "\n") .. "\n(" .. st.finished .. " rows kept in " .. spec.out
      .. "; run the sweep again to finish)", 2)
  end
  if st.failed > 0 and spec.progress ~= false then log(SW.format_status(st)) end
  return rows, st
end

--- Merges a saved sweep's part files into its result file and CSV; returns the rows.
function SW.merge(spec_path)
  local spec = Plan.read(spec_path)
  return Store.merge(spec.out, Plan.jobs(spec), lead_columns(spec))
end

--- Runs job number index of a saved sweep (a Slurm task, a GNU parallel line) unless it
-- is finished; returns whether it is finished now.
function SW.job_main(spec_path, index)
  local spec = Plan.read(spec_path)
  local jobs = Plan.jobs(spec)
  local job = jobs[math.tointeger(tonumber(index)) or 0]
  if not job then error(string.format("sweep: no job %s in %s (it has %d)", tostring(index), spec_path, #jobs), 0) end
  local s = states(spec, {job})[1]
  if s.state == "finished" or (s.state == "failed" and not spec.retry_failed) then return s.state == "finished" end
  local row = SW.run_job(spec, job)
  if row.status ~= "ok" then io.stderr:write("sweep: job " .. job.id .. " failed: " .. tostring(row.error) .. "\n") end
  return row.status == "ok"
end

--- A worker process: the jobs i with (i - 1) % nw == w - 1 that are still to run.
function SW.worker_main(spec_path, w, nw)
  local spec = Plan.read(spec_path)
  io.stdout:setvbuf("line")
  for i, s in ipairs(states(spec, Plan.jobs(spec))) do
    if (i - 1) % nw == w - 1 and to_run(spec, s) then
      local row = SW.run_job(spec, s.job)
      print(string.format("sweep-worker: %s %s\t%s", row.status == "ok" and "done" or "failed", s.job.id,
        tostring(row.error or ""):gsub("\n", " ")))
    end
  end
  return true
end

local USAGE = [[usage: deepsigns sweep status SPEC     what is finished, failed, running and left
       deepsigns sweep run SPEC [--retry-failed] [--workers N]   runs what is left
       deepsigns sweep merge SPEC      merges the part files into the result file and CSV
       deepsigns sweep job SPEC N      runs job N (as a Slurm array task or a GNU parallel line)
SPEC: a sweep's .spec.json, or its result file (.jsonl) with the .spec.json beside it]]

--- The `deepsigns sweep` command; returns whether it succeeded.
function SW.cli(args)
  local cmd, path = args[1], args[2]
  if cmd == nil or cmd == "-h" or cmd == "--help" then print(USAGE); return cmd ~= nil end
  if not path then error("sweep " .. tostring(cmd) .. ": needs a SPEC\n" .. USAGE, 0) end
  if cmd == "status" then
    print(SW.format_status(SW.status(path)))
    return true
  elseif cmd == "merge" then
    print(string.format("sweep: %d rows merged into %s", #SW.merge(path), Plan.read(path).out))
    return true
  elseif cmd == "job" then
    return SW.job_main(path, args[3])
  elseif cmd == "worker" then
    return SW.worker_main(path, tonumber(args[3]), tonumber(args[4]))
  elseif cmd == "run" then
    local spec = Plan.read(path)
    for i = 3, #args do
      if args[i] == "--retry-failed" then spec.retry_failed = true
      elseif args[i] == "--workers" and tonumber(args[i + 1]) then spec.workers = tonumber(args[i + 1])
      elseif not tonumber(args[i]) then error("sweep run: unknown option " .. args[i] .. "\n" .. USAGE, 0) end
    end
    local _, st = SW.run(spec)
    return st.failed == 0
  end
  error("sweep: unknown command '" .. tostring(cmd) .. "'\n" .. USAGE, 0)
end

return SW
