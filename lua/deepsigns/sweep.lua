-- Sweeps over attack x strength x seed, resumable, in process, with parallel
-- worker processes, or as a job list for GNU parallel or a Slurm array.
--   rows = ds.sweep{setup="setup.lua", attacks={{name="prune", strengths={0.5, 0.9}}, ...},
--                   seeds={1}, out="results/sweep.jsonl", workers=1, threads=1}
-- setup.lua returns a function() -> {model=, test=, data=, wb_key=, bb_key=, student=}
-- (typically loading a model file and key files). Each finished row is written at
-- once; rows already in the result are never redone. Jobs run with `threads`
-- threads (default 1), so every runner produces the same rows.
local cjson = require "cjson"
local report = require "deepsigns.report"

local SW = {}

-- JSON numbers come back as floats: integral values become integers again
local function intify(v)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) == "table" then for k, x in pairs(v) do v[k] = intify(x) end end
  return v
end

local function read_spec(path)
  local f = assert(io.open(path))
  local spec = intify(cjson.decode(f:read("a")))
  f:close()
  return spec
end

local function fmt(v) return math.type(v) == "integer" and tostring(v) or string.format("%.10g", v) end

-- The setups of a sweep: `setups` = {{name=, path=}, ...} (e.g. one per scheme
-- and bit count), or the single `setup` path.
local function setups_of(spec)
  if spec.setups then return spec.setups end
  return {{name = nil, path = spec.setup}}
end

function SW.jobs(spec)
  local jobs = {}
  for _, st in ipairs(setups_of(spec)) do
    for _, a in ipairs(spec.attacks) do
      for _, seed in ipairs(spec.seeds or {1}) do
        for _, s in ipairs(a.strengths) do
          local id = a.name .. "|" .. fmt(s) .. "|" .. seed
          if st.name then id = st.name .. "|" .. id end
          jobs[#jobs + 1] = {id = id, setup = st.path, setup_name = st.name, attack = a.name, strength = s,
            seed = seed, options = a.options}
        end
      end
    end
  end
  return jobs
end

local function check_spec(spec)
  if type(spec) ~= "table" then error("sweep: expects a spec table", 3) end
  if spec.setups then
    if type(spec.setups) ~= "table" or #spec.setups == 0 then error("sweep: 'setups' must list {name=, path=}", 3) end
    for i, st in ipairs(spec.setups) do
      if type(st.name) ~= "string" or type(st.path) ~= "string" then error("sweep: setup " .. i .. " needs a name and a path", 3) end
    end
  elseif type(spec.setup) ~= "string" then
    error("sweep: 'setup' must be the path of a Lua file returning a setup function (or give 'setups')", 3)
  end
  if type(spec.attacks) ~= "table" or #spec.attacks == 0 then error("sweep: 'attacks' must list {name=, strengths={...}}", 3) end
  for i, a in ipairs(spec.attacks) do
    if type(a.name) ~= "string" or type(a.strengths) ~= "table" or #a.strengths == 0 then
      error("sweep: attack " .. i .. " needs a name and a list of strengths", 3)
    end
    if require("deepsigns.robustness").STRENGTH[a.name] == nil then error("sweep: unknown attack '" .. a.name .. "'", 3) end
  end
  if type(spec.out) ~= "string" then error("sweep: 'out' must be the path of the result file (.jsonl)", 3) end
end

local function parts_dir(spec) return spec.out .. ".d" end

-- ids already finished (in the result file or in per-job part files)
function SW.done(spec)
  local done, rows = {}, {}
  for _, r in ipairs(report.read_jsonl(spec.out)) do
    if r.id and not done[r.id] then done[r.id] = true; rows[#rows + 1] = r end
  end
  local lfs = require "lfs"
  local dir = parts_dir(spec)
  if lfs.attributes(dir, "mode") == "directory" then
    for f in lfs.dir(dir) do
      if f:match("%.json$") then
        for _, r in ipairs(report.read_jsonl(dir .. "/" .. f)) do
          if r.id and not done[r.id] then done[r.id] = true; rows[#rows + 1] = r end
        end
      end
    end
  end
  return done, rows
end

local setups = {}
local function load_setup(path)
  if not setups[path] then
    local chunk, err = loadfile(path)
    if not chunk then error("sweep: cannot load setup " .. path .. ": " .. tostring(err), 0) end
    local fn = chunk()
    if type(fn) ~= "function" then error("sweep: " .. path .. " must return a setup function", 0) end
    local cfg = fn()
    cfg.base_accuracy = cfg.base_accuracy or require("deepsigns.train").evaluate(cfg.model, cfg.test).accuracy
    setups[path] = cfg
  end
  return setups[path]
end

function SW.run_job(spec, job)
  require("deepsigns.core").sys.set_num_threads(spec.threads or 1)
  local base = load_setup(job.setup)
  local cfg = {}
  for k, v in pairs(base) do cfg[k] = v end
  cfg.options, cfg.max_drop, cfg.alpha, cfg.p, cfg.realign = job.options, spec.max_drop, spec.alpha, spec.p, spec.realign
  local row = require("deepsigns.robustness").run_one(cfg, job.attack, job.strength, job.seed)
  row.id = job.id
  row.setup = job.setup_name
  return row
end

local function write_part(spec, index, row)
  os.execute("mkdir -p '" .. parts_dir(spec) .. "'")
  require("deepsigns.safetensors").write_atomic(string.format("%s/%05d.json", parts_dir(spec), index), cjson.encode(row) .. "\n")
end

-- Entry points for worker processes and job lists.
function SW.job_main(spec_path, index)
  local spec = read_spec(spec_path)
  local job = SW.jobs(spec)[index]
  if not job then error("sweep: no job " .. tostring(index) .. " in " .. spec_path, 0) end
  local done = SW.done(spec)
  if done[job.id] then return end
  write_part(spec, index, SW.run_job(spec, job))
end

function SW.worker_main(spec_path, w, nw)
  local spec = read_spec(spec_path)
  local done = SW.done(spec)
  for i, job in ipairs(SW.jobs(spec)) do
    if (i - 1) % nw == w - 1 and not done[job.id] then write_part(spec, i, SW.run_job(spec, job)) end
  end
end

local function interpreter()
  return os.getenv("DEEPSIGNS_BIN") or (arg and arg[-1] and arg[-1]:match("deepsigns$") and arg[-1]) or "deepsigns"
end

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function save_spec(spec)
  os.execute("mkdir -p " .. shell_quote(spec.out:match("^(.*)/") or "."))
  local path = spec.out .. ".spec.json"
  local data = {}
  for k, v in pairs(spec) do if type(v) ~= "function" then data[k] = v end end
  require("deepsigns.safetensors").write_atomic(path, cjson.encode(data))
  return path
end

-- Rows in job order, deduplicated; rewrites the result file and its CSV.
function SW.merge(spec)
  local _, rows = SW.done(spec)
  local order = {}
  for i, j in ipairs(SW.jobs(spec)) do order[j.id] = i end
  local kept = {}
  for _, r in ipairs(rows) do if order[r.id] then kept[#kept + 1] = r end end
  table.sort(kept, function(a, b) return order[a.id] < order[b.id] end)
  report.jsonl(kept, spec.out)
  report.csv(kept, (spec.out:gsub("%.jsonl$", "")) .. ".csv")
  os.execute("rm -rf " .. shell_quote(parts_dir(spec)))
  return kept
end

-- Writes jobs.txt (one command per job, for GNU parallel, locally or with
-- --sshlogin), a Slurm array script, and the merge command.
function SW.write_jobs(spec)
  local spec_path = save_spec(spec)
  local bin = interpreter()
  local jobs = SW.jobs(spec)
  local lines = {}
  for i = 1, #jobs do
    lines[i] = string.format("%s -e %s", bin, shell_quote(string.format(
      'require("deepsigns.sweep").job_main(%q, %d)', spec_path, i)))
  end
  local stem = spec.out:gsub("%.jsonl$", "")
  local sa = require("deepsigns.safetensors")
  sa.write_atomic(stem .. ".jobs.txt", table.concat(lines, "\n") .. "\n")
  sa.write_atomic(stem .. ".slurm", table.concat({
    "#!/bin/sh",
    "#SBATCH --array=1-" .. #jobs,
    "#SBATCH --cpus-per-task=" .. (spec.threads or 1),
    "# submit: sbatch " .. stem .. ".slurm ; when all tasks are done: " .. bin .. " -e "
      .. shell_quote(string.format('require("deepsigns.sweep").merge_file(%q)', spec_path)),
    "export OMP_WAIT_POLICY=passive",
    string.format("sed -n \"${SLURM_ARRAY_TASK_ID}p\" %s | sh", shell_quote(stem .. ".jobs.txt")),
  }, "\n") .. "\n")
  return {jobs = stem .. ".jobs.txt", slurm = stem .. ".slurm", spec = spec_path,
    merge = string.format('%s -e %s', bin, shell_quote(string.format('require("deepsigns.sweep").merge_file(%q)', spec_path)))}
end

function SW.merge_file(spec_path)
  return SW.merge(read_spec(spec_path))
end

--- Runs a sweep of attacks x strengths x seeds (x setups) on marked models, writing
-- each finished row at once (resumable: rows already in the result are never redone),
-- in process, in worker processes, or as a job list for GNU parallel and a Slurm array.
-- @tparam table spec
-- @tparam string spec.setup a Lua file returning function() -> {model=, test=, data=,
-- wb_key=, bb_key=, student=} (or spec.setups = {{name=, path=}, ...})
-- @tparam table spec.attacks {{name = "prune", strengths = {0.5, 0.9}, options = {...}}, ...}
-- @tparam[opt={1}] table spec.seeds
-- @tparam string spec.out the result file (.jsonl; a .csv is written beside it)
-- @tparam[opt=1] integer spec.workers worker processes
-- @tparam[opt=1] integer spec.threads threads per job
-- @tparam[opt] string spec.mode "jobs": write the job list and Slurm script instead of running
-- @treturn table the rows, in job order
-- @usage ds.sweep{setup = "setup.lua", attacks = {{name = "prune", strengths = {0.5, 0.9}}},
--   out = "results/sweep.jsonl"}
function SW.run(spec)
  check_spec(spec)
  if spec.mode == "jobs" then return SW.write_jobs(spec) end
  local done = SW.done(spec)
  local jobs = SW.jobs(spec)
  local todo = 0
  for _, j in ipairs(jobs) do if not done[j.id] then todo = todo + 1 end end
  local log = spec.log or print
  if todo == 0 then return SW.merge(spec) end
  local workers = spec.workers or 1
  if workers <= 1 then
    save_spec(spec)
    for i, job in ipairs(jobs) do
      if not done[job.id] then
        local row = SW.run_job(spec, job)
        write_part(spec, i, row)
        if spec.progress ~= false then log(string.format("sweep: %s done (%d to go)", job.id, todo - 1)) end
        todo = todo - 1
      end
    end
  else
    local spec_path = save_spec(spec)
    local procs = {}
    for w = 1, workers do
      procs[w] = io.popen(string.format("OMP_WAIT_POLICY=passive %s -e %s 2>&1", interpreter(), shell_quote(string.format(
        'require("deepsigns.sweep").worker_main(%q, %d, %d)', spec_path, w, workers))))
    end
    local failed = {}
    for w, p in ipairs(procs) do
      local out = p:read("a")
      local ok = p:close()
      if not ok then failed[#failed + 1] = "worker " .. w .. ": " .. out end
    end
    if #failed > 0 then error("sweep: " .. table.concat(failed, "\n"), 2) end
  end
  return SW.merge(spec)
end

return SW
