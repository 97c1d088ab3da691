-- The paper's capacity, overhead and robustness studies, each one sweep (ds.sweep) over
-- named parameters, with the job scripts in examples/jobs/. A sweep resumes where it
-- stopped; --workers N runs N processes here; --mode jobs writes the GNU parallel job
-- list and the Slurm array script, --mode slurm also submits it (then: deepsigns sweep
-- status SPEC, and this script again to print the tables from the merged rows).
-- Run: build/bin/deepsigns examples/sweeps.lua [--study all|capacity|overhead|robustness]
--      [--seeds 2] [--epochs 5] [--train-size 60000] [--workers 1] [--mode jobs|slurm]
--      [--partition NAME] [--time 1:00:00] [--mem 4G] [--out results]
package.path = "examples/?.lua;" .. package.path
local ds = require "deepsigns"
local C = require "common"
local opts = require("args")(arg, {study = "all", seeds = 2, epochs = 5, train_size = 60000, workers = 1,
  out = "results"})

local seeds = {}
for s = 1, opts.seeds do seeds[s] = s end

local function sweep(name, spec)
  spec.out = string.format("%s/sweep_%s.jsonl", opts.out, name)
  spec.workers, spec.mode, spec.name = opts.workers, opts.mode, "deepsigns-" .. name
  spec.slurm = {partition = opts.partition, time = opts.time, mem = opts.mem}
  local rows = ds.sweep(spec)
  if opts.mode then
    print(string.format("%s: %s written%s; the merge: %s", name, rows.slurm, rows.job_id and (", submitted as job "
      .. rows.job_id) or "", rows.merge))
    return nil
  end
  return rows
end

-- mean of f(row) over the rows where keep(row)
local function mean(rows, keep, f)
  local s, n = 0, 0
  for _, r in ipairs(rows) do if keep(r) then s, n = s + f(r), n + 1 end end
  return n > 0 and s / n or nil
end

local function capacity()
  local rows = sweep("capacity", {job = "examples/jobs/capacity.lua", grid = {bits = {0, 16, 32, 64, 128, 256, 512},
    seed = seeds, epochs = {opts.epochs}, train_size = {opts.train_size}}, order = {"bits", "seed", "epochs", "train_size"}})
  if not rows then return end
  local base = mean(rows, function(r) return r.bits == 0 end, function(r) return r.accuracy end)
  print(string.format("\ncapacity: paper MLP, Fashion-MNIST, %d epochs, %d seed(s); unmarked %s", opts.epochs, opts.seeds,
    C.pct(base)))
  print("| bits | mean BER | worst BER | accuracy | vs. unmarked |\n|---:|---:|---:|---:|---:|")
  for _, bits in ipairs {16, 32, 64, 128, 256, 512} do
    local keep = function(r) return r.bits == bits end
    local acc = mean(rows, keep, function(r) return r.accuracy end)
    local worst = 0
    for _, r in ipairs(rows) do if keep(r) then worst = math.max(worst, r.ber) end end
    print(string.format("| %d | %.4f | %.4f | %s | %+.2f |", bits, mean(rows, keep, function(r) return r.ber end), worst,
      C.pct(acc), 100 * (acc - base)))
  end
end

local function overhead()
  local rows = sweep("overhead", {job = "examples/jobs/overhead.lua", grid = {variant = {"none", "paper", "reference"},
    seed = seeds, epochs = {3}, train_size = {opts.train_size}}, order = {"seed", "variant", "epochs", "train_size"}})
  if not rows then return end
  local plain = mean(rows, function(r) return r.variant == "none" end, function(r) return r.seconds_per_epoch end)
  print(string.format("\noverhead: 3 epochs each, %d seed(s), one job at a time (make bench measures it in lockstep)",
    opts.seeds))
  print("| variant | s/epoch | vs. plain | BER |\n|---|---:|---:|---:|")
  for _, v in ipairs {"none", "paper", "reference"} do
    local keep = function(r) return r.variant == v end
    local t = mean(rows, keep, function(r) return r.seconds_per_epoch end)
    print(string.format("| %s | %.2f | %+.1f%% | %s |", v, t, 100 * (t / plain - 1),
      v == "none" and "-" or string.format("%.3f", mean(rows, keep, function(r) return r.ber end))))
  end
end

local function robustness()
  local rows = sweep("robustness", {setup = "examples/jobs/marked_setup.lua", seeds = seeds,
    setup_args = {epochs = opts.epochs, out = opts.out, train_size = opts.train_size < 60000 and opts.train_size or nil},
    attacks = {{name = "prune", strengths = {0.5, 0.7, 0.9}},
      {name = "finetune", strengths = {2, 5}, options = {lr = 1e-4}},
      {name = "noise", strengths = {0.5, 1}},
      {name = "quantize", strengths = {8, 4}}}})
  if not rows then return end
  print(string.format("\nrobustness: the owner's marked paper MLP (both marks), %d seed(s) per attack", opts.seeds))
  print("| attack | strength | seed | accuracy | drop | BER | WB | mismatches | BB |\n|---|---:|---:|---:|---:|---:|---|---:|---|")
  for _, r in ipairs(rows) do
    print(string.format("| %s | %g | %d | %s | %+.2f | %.3f | %s | %d | %s |", r.attack, r.strength, r.seed,
      C.pct(r.accuracy), -r.accuracy_drop, r.ber, r.wb_detected and "kept" or "GONE", r.mismatches,
      r.bb_owned and "kept" or "GONE"))
  end
end

local studies = {capacity = capacity, overhead = overhead, robustness = robustness}
if opts.study == "all" then
  capacity(); overhead(); robustness()
elseif studies[opts.study] then
  studies[opts.study]()
else
  error("--study is all, capacity, overhead or robustness, got " .. tostring(opts.study), 0)
end
