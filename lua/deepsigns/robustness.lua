-- Robustness evaluation: run one attack at a list of strengths (and seeds) on a
-- marked model and check its keys afterwards. One row per run.
--   rows = ds.robustness{model=, test=, data=, attack="prune", strengths={0.5, 0.9},
--                        wb_key=, bb_key=, options={}, seeds={1}, max_drop=5, alpha=, p=, realign=}
-- Each mark gets its own verdict. White-box: wb_detected (p-value < alpha) and
-- wb_detected_paper (the paper's rule, BER = 0); black-box: bb_owned. The attack
-- succeeds against a mark (wb_attack_success, bb_attack_success) when that mark is no
-- longer detected AND the accuracy dropped by at most max_drop points (the
-- literature's rule; both limits are parameters); for the white-box mark "no longer
-- detected" is our rule's (p-value), wb_attack_success_paper the paper's.
local core = require "deepsigns.core"
local U = require "deepsigns.util"
local evaluate = require("deepsigns.train").evaluate

local RB = {}

-- the option each attack's strength sets
RB.STRENGTH = {prune = "rate", finetune = "epochs", quantize = "bits", noise = "sigma", fineprune = "rate",
  permute = "seed", distill = "epochs", overwrite = "epochs"}

-- Runs one attack; returns the attacked model (and the attacker key for overwrite).
function RB.attack(name, model, strength, cfg)
  local AT = require "deepsigns.attacks"
  local fn = AT[name]
  if type(fn) ~= "function" or RB.STRENGTH[name] == nil then
    local names = {}
    for k in pairs(RB.STRENGTH) do names[#names + 1] = k end
    table.sort(names)
    error("robustness: unknown attack '" .. tostring(name) .. "' (attacks: " .. table.concat(names, ", ") .. ")", 3)
  end
  local o = {}
  for k, v in pairs(cfg.options or {}) do o[k] = v end
  o[RB.STRENGTH[name]] = strength
  if name == "prune" or name == "quantize" or name == "noise" or name == "permute" then return fn(model, o) end
  if name == "distill" then
    if type(cfg.student) ~= "function" then error("robustness: distill needs student=function() return fresh_model end", 3) end
    return fn(model, cfg.student(), cfg.data, o)
  end
  if name == "overwrite" then o.key = o.key or cfg.wb_key end
  return fn(model, cfg.data, o)
end

-- Checks the keys on a model: fields for the row.
function RB.check(model, cfg)
  local r = {}
  if cfg.wb_key then
    local wb = require "deepsigns.watermark.whitebox"
    local e = wb.extract(model, cfg.wb_key, {alpha = cfg.alpha, realign = cfg.realign})
    r.ber, r.wb_p_value, r.wb_detected, r.wb_detected_paper = e.ber, e.p_value, e.detected, e.detected_paper
  end
  if cfg.bb_key then
    local bb = require "deepsigns.watermark.blackbox"
    local d = bb.detect(model, cfg.bb_key, {p = cfg.p})
    r.mismatches, r.theta, r.bb_p_value, r.bb_owned = d.mismatches, d.theta, d.p_value, d.owned
  end
  return r
end

function RB.run_one(cfg, name, strength, seed)
  core.rng.seed(seed)
  local t0 = core.sys.clock()
  local attacked = RB.attack(name, cfg.model, strength, cfg)
  local secs = core.sys.clock() - t0
  local acc = evaluate(attacked, cfg.test).accuracy
  local row = {attack = name, strength = strength, seed = seed, accuracy = acc,
    accuracy_drop = 100 * (cfg.base_accuracy - acc), attack_seconds = secs}
  for k, v in pairs(RB.check(attacked, cfg)) do row[k] = v end
  RB.verdicts(row, cfg.max_drop)
  return row, attacked
end

--- Adds each mark's attack verdict to a row holding its detections (wb_detected,
-- wb_detected_paper, bb_owned) and accuracy_drop: wb_attack_success (our rule),
-- wb_attack_success_paper and bb_attack_success, each true when that mark is no longer
-- detected and the accuracy dropped by at most max_drop points. Returns the row.
-- @tparam table row
-- @tparam[opt=5] number max_drop
function RB.verdicts(row, max_drop)
  local kept = row.accuracy_drop <= (max_drop or 5)
  if row.wb_detected ~= nil then
    row.wb_attack_success = not row.wb_detected and kept
    row.wb_attack_success_paper = not row.wb_detected_paper and kept
  end
  if row.bb_owned ~= nil then row.bb_attack_success = not row.bb_owned and kept end
  return row
end

local RUN_OPTIONS = {"model", "test", "data", "attack", "strengths", "wb_key", "bb_key", "options", "seeds", "max_drop",
  "alpha", "p", "realign", "student", "base_accuracy", "on_row"}

--- Runs one attack at a list of strengths (and seeds) on a marked model and checks its
-- keys afterwards: one row per run, with a verdict per mark (see robustness_verdicts).
-- @tparam table opts
-- @param opts.model the marked model (never changed)
-- @param opts.test the test set for the accuracy
-- @param[opt] opts.data the attacker's data (fine-tuning, overwriting, fine-pruning, distillation)
-- @tparam string opts.attack prune, finetune, quantize, noise, fineprune, permute, distill or overwrite
-- @tparam table opts.strengths values of the attack's strength option (prune: rate,
-- finetune: epochs, quantize: bits, noise: sigma, fineprune: rate, permute: seed,
-- distill: epochs, overwrite: epochs)
-- @param[opt] opts.wb_key a white-box key
-- @param[opt] opts.bb_key a black-box key
-- @tparam[opt] table opts.options the attack's other options (e.g. {retrain = {...}})
-- @tparam[opt={1}] table opts.seeds
-- @tparam[opt=5] number opts.max_drop accuracy points an attack may cost and still succeed
-- @tparam[opt=1e-3] number opts.alpha the white-box false-alarm level
-- @tparam[opt] number opts.p the black-box false-alarm level (default the key's)
-- @tparam[opt=false] boolean opts.realign realigned white-box extraction
-- @param[opt] opts.student function() returning a fresh student model (distill)
-- @param[opt] opts.on_row function(row) called as each row is done
-- @treturn table the rows {attack, strength, seed, accuracy, accuracy_drop, ber, wb_p_value,
-- wb_detected, wb_detected_paper, wb_attack_success, wb_attack_success_paper, mismatches,
-- theta, bb_p_value, bb_owned, bb_attack_success, attack_seconds}
-- @usage local rows = ds.robustness{model = m, test = test, data = train, attack = "prune",
--   strengths = {0.5, 0.9}, wb_key = key, options = {retrain = {data = train, epochs = 3}}}
function RB.run(opts)
  local cfg = opts
  if type(cfg) == "table" then U.check_options("robustness", cfg, RUN_OPTIONS) end
  if type(cfg) ~= "table" or type(cfg.model) ~= "table" then error("robustness: option 'model' must be a model", 2) end
  if not (cfg.test and cfg.test.x) then error("robustness: option 'test' must be a data set", 2) end
  if not (cfg.wb_key or cfg.bb_key) then error("robustness: give wb_key and/or bb_key", 2) end
  if type(cfg.strengths) ~= "table" or #cfg.strengths == 0 then error("robustness: give a list of strengths", 2) end
  cfg.base_accuracy = cfg.base_accuracy or evaluate(cfg.model, cfg.test).accuracy
  local rows = {}
  for _, seed in ipairs(cfg.seeds or {1}) do
    for _, s in ipairs(cfg.strengths) do
      local row = RB.run_one(cfg, cfg.attack, s, seed)
      rows[#rows + 1] = row
      if cfg.on_row then cfg.on_row(row) end
    end
  end
  return rows
end

-- The overwriting cross matrix: the owner's and the attacker's keys, each read
-- from the attacked model, the owner's original model and an unmarked model.
-- opts: model, data, unmarked, scheme, wb_key or bb_key, and overwrite options.
function RB.overwrite_matrix(opts)
  local AT = require "deepsigns.attacks"
  local scheme = opts.scheme or (opts.bb_key and "blackbox" or "whitebox")
  local o = {}
  for k, v in pairs(opts.options or {}) do o[k] = v end
  o.scheme = scheme
  if scheme == "whitebox" then o.key = opts.wb_key end
  local attacked, attacker_key = AT.overwrite(opts.model, opts.data, o)
  local models = {{"attacked", attacked}, {"original", opts.model}, {"unmarked", opts.unmarked}}
  local owner = scheme == "whitebox" and opts.wb_key or opts.bb_key
  local matrix = {}
  for _, k in ipairs {{"owner key", owner}, {"attacker key", attacker_key}} do
    for _, m in ipairs(models) do
      local cfg = {alpha = opts.alpha, p = opts.p, realign = opts.realign}
      if scheme == "whitebox" then cfg.wb_key = k[2] else cfg.bb_key = k[2] end
      local r = RB.check(m[2], cfg)
      r.key, r.model = k[1], m[1]
      if scheme == "whitebox" then r.detected = r.wb_detected == true else r.detected = r.bb_owned == true end
      matrix[#matrix + 1] = r
    end
  end
  return matrix, attacked, attacker_key
end

function RB.format_matrix(matrix)
  local lines = {string.format("%-13s %-10s %10s %10s %9s", "key", "model", "BER/mism.", "p-value", "detected")}
  for _, r in ipairs(matrix) do
    local score = r.ber and string.format("%.3f", r.ber) or tostring(r.mismatches)
    lines[#lines + 1] = string.format("%-13s %-10s %10s %10.2e %9s", r.key, r.model, score,
      r.wb_p_value or r.bb_p_value, tostring(r.detected))
  end
  return table.concat(lines, "\n")
end

return RB
