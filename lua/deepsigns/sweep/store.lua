-- A sweep's result files. Each job writes its own part file, <out>.d/<hash of id>.json,
-- atomically (write, sync, rename), so any number of processes and nodes can write one
-- result set and a killed job leaves either its whole row or nothing. A job also leaves
-- a marker <hash>.running (host, pid, start) while it runs. Merging reads every part and
-- rewrites <out> (.jsonl) and its .csv in job order; the parts stay, so merging again
-- gives the same files.
local cjson = require "cjson"
local lfs = require "lfs"
local core = require "deepsigns.core"
local report = require "deepsigns.report"
local safetensors = require "deepsigns.safetensors"

local St = {}

local function parts_dir(out) return out .. ".d" end
local function stem(id) return core.sys.sha256(id):sub(1, 20) end

local function ensure_dir(dir)
  if lfs.attributes(dir, "mode") == "directory" then return end
  local ok = os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "'")
  if not ok then error("sweep: cannot create " .. dir, 0) end
end

--- Writes a job's row (status "ok" or "failed") and clears its marker.
function St.write_row(out, id, row)
  local dir = parts_dir(out)
  ensure_dir(dir)
  safetensors.write_atomic(dir .. "/" .. stem(id) .. ".json", cjson.encode(row) .. "\n")
  os.remove(dir .. "/" .. stem(id) .. ".running")
end

--- Marks a job as running in this process.
function St.mark_running(out, id)
  local dir = parts_dir(out)
  ensure_dir(dir)
  safetensors.write_atomic(dir .. "/" .. stem(id) .. ".running", cjson.encode({id = id, host = core.sys.hostname(),
    pid = core.sys.pid(), started = os.time()}) .. "\n")
end

--- Removes a job's marker (a job stopped without a row, e.g. by Ctrl-C).
function St.clear_marker(out, id) os.remove(parts_dir(out) .. "/" .. stem(id) .. ".running") end

local function read_json(path)
  local f = io.open(path)
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local ok, v = pcall(cjson.decode, text)
  return ok and type(v) == "table" and v or nil
end

--- The rows found, by id: the merged result file first, then the part files (which win).
-- Unreadable files are skipped (a torn line of a result file written by other tools).
function St.rows(out)
  local by_id = {}
  for _, r in ipairs(report.read_jsonl(out)) do
    if r.id then r.status = r.status or "ok"; by_id[r.id] = r end
  end
  local dir = parts_dir(out)
  if lfs.attributes(dir, "mode") == "directory" then
    for f in lfs.dir(dir) do
      if f:match("^%x+%.json$") then
        local r = read_json(dir .. "/" .. f)
        if r and r.id then by_id[r.id] = r end
      end
    end
  end
  return by_id
end

--- The jobs marked running, by id: {id, host, pid, started, alive}. alive is false for a
-- process of this host that is gone (killed), nil when it runs on another host.
function St.running(out)
  local found = {}
  local dir = parts_dir(out)
  if lfs.attributes(dir, "mode") ~= "directory" then return found end
  local host = core.sys.hostname()
  for f in lfs.dir(dir) do
    if f:match("^%x+%.running$") then
      local m = read_json(dir .. "/" .. f)
      if m and m.id then
        if m.host == host then m.alive = core.sys.alive(math.tointeger(m.pid) or -1) end
        found[m.id] = m
      end
    end
  end
  return found
end

--- Rewrites the result file and its CSV from the rows of the given jobs that finished
-- ("ok"), in job order; returns those rows.
-- lead: the CSV's first columns (the sweep's parameters).
function St.merge(out, jobs, lead)
  local by_id = St.rows(out)
  local kept = {}
  for _, job in ipairs(jobs) do
    local r = by_id[job.id]
    if r and r.status == "ok" then kept[#kept + 1] = r end
  end
  ensure_dir(out:match("^(.*)/") or ".")
  report.jsonl(kept, out)
  report.csv(kept, (out:gsub("%.jsonl$", "")) .. ".csv", lead)
  return kept
end

return St
