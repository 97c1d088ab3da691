-- Job lists for other runners: <stem>.jobs.txt, one shell command per job (GNU parallel,
-- locally or with --sshlogin), and <stem>.slurm, a Slurm array script with one task per
-- job. Every command is `deepsigns sweep job SPEC N`, which skips a finished job and
-- writes the job's own part file, so tasks may run in any order, twice, or on any node.
local safetensors = require "deepsigns.safetensors"

local Sc = {}

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

--- The deepsigns interpreter to run jobs with: DEEPSIGNS_BIN, the running one, or PATH's.
function Sc.interpreter()
  local env = os.getenv("DEEPSIGNS_BIN")
  if env and env ~= "" then return env end
  local self = arg and arg[-1]
  if self and self:match("deepsigns$") then
    if self:sub(1, 1) ~= "/" and self:find("/") then self = require("lfs").currentdir() .. "/" .. self end
    return self
  end
  return "deepsigns"
end

local function stem_of(spec) return (spec.out:gsub("%.jsonl$", "")) end

--- The Slurm array script's text for n jobs of the spec saved at spec_path.
-- spec.slurm: partition, time ("1:00:00"), mem ("4G"), cpus (default: spec.threads or 1),
-- account, qos, max_running (tasks at once), modules ({"openblas"}: `module load`
-- lines), options (more #SBATCH lines, e.g. {"--constraint=avx512"}).
function Sc.slurm_script(spec, spec_path, n)
  local sl, bin = spec.slurm or {}, Sc.interpreter()
  local cpus = sl.cpus or spec.threads or 1
  local lines = {"#!/bin/sh",
    "#SBATCH --job-name=" .. (spec.name or "deepsigns-sweep"),
    "#SBATCH --array=1-" .. n .. (sl.max_running and ("%" .. sl.max_running) or ""),
    "#SBATCH --cpus-per-task=" .. cpus,
    "#SBATCH --output=" .. spec.out .. ".d/slurm-%A_%a.out"}
  for _, k in ipairs {"partition", "time", "mem", "account", "qos"} do
    if sl[k] then lines[#lines + 1] = "#SBATCH --" .. k .. "=" .. tostring(sl[k]) end
  end
  for _, o in ipairs(sl.options or {}) do lines[#lines + 1] = "#SBATCH " .. o end
  lines[#lines + 1] = "# one task per job; a finished job is skipped, so resubmitting runs only what is left."
  lines[#lines + 1] = "# when all tasks are done: " .. bin .. " sweep merge " .. quote(spec_path)
  for _, m in ipairs(sl.modules or {}) do lines[#lines + 1] = "module load " .. m end
  lines[#lines + 1] = "export OMP_NUM_THREADS=" .. cpus .. " OMP_WAIT_POLICY=passive"
  lines[#lines + 1] = "exec " .. quote(bin) .. " sweep job " .. quote(spec_path) .. ' "$SLURM_ARRAY_TASK_ID"'
  return table.concat(lines, "\n") .. "\n"
end

--- Writes <stem>.jobs.txt and <stem>.slurm; returns {jobs=, slurm=, spec=, merge=}
-- (merge: the command that merges the parts when all jobs are done).
function Sc.write(spec, spec_path, n)
  os.execute("mkdir -p " .. quote(spec.out .. ".d"))
  local bin, stem = Sc.interpreter(), stem_of(spec)
  local lines = {}
  for i = 1, n do
    lines[i] = string.format("OMP_NUM_THREADS=%d %s sweep job %s %d", spec.threads or 1, quote(bin), quote(spec_path), i)
  end
  safetensors.write_atomic(stem .. ".jobs.txt", table.concat(lines, "\n") .. "\n")
  safetensors.write_atomic(stem .. ".slurm", Sc.slurm_script(spec, spec_path, n))
  return {jobs = stem .. ".jobs.txt", slurm = stem .. ".slurm", spec = spec_path,
    merge = quote(bin) .. " sweep merge " .. quote(spec_path)}
end

--- Submits the Slurm script with sbatch; returns the array job's id.
function Sc.submit(files)
  if not os.execute("command -v sbatch >/dev/null 2>&1") then
    error("sweep: sbatch is not on PATH (is this a Slurm login node?); the script is written at " .. files.slurm
      .. ": submit it with `sbatch " .. files.slurm .. "` where Slurm runs", 0)
  end
  local p = io.popen("sbatch --parsable " .. quote(files.slurm) .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  local id = out:match("^(%d+)")
  if not ok or not id then error("sweep: sbatch refused " .. files.slurm .. ": " .. out:gsub("%s+$", ""), 0) end
  return id
end

return Sc
