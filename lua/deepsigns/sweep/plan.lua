-- A sweep's plan: the spec checked, its grid expanded into jobs, and the spec saved as
-- JSON so that other processes and cluster nodes run the very same jobs.
--
-- A job is {index=, id=, params={name = value}}; its id names its parameter values
-- ("bits=32,seed=1") and stays the same when the grid grows, so results are found by id.
local cjson = require "cjson"
local lfs = require "lfs"
local U = require "deepsigns.util"

local P = {}

P.OPTIONS = {"grid", "order", "job", "setup", "setups", "setup_args", "attacks", "seeds", "options", "seed", "out", "workers",
  "threads", "mode", "retry_failed", "progress", "log", "max_drop", "alpha", "p", "realign", "slurm", "name"}
P.ATTACK_PARAMS = {"attack", "strength", "seed", "setup"}
P.SLURM_OPTIONS = {"partition", "time", "mem", "cpus", "modules", "max_running", "options", "account", "qos"}

-- JSON numbers come back as floats: integral values become integers again.
local function intify(v)
  if type(v) == "number" then return math.tointeger(v) or v end
  if type(v) == "table" then for k, x in pairs(v) do v[k] = intify(x) end end
  return v
end

local function fmt(v)
  if math.type(v) == "integer" then return tostring(v) end
  if type(v) == "number" then return math.tointeger(v) and tostring(math.tointeger(v)) or string.format("%.10g", v) end
  return tostring(v)
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

--- The id of a parameter set: "name=value" pairs in name order.
function P.job_id(params)
  local parts = {}
  for _, k in ipairs(sorted_keys(params)) do parts[#parts + 1] = k .. "=" .. fmt(params[k]) end
  return table.concat(parts, ",")
end

local function fail(msg, ...) error("sweep: " .. string.format(msg, ...), 0) end

local function check_value(name, i, v)
  local t = type(v)
  if t ~= "number" and t ~= "string" and t ~= "boolean" then
    fail("grid parameter '%s' value %d is a %s (values are numbers, strings or booleans)", name, i, t)
  end
  if t == "number" and v ~= v then fail("grid parameter '%s' value %d is NaN", name, i) end
end

local function grid_names(spec)
  local names = spec.order or sorted_keys(spec.grid)
  local seen = {}
  for _, n in ipairs(names) do
    if spec.grid[n] == nil then fail("'order' names '%s', which is not in the grid", tostring(n)) end
    seen[n] = true
  end
  for n in pairs(spec.grid) do
    if not seen[n] then fail("'order' leaves out grid parameter '%s'", tostring(n)) end
  end
  return names
end

local check_grid
--- Checks the grid's names against the parameters a job script declares.
function P.check_params(spec, known) check_grid(spec, known) end

function check_grid(spec, known)
  if type(spec.grid) ~= "table" or next(spec.grid) == nil then
    fail("'grid' must name at least one parameter with a list of values, e.g. grid = {bits = {16, 32}}")
  end
  for name, values in pairs(spec.grid) do
    if type(name) ~= "string" then fail("grid parameter names are strings, got %s", type(name)) end
    if type(values) ~= "table" or #values == 0 then fail("grid parameter '%s' has no values", name) end
    for i, v in ipairs(values) do check_value(name, i, v) end
    if known then
      local set = {}
      for _, k in ipairs(known) do set[k] = true end
      if not set[name] then
        local near = U.nearest(name, known)
        fail("unknown grid parameter '%s'%s (this job takes: %s)", name, near and (" (did you mean '" .. near .. "'?)") or "",
          table.concat(known, ", "))
      end
    end
  end
end

-- The grid's points, the first name varying slowest.
local function expand(grid, names)
  local points = {{}}
  for _, name in ipairs(names) do
    local next_points = {}
    for _, p in ipairs(points) do
      for _, v in ipairs(grid[name]) do
        local q = {}
        for k, x in pairs(p) do q[k] = x end
        q[name] = v
        next_points[#next_points + 1] = q
      end
    end
    points = next_points
  end
  return points
end

-- The attacks shorthand: attacks = {{name=, strengths=, options=}}, seeds, setups.
local function attack_points(spec)
  local points = {}
  local setups = spec.setups or {{}}
  for _, st in ipairs(setups) do
    for _, a in ipairs(spec.attacks) do
      for _, seed in ipairs(spec.seeds or {1}) do
        for _, s in ipairs(a.strengths) do
          points[#points + 1] = {setup = st.name, attack = a.name, strength = s, seed = seed}
        end
      end
    end
  end
  return points
end

local function check_attacks(spec)
  if type(spec.attacks) ~= "table" or #spec.attacks == 0 then fail("'attacks' must list {name=, strengths={...}}") end
  local STRENGTH = require("deepsigns.robustness").STRENGTH
  for i, a in ipairs(spec.attacks) do
    U.check_options("sweep: attack " .. i, a, {"name", "strengths", "options"}, 0)
    if type(a.name) ~= "string" or type(a.strengths) ~= "table" or #a.strengths == 0 then
      fail("attack %d needs a name and a list of strengths", i)
    end
    if STRENGTH[a.name] == nil then fail("unknown attack '%s'", a.name) end
  end
end

local function check_setups(spec)
  if spec.setups then
    if type(spec.setups) ~= "table" or #spec.setups == 0 then fail("'setups' must list {name=, path=}") end
    for i, st in ipairs(spec.setups) do
      if type(st.name) ~= "string" or type(st.path) ~= "string" then fail("setup %d needs a name and a path", i) end
    end
  elseif type(spec.setup) ~= "string" then
    fail("'setup' must be the path of a Lua file returning a setup function (or give 'setups', or a 'job')")
  end
end

-- The attack job's grid: attack and strength, optionally seed and setup (a name of setups).
local function check_attack_grid(spec)
  check_grid(spec, P.ATTACK_PARAMS)
  if not spec.grid.attack or not spec.grid.strength then fail("an attack sweep's grid needs 'attack' and 'strength'") end
  local STRENGTH = require("deepsigns.robustness").STRENGTH
  for _, a in ipairs(spec.grid.attack) do
    if STRENGTH[a] == nil then fail("unknown attack '%s'", tostring(a)) end
  end
end

--- Checks a spec (raising a "sweep: ..." error naming what is wrong) and returns the
-- kind of its jobs: "job" (a job script or function) or "attack".
-- @param known the parameters the job script declares (or nil: any)
function P.check(spec, known)
  if type(spec) ~= "table" then fail("expects a spec table") end
  U.check_options("sweep", spec, P.OPTIONS, 0)
  if type(spec.out) ~= "string" or spec.out == "" then fail("'out' must be the path of the result file (.jsonl)") end
  if spec.slurm ~= nil then U.check_options("sweep: slurm", spec.slurm, P.SLURM_OPTIONS, 0) end
  if spec.mode ~= nil and spec.mode ~= "jobs" and spec.mode ~= "slurm" then
    fail("'mode' is \"jobs\" (write the job list and Slurm script) or \"slurm\" (also submit it), got %s", tostring(spec.mode))
  end
  if spec.job ~= nil then
    if type(spec.job) ~= "string" and type(spec.job) ~= "function" then
      fail("'job' must be the path of a Lua file returning a job function, or a function")
    end
    if spec.setup or spec.setups or spec.attacks then fail("give either a 'job' or an attack setup, not both") end
    check_grid(spec, known)
    grid_names(spec)
    return "job"
  end
  check_setups(spec)
  if spec.attacks then
    if spec.grid then fail("give either 'grid' or 'attacks', not both") end
    check_attacks(spec)
  else
    check_attack_grid(spec)
    grid_names(spec)
  end
  return "attack"
end

--- The jobs of a checked spec, in order.
function P.jobs(spec)
  local points = spec.grid and expand(spec.grid, grid_names(spec)) or attack_points(spec)
  local jobs, seen = {}, {}
  for i, params in ipairs(points) do
    local id = P.job_id(params)
    if seen[id] then fail("the grid repeats the job %s", id) end
    seen[id] = true
    jobs[i] = {index = i, id = id, params = params}
  end
  return jobs
end

local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  return lfs.currentdir() .. "/" .. path
end

--- The spec with its paths made absolute (so a job runs the same from any directory).
function P.resolved(spec)
  local s = {}
  for k, v in pairs(spec) do s[k] = v end
  s.out = absolute(spec.out)
  if type(spec.job) == "string" then s.job = absolute(spec.job) end
  if spec.setup then s.setup = absolute(spec.setup) end
  if spec.setups then
    s.setups = {}
    for i, st in ipairs(spec.setups) do s.setups[i] = {name = st.name, path = absolute(st.path)} end
  end
  return s
end

--- The path of the saved spec beside the result file.
function P.spec_path(out) return (out:gsub("%.jsonl$", "")) .. ".spec.json" end

P.FUNCTION_JOB = "<a function of the process that started the sweep>"

--- Saves a resolved spec as JSON (functions, such as log, and the mode are left out; a
-- job function is saved as P.FUNCTION_JOB, so that status still works); returns its path.
function P.save(spec)
  local data = {}
  for k, v in pairs(spec) do if type(v) ~= "function" and k ~= "mode" then data[k] = v end end
  if type(spec.job) == "function" then data.job = P.FUNCTION_JOB end
  local path = P.spec_path(spec.out)
  os.execute("mkdir -p '" .. (path:match("^(.*)/") or "."):gsub("'", "'\\''") .. "'")
  require("deepsigns.safetensors").write_atomic(path, cjson.encode(data))
  return path
end

--- Reads a saved spec: the path of the .spec.json, or of the result file beside it.
function P.read(path)
  if type(path) ~= "string" then fail("expects the path of a sweep's .spec.json or result file") end
  if not path:match("%.spec%.json$") then path = P.spec_path(path) end
  local f = io.open(path)
  if not f then fail("no sweep spec at %s", path) end
  local text = f:read("a")
  f:close()
  local ok, spec = pcall(cjson.decode, text)
  if not ok or type(spec) ~= "table" then fail("%s is not a sweep spec (%s)", path, U.strip_location(spec)) end
  return intify(spec)
end

return P
