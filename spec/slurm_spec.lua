-- make test-slurm: a real sweep submitted to a one-node Slurm cluster started here
-- (spec/slurm_cluster.lua) with sbatch --array, merged, and compared row for row with
-- the same sweep run in process. Every daemon is stopped, also when a step fails.
local H = require "helper"
local Cluster = require "slurm_cluster"

local bin = H.root .. "/build/bin/deepsigns"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- rows without what differs between runs: timing and host
local function stable(rows)
  local out = {}
  for i, r in ipairs(rows) do
    local c = {}
    for k, v in pairs(r) do if k ~= "seconds" and k ~= "host" and k ~= "attack_seconds" then c[k] = v end end
    out[i] = c
  end
  return out
end

describe("#slurm sweeps on a Slurm cluster", function()
  local dir = H.tmpdir()
  local cluster

  lazy_setup(function()
    local why = Cluster.unavailable()
    if why then error("make test-slurm: " .. why, 0) end
    cluster = Cluster.start(dir .. "/cluster")
  end)

  lazy_teardown(function()
    if cluster then cluster:stop() end
  end)

  it("runs an attack sweep as an array job, equal row for row to an in-process run", function()
    local ds = H.ds
    ds.manual_seed(3)
    local data = H.synthetic(1200, 20, 4, 3)
    local model = ds.models.mlp{20, 48, 48, 4}
    local key = ds.watermark.whitebox.keygen{model = model, layer = "fc2", data = data, bits = 16, targets = {0}}
    ds.watermark.whitebox.embed{model = model, key = key, data = data, epochs = 6, progress = false}
    model:save(dir .. "/model.safetensors")
    key:save(dir .. "/key.safetensors")
    write(dir .. "/setup.lua", string.format([[
package.path = %q .. ";" .. package.path
local H = require "helper"
return function()
  local ds = require "deepsigns"
  local data = H.synthetic(1200, 20, 4, 3)
  return {model = ds.load_model(%q), test = data, data = data, wb_key = ds.watermark.whitebox.load(%q)}
end
]], H.root .. "/spec/?.lua", dir .. "/model.safetensors", dir .. "/key.safetensors"))
    local function spec(out)
      return string.format("{setup = %q, out = %q, progress = false, seeds = {1, 2}, slurm = {time = '0:10:00'}, "
        .. "attacks = {{name = 'prune', strengths = {0.3, 0.9}}, {name = 'noise', strengths = {0.5, 1}}, "
        .. "{name = 'finetune', strengths = {1, 2}, options = {lr = 0.01}}}}", dir .. "/setup.lua", out)
    end
    -- submit as a user would, from a script: the Slurm mode writes the script and calls sbatch
    local cluster_out = dir .. "/cluster.jsonl"
    write(dir .. "/submit.lua", "local files = ds.sweep(" .. spec(cluster_out):gsub("}$", ", mode = 'slurm'}")
      .. ")\nprint(files.job_id)\n")
    local out, ok = cluster:run(bin .. " " .. dir .. "/submit.lua")
    assert.is_true(ok, out .. cluster:logs())
    local job_id = out:match("(%d+)%s*$")
    assert.is_string(job_id, out)
    assert.is_true(cluster:wait(job_id, 600), "the array job did not finish\n" .. cluster:run("squeue") .. cluster:logs())
    -- every task ran and left its log; the parts merge into the result set
    local st = ds.sweep_status(cluster_out)
    assert.equal(12, st.total)
    assert.equal(12, st.finished, require("deepsigns.sweep").format_status(st) .. "\n" .. cluster:logs())
    local merged = require("deepsigns.sweep").merge(cluster_out)
    assert.equal(12, #merged)
    local logs = 0
    for f in require("lfs").dir(cluster_out .. ".d") do if f:match("^slurm%-%d+_%d+%.out$") then logs = logs + 1 end end
    assert.equal(12, logs)
    -- the same sweep in this process
    local here = ds.sweep(load("return " .. spec(dir .. "/here.jsonl"))())
    assert.equal(12, #here)
    assert.same(stable(here), stable(merged))
  end)
end)
