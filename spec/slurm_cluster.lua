-- A one-node Slurm cluster for the specs, from Debian's packages, in a temporary
-- directory: munged with a fresh key and its own socket, slurmctld and slurmd as root
-- with a generated slurm.conf (its own ports, proctrack/linuxproc and task/none, so no
-- cgroups or systemd), the node's real CPUs and memory, no accounting store.
-- cluster = Cluster.start(); cluster:run("sbatch ..."); cluster:wait(id); cluster:stop()
local Cluster = {}
Cluster.__index = Cluster

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok = p:close()
  return out, ok == true
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = io.open(path)
  if not f then return "" end
  local text = f:read("a")
  f:close()
  return text
end

--- Whether a cluster can start here: nil, or the reason it cannot.
function Cluster.unavailable()
  if sh("id -u"):match("^%d+") ~= "0" then return "the daemons run as root; run make test-slurm as root" end
  for _, c in ipairs {"munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol"} do
    if not select(2, sh("command -v " .. c)) then return c .. " is not installed (make test-slurm installs it as root)" end
  end
  return nil
end

local function conf_text(dir, port, node_line)
  local host = node_line:match("NodeName=(%S+)")
  return table.concat({
    "ClusterName=dstest",
    "SlurmctldHost=" .. host,
    "SlurmctldPort=" .. port,
    "SlurmdPort=" .. (port + 1),
    "SlurmUser=root",
    "SlurmdUser=root",
    "AuthType=auth/munge",
    "CredType=cred/munge",
    "AuthInfo=socket=" .. dir .. "/munge/munge.sock",
    "StateSaveLocation=" .. dir .. "/state",
    "SlurmdSpoolDir=" .. dir .. "/spool",
    "SlurmctldPidFile=" .. dir .. "/slurmctld.pid",
    "SlurmdPidFile=" .. dir .. "/slurmd.pid",
    "SlurmctldLogFile=" .. dir .. "/log/slurmctld.log",
    "SlurmdLogFile=" .. dir .. "/log/slurmd.log",
    "ProctrackType=proctrack/linuxproc",
    "TaskPlugin=task/none",
    "JobAcctGatherType=jobacct_gather/none",
    "AccountingStorageType=accounting_storage/none",
    "MpiDefault=none",
    "SwitchType=switch/none",
    "SelectType=select/cons_tres",
    "SelectTypeParameters=CR_Core",
    "ReturnToService=2",
    node_line .. " State=UNKNOWN",
    "PartitionName=test Nodes=" .. host .. " Default=YES MaxTime=INFINITE State=UP",
  }, "\n") .. "\n"
end

--- Runs a shell command with this cluster's SLURM_CONF; returns its output and success.
function Cluster:run(cmd) return sh("SLURM_CONF=" .. self.conf .. " " .. cmd) end

-- The last lines of the daemons' logs, for a failure message.
function Cluster:logs()
  local parts = {}
  for _, f in ipairs {"munged.log", "slurmctld.log", "slurmd.log"} do
    parts[#parts + 1] = "== " .. f .. "\n" .. read(self.dir .. "/log/" .. f):sub(-1500)
  end
  return table.concat(parts, "\n")
end

local function wait_for(pred, seconds)
  for _ = 1, seconds * 10 do
    if pred() then return true end
    os.execute("sleep 0.1")
  end
  return pred()
end

--- Starts munged, slurmctld and slurmd; waits until the node is idle. Stops whatever it
-- started and raises, with the logs, when a step fails.
function Cluster.start(dir)
  local self = setmetatable({dir = dir, conf = dir .. "/slurm.conf"}, Cluster)
  for _, d in ipairs {"munge", "state", "spool", "log"} do assert(os.execute("mkdir -p " .. dir .. "/" .. d)) end
  local ok, err = pcall(function()
    local node = sh("slurmd -C"):match("(NodeName=[^\n]+)")
    assert(node, "slurmd -C printed no node line")
    node = node:gsub("%s+UpTime.*$", "")
    local port = 20000 + (os.time() * 7 + tonumber(tostring(self):match("0x(%x+)") or "0", 16)) % 20000 // 2 * 2
    write(self.conf, conf_text(dir, port, node))
    assert(os.execute("chmod 700 " .. dir .. "/munge && dd if=/dev/urandom of=" .. dir
      .. "/munge/munge.key bs=1024 count=1 2>/dev/null && chmod 600 " .. dir .. "/munge/munge.key"))
    local m = dir .. "/munge/"
    local out, started = sh(string.format("munged -f --socket=%smunge.sock --key-file=%smunge.key --pid-file=%smunged.pid "
      .. "--seed-file=%smunged.seed --log-file=%s/log/munged.log", m, m, m, m, dir))
    assert(started, "munged did not start: " .. out)
    self.munge = true
    out, started = self:run("slurmctld -f " .. self.conf)
    assert(started, "slurmctld did not start: " .. out)
    out, started = self:run("slurmd -f " .. self.conf)
    assert(started, "slurmd did not start: " .. out)
    local idle = wait_for(function() return self:run("sinfo -h -o %t"):match("idle") ~= nil end, 30)
    assert(idle, "the node did not come up idle: " .. self:run("sinfo"))
  end)
  if not ok then
    local logs = self:logs()
    self:stop()
    error(tostring(err) .. "\n" .. logs, 0)
  end
  return self
end

--- Whether Slurm still knows the job (pending or running).
function Cluster:queued(job_id)
  local out = self:run("squeue -h -j " .. job_id .. " -o %i")
  return out:match("%d") ~= nil
end

--- Waits until the job has left the queue; false after timeout seconds.
function Cluster:wait(job_id, seconds)
  return wait_for(function() return not self:queued(job_id) end, seconds)
end

local function pid_in(path) return read(path):match("%d+") end

--- Stops every daemon it started (scontrol shutdown, then signals by pid file).
function Cluster:stop()
  self:run("scontrol shutdown")
  for _, f in ipairs {"slurmctld.pid", "slurmd.pid"} do
    local pid = pid_in(self.dir .. "/" .. f)
    if pid and not wait_for(function() return not select(2, sh("kill -0 " .. pid)) end, 10) then
      sh("kill -9 " .. pid)
    end
  end
  if self.munge then
    local pid = pid_in(self.dir .. "/munge/munged.pid")
    sh("munged -s --socket=" .. self.dir .. "/munge/munge.sock")
    if pid and not wait_for(function() return not select(2, sh("kill -0 " .. pid)) end, 5) then sh("kill -9 " .. pid) end
  end
end

return Cluster
