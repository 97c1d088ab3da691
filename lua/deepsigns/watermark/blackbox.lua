-- Black-box DeepSigns: K secret key inputs with chosen labels that only the marked
-- model answers as chosen, checked with an exact binomial threshold (deepsigns.md §3).
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"
local class = require "deepsigns.class"
local cjson = require "cjson"
local K = require "deepsigns.watermark.keyfile"
local stats = require "deepsigns.stats"
local U = require "deepsigns.util"

local BB = {}
BB.FORMAT = "deepsigns-bb-key"
BB.DEFAULT_P = 1e-4

local Key = class("watermark.BlackboxKey")
BB.Key = Key

--- A black-box key (made by blackbox.keygen or blackbox.load): K inputs, their chosen
-- labels, the class count, the false-alarm level p, and a calibration when one was made.
function Key:__init(fields) for k, v in pairs(fields) do self[k] = v end end

--- A one-line description of the key.
function Key:__tostring()
  return string.format("black-box key: %d inputs of %s, %d classes, p = %g", self.K,
    U.shape_str(self.input_shape), self.classes, self.p)
end

--- The detection threshold theta: the smallest i in [0, K-1] with P(M <= i) > p, M ~
-- Binomial(K, 1 - 1/C) the mismatches of an unmarked model; a model is claimed when its
-- mismatches are fewer than theta.
-- @tparam table opts {K = (required), classes = 10, p = 1e-4}
-- @treturn integer theta
-- @raise when no threshold exists (even 0 mismatches is more likely than p)
-- @usage ds.watermark.blackbox.threshold{K = 20, classes = 10, p = 1e-4}   --> 12
function BB.threshold(opts)
  if type(opts) ~= "table" then error("blackbox.threshold: expects {K=, classes=, p=}", 2) end
  U.check_options("blackbox.threshold", opts, {"K", "classes", "p"})
  local k, c, p = opts.K, opts.classes or 10, opts.p or BB.DEFAULT_P
  if math.type(k) ~= "integer" or k < 1 then error("blackbox.threshold: K must be a positive integer", 2) end
  if math.type(c) ~= "integer" or c < 2 then error("blackbox.threshold: classes must be an integer >= 2", 2) end
  if type(p) ~= "number" or p <= 0 or p >= 1 then error("blackbox.threshold: p must be in (0, 1)", 2) end
  local perr = 1 - 1 / c
  for i = 0, k - 1 do
    if stats.binom_cdf(i, k, perr) > p then return i end
  end
  error(string.format("blackbox.threshold: no threshold exists for K = %d, %d classes, p = %g "
    .. "(even 0 mismatches is more likely than p... use more keys or a larger p)", k, c, p), 2)
end

-- Predicted class ids of a model (eval mode, batched) as a Lua list.
local function predict(model, x)
  local n, out = core.tensor.size(x, 1), {}
  local was = model.training
  model:eval()
  local ok, err = pcall(A.no_grad, function()
    for s = 1, n, 1000 do
      local len = math.min(1000, n - s + 1)
      local logits = model(core.tensor.narrow(x, 1, s, len))
      if not core.ops.all_finite(logits) then
        error(string.format("blackbox: the model's outputs for inputs %d..%d are not finite (NaN or infinite)", s,
          s + len - 1), 0)
      end
      local _, idx = core.ops.max(logits, 2)
      for _, v in ipairs(core.tensor.flat(idx)) do out[#out + 1] = v end
    end
  end)
  model:train(was)
  if not ok then error(err, 0) end
  return out
end
--- The class ids a model predicts for inputs x (eval mode, batched), as a Lua list.
-- @raise when the model's outputs are not finite
function BB.predict(model, x) return predict(model, x) end

-- Labels from a suspect: a model, or a function(x) returning a tensor or list of labels.
local function query(suspect, x, k)
  if type(suspect) == "function" then
    local got = suspect(x)
    local list = T.is_tensor(got) and core.tensor.flat(got) or got
    if type(list) ~= "table" then error("blackbox.detect: the suspect function must return labels (a tensor or a list)", 3) end
    if #list ~= k then
      error(string.format("blackbox.detect: the suspect function returned %d labels for %d key inputs", #list, k), 3)
    end
    return list
  end
  if type(suspect) ~= "table" or not suspect.forward then error("blackbox.detect: the suspect must be a model or a function", 3) end
  return predict(suspect, x)
end

-- The model takes the key's inputs and answers with key.classes outputs, or an error
-- naming who asked (e.g. "blackbox.detect").
local function check_model(key, model, who)
  local ok, out = pcall(A.no_grad, function()
    local was = model.training
    model:eval()
    local o = model(core.tensor.narrow(key.inputs, 1, 1, 1))
    model:train(was)
    return o
  end)
  if not ok then
    error(who .. ": inputs of " .. U.shape_str(key.input_shape) .. " do not fit the model: " .. U.strip_location(out), 0)
  end
  if core.tensor.dim(out) ~= 2 or core.tensor.size(out, 2) ~= key.classes then
    error(string.format("%s: %d classes expected, the model has %s outputs", who, key.classes, U.shape_str(out)), 0)
  end
end

-- The calibrated null: each key's chance of being answered as chosen by an unmarked
-- model, from the null models' answers (matches[i] of n), smoothed by one pseudo-model
-- answering at chance 1/C: q_i = (matches_i + 1/C) / (n + 1).
local function null_rates(cal, classes)
  local q = {}
  for i, k in ipairs(cal.matches) do q[i] = (k + 1 / classes) / (cal.models + 1) end
  return q
end

-- P(M <= m) for M the number of keys an unmarked model gets wrong, when key i is
-- answered as chosen independently with probability q_i (a Poisson-binomial).
local function poisson_binomial_cdf(q, m)
  local dist = {[0] = 1} -- dist[j]: P(j mismatches so far)
  for i, qi in ipairs(q) do
    local next = {}
    for j = 0, i do
      next[j] = (dist[j] or 0) * qi + (dist[j - 1] or 0) * (1 - qi)
    end
    dist = next
  end
  local acc = 0
  for j = 0, math.min(m, #q) do acc = acc + dist[j] end
  return math.min(1, acc)
end

local DETECT_OPTIONS = {"p"}

--- Queries a suspect with the key's inputs and decides ownership.
-- p_value is P(M <= mismatches), M ~ Binomial(K, 1 - 1/C): the mismatches of an unmarked
-- model that answered every key at chance; owned when p_value <= p (mismatches < theta).
-- A key calibrated against unmarked models (blackbox.calibrate) adds p_value_calibrated
-- (the same tail with each key's measured chance of being answered as chosen) and
-- p_value_rank (the share of the calibration models with at most this many mismatches,
-- (1 + count) / (1 + n)); the verdict then uses the larger of p_value and
-- p_value_calibrated, and `verdict` says which.
-- @param suspect a model, or a function(x) returning its predicted labels (a remote API)
-- @param key
-- @tparam[opt] table opts {p = the key's (1e-4)}
-- @treturn table {mismatches, theta, p_value, p_value_calibrated, p_value_rank,
-- verdict = "binomial" | "calibrated", owned, K, p, expected}
-- @raise when the model does not take the key's inputs or has another class count,
-- or answers with labels that are no class ids or non-finite outputs
-- @usage local r = bb.detect(suspect, key); print(r.mismatches, r.p_value, r.owned)
function BB.detect(suspect, key, opts)
  if getmetatable(key) ~= Key then error("blackbox.detect: argument #2 must be a black-box key", 2) end
  opts = U.check_options("blackbox.detect", opts, DETECT_OPTIONS)
  local p = opts.p or key.p or BB.DEFAULT_P
  local theta = BB.threshold{K = key.K, classes = key.classes, p = p}
  if type(suspect) == "table" and suspect.forward then check_model(key, suspect, "blackbox.detect") end
  local labels = query(suspect, key.inputs, key.K)
  local want = core.tensor.flat(key.labels)
  local m = 0
  for i = 1, key.K do
    local got = labels[i]
    if got ~= got or math.type(math.tointeger(got)) ~= "integer" then
      error("blackbox.detect: label " .. i .. " from the suspect is not a class id: " .. tostring(got), 2)
    end
    if math.tointeger(got) ~= math.tointeger(want[i]) then m = m + 1 end -- compared as class ids
  end
  local perr = 1 - 1 / key.classes
  local r = {mismatches = m, theta = theta, p_value = stats.binom_cdf(m, key.K, perr), K = key.K, p = p,
    expected = key.K * perr, verdict = "binomial"}
  local used = r.p_value
  if key.calibration then
    local cal = key.calibration
    r.p_value_calibrated = poisson_binomial_cdf(null_rates(cal, key.classes), m)
    local at_most = 0
    for _, v in ipairs(cal.mismatches) do if v <= m then at_most = at_most + 1 end end
    r.p_value_rank = (1 + at_most) / (1 + cal.models)
    if r.p_value_calibrated > used then used, r.verdict = r.p_value_calibrated, "calibrated" end
  end
  r.owned = used <= p
  return r
end

local CALIBRATE_OPTIONS = {"key", "null_models"}

--- Measures how independently trained unmarked models answer the key's inputs, and
-- stores it in the key (saved with it): blackbox.detect then also reports the
-- calibrated p-values. Models that helped choose the keys (keygen's null_models) are no
-- independent test of them: calibrate with others.
-- @tparam table opts
-- @param opts.key
-- @tparam table opts.null_models at least 2 unmarked models of the key's input shape and class count
-- @treturn table {models = n, matches = {per key: models that answered it as chosen}, mismatches = {per model}}
-- @raise for fewer than 2 models, or a model of another input shape or class count
-- @usage bb.calibrate{key = key, null_models = {m1, m2, m3}}
function BB.calibrate(opts)
  opts = U.check_options("blackbox.calibrate", opts, CALIBRATE_OPTIONS)
  local key, models = opts.key, opts.null_models
  if getmetatable(key) ~= Key then error("blackbox.calibrate: option 'key' must be a black-box key", 2) end
  if type(models) ~= "table" or #models < 2 then
    error("blackbox.calibrate: null_models must list at least 2 unmarked models, got "
      .. (type(models) == "table" and #models or type(models)), 2)
  end
  local want = core.tensor.flat(key.labels)
  local cal = {models = #models, matches = {}, mismatches = {}}
  for i = 1, key.K do cal.matches[i] = 0 end
  for j, nm in ipairs(models) do
    if type(nm) ~= "table" or not nm.forward then error("blackbox.calibrate: null model " .. j .. " is not a model", 2) end
    check_model(key, nm, "blackbox.calibrate: null model " .. j)
    local got, m = predict(nm, key.inputs), 0
    for i = 1, key.K do
      if got[i] == math.tointeger(want[i]) then cal.matches[i] = cal.matches[i] + 1 else m = m + 1 end
    end
    cal.mismatches[j] = m
  end
  key.calibration = cal
  return cal
end

-- Candidate inputs shaped like the data: "uniform" pixels in [0,1], "gaussian", or
-- images from another Dataset; normalised as the data is.
local function candidates(source, n, data)
  local shape = {n, table.unpack(data:input_shape())}
  local x
  if source == "uniform" then
    x = core.rng.rand(shape, 0, 1)
  elseif source == "gaussian" then
    x = core.rng.randn(shape, 0.5, 0.25)
  elseif type(source) == "table" and source.x then
    if U.shape_str(source:input_shape()) ~= U.shape_str(data:input_shape()) then
      error(string.format("blackbox.keygen: the candidate source's inputs are %s, the data's %s",
        U.shape_str(source:input_shape()), U.shape_str(data:input_shape())), 0)
    end
    local idx = core.rng.randperm(#source)
    if #idx < n then error(string.format("blackbox.keygen: the candidate source has %d images, %d are needed", #idx, n), 0) end
    return core.ops.index_select(source.x, table.move(idx, 1, n, 1, {}))
  else
    error("blackbox.keygen: source must be \"uniform\", \"gaussian\" or a data set", 0)
  end
  if data.mean then -- the data were normalised: do the same to the candidates
    local c = #data.mean
    local s = {1, c}
    for _ = 3, #shape do s[#s + 1] = 1 end
    core.ops.binary_("sub", x, x, core.tensor.reshape(core.tensor.from_table(data.mean), s))
    core.ops.binary_("div", x, x, core.tensor.reshape(core.tensor.from_table(data.std), s))
  end
  return x
end

-- Labels for n candidates, balanced over the given classes (a list) in a random order.
local function balanced_labels(n, classes)
  local perm, y = core.rng.randperm(n), {}
  for i = 1, n do y[perm[i]] = classes[(i - 1) % #classes + 1] end
  return y
end

-- The margin of each row's chosen label: its logit minus the largest other (> 0: answered as chosen).
local function margins(model, x, labels)
  local out, n = {}, core.tensor.size(x, 1)
  local was = model.training
  model:eval()
  local ok, err = pcall(A.no_grad, function()
    for s = 1, n, 1000 do
      local len = math.min(1000, n - s + 1)
      local z = core.tensor.totable(model(core.tensor.narrow(x, 1, s, len)))
      for r, row in ipairs(z) do
        local want = labels[s + r - 1] + 1
        local best = -math.huge
        for c, v in ipairs(row) do if c ~= want and v > best then best = v end end
        out[#out + 1] = row[want] - best
      end
    end
  end)
  model:train(was)
  if not ok then error(err, 0) end
  return out
end

-- Keys from the eligible candidates (answered as chosen by the marked model, by no null
-- model), in order of margin, at most `cap` per class: {x = rows, y = labels, per_class,
-- from = the candidates' indices}.
local function select_keys(cx, cy, eligible, margin, cap, nkeys, by_margin)
  table.sort(eligible, function(a, b)
    if by_margin and margin[a] ~= margin[b] then return margin[a] > margin[b] end
    return a < b
  end)
  local keys = {x = {}, y = {}, per_class = {}, from = {}}
  for _, i in ipairs(eligible) do
    if #keys.y >= nkeys then break end
    local c = cy[i]
    if (keys.per_class[c] or 0) < cap then
      keys.per_class[c] = (keys.per_class[c] or 0) + 1
      keys.x[#keys.x + 1] = core.tensor.narrow(cx, 1, i, 1)
      keys.y[#keys.y + 1] = c
      keys.from[#keys.from + 1] = i
    end
  end
  return keys
end

-- The candidates the marked model answers as chosen and no null model does, and each
-- one's margin.
local function eligible_of(model, null_models, x, y)
  local margin = margins(model, x, y)
  local nulls = {}
  for k, nm in ipairs(null_models) do nulls[k] = predict(nm, x) end
  local eligible = {}
  for i = 1, #y do
    local fooled = margin[i] <= 0
    for k = 1, #null_models do if nulls[k][i] == y[i] then fooled = true end end
    if not fooled then eligible[#eligible + 1] = i end
  end
  return eligible, margin
end

local function per_class_text(per_class, classes)
  local parts = {}
  for c = 0, classes - 1 do parts[#parts + 1] = c .. ":" .. (per_class[c] or 0) end
  return table.concat(parts, " ")
end

local KEYGEN_OPTIONS = {"model", "data", "K", "null_models", "seed", "p", "source", "candidates", "rounds", "epochs",
  "optimizer", "lr", "batch_size", "repeat_candidates", "select", "progress", "log", "embed", "regularizers"}

-- How the candidates are embedded: "training", the keys learned throughout a whole
-- training of the model (Adam, cosine-annealed; marks that survive fine-tuning and
-- pruning, doc/method.md), or the paper's "finetune", a 2-epoch fine-tune of a trained
-- model with the candidates.
BB.EMBED = {
  training = {epochs = 10, candidates_per_key = 25, repeat_candidates = 2, rounds = 3, lr = 1e-3},
  finetune = {epochs = 2, candidates_per_key = 40, repeat_candidates = 1, rounds = 5, lr = 8e-4},
}

--- Makes K keys and marks the model with them (in place). Draws candidate inputs with
-- labels balanced over the classes, keeps those the model does not answer as chosen,
-- trains the model on the data and the candidates (the paper's 2-epoch fine-tune of a
-- trained model, or a whole training of a fresh one), and keeps as keys the candidates
-- the model now answers as chosen and no null model does, largest margin first, at
-- most max(2, ceil(2K/C)) per class; more rounds draw more candidates until K are found.
-- @tparam table opts
-- @param opts.model the model to mark
-- @param opts.data its training data
-- @tparam[opt=20] integer opts.K
-- @tparam[opt] table opts.null_models independently trained unmarked models: keys they answer as chosen are dropped
-- @tparam[opt=0] integer opts.seed the key's own generator seed
-- @tparam[opt=1e-4] number opts.p the false-alarm level stored in the key
-- @param[opt="uniform"] opts.source candidate inputs: "uniform", "gaussian" or a data set
-- @tparam[opt=40*K] integer opts.candidates per round
-- @tparam[opt=5] integer opts.rounds
-- @tparam[opt=2] integer opts.epochs of training with the candidates, per round
-- @param[opt] opts.optimizer a function(params) returning the optimiser (default SGD lr, Nesterov momentum 0.9)
-- @tparam[opt=8e-4] number opts.lr the default optimiser's
-- @tparam[opt=1] integer opts.repeat_candidates how many times the candidates appear per epoch
-- @tparam[opt="margin"] string opts.select "margin" (largest first) or "first"
-- @return the key
-- @raise when K keys cannot be found (saying how many were, per class), for a data set
-- of one class, or null models of another input shape or class count
-- @usage local key = bb.keygen{model = model, data = train, K = 20, null_models = {other}}
function BB.keygen(opts)
  opts = U.check_options("blackbox.keygen", opts, KEYGEN_OPTIONS)
  local model, data = opts.model, opts.data
  if type(model) ~= "table" or not model.forward then error("blackbox.keygen: option 'model' must be a model", 2) end
  if type(data) ~= "table" or not data.x then error("blackbox.keygen: option 'data' must be a data set", 2) end
  data:check_usable("blackbox.keygen")
  local C = data.classes
  local present = 0
  for _, n in pairs(data:class_counts()) do if n > 0 then present = present + 1 end end
  if present < 2 then error("blackbox.keygen: the data set " .. tostring(data.name) .. " holds a single class", 2) end
  local nkeys = opts.K or 20
  if math.type(nkeys) ~= "integer" or nkeys < 1 then error("blackbox.keygen: K must be a positive integer", 2) end
  local seed = opts.seed or 0
  if math.type(seed) ~= "integer" then error("blackbox.keygen: seed must be an integer", 2) end
  local embed = opts.embed or "training"
  local recipe = BB.EMBED[embed]
  if not recipe then error('blackbox.keygen: embed must be "training" or "finetune", got ' .. tostring(embed), 2) end
  local rounds, ncand = opts.rounds or recipe.rounds, opts.candidates or recipe.candidates_per_key * nkeys
  local epochs, repeats = opts.epochs or recipe.epochs, opts.repeat_candidates or recipe.repeat_candidates
  for name, v in pairs {rounds = rounds, candidates = ncand, epochs = epochs, repeat_candidates = repeats} do
    if math.type(v) ~= "integer" or v < 1 then error("blackbox.keygen: " .. name .. " must be a positive integer", 2) end
  end
  local select = opts.select or "margin"
  if select ~= "margin" and select ~= "first" then error('blackbox.keygen: select must be "margin" or "first"', 2) end
  local cap = math.ceil(2 * nkeys / C)
  if cap * C < nkeys then error("blackbox.keygen: K is too large for the classes", 2) end
  local probe = {K = nkeys, classes = C, input_shape = data:input_shape(), inputs = core.tensor.narrow(data.x, 1, 1, 1)}
  check_model(probe, model, "blackbox.keygen: the model")
  local null_models = opts.null_models or {}
  for j, nm in ipairs(null_models) do check_model(probe, nm, "blackbox.keygen: null model " .. j) end
  local D = require "deepsigns.data"
  local train = require "deepsigns.train"
  local optim = require "deepsigns.optim"
  local saved = core.rng.state()
  core.rng.seed(seed)
  local t0 = core.sys.clock()
  local ok, res = pcall(function()
    local keys = {x = {}, y = {}, per_class = {}}
    -- every key taken in some round: trained on in the later rounds and judged again after
    -- each, so the keys returned are the ones the final model answers as chosen
    local pool = {x = {}, y = {}}
    local eligible_total, forgotten = 0, 0
    for round = 1, rounds do
      local x = candidates(opts.source or "uniform", ncand, data)
      local open = {} -- the classes that can still take keys
      for c = 0, C - 1 do if (keys.per_class[c] or 0) < cap then open[#open + 1] = c end end
      local y = balanced_labels(ncand, open)
      local before = predict(model, x)
      local keep = {}
      for i = 1, ncand do if before[i] ~= y[i] then keep[#keep + 1] = i end end
      if #keep > 0 then
        local cx, cy = core.ops.index_select(x, keep), {}
        for i, j in ipairs(keep) do cy[i] = y[j] end
        local cand = D.Dataset{x = cx, y = core.tensor.from_table(cy), classes = C, name = "candidates"}
        local parts = {data}
        for _ = 1, repeats do parts[#parts + 1] = cand end
        local npool = #pool.y
        local pool_x = npool > 0 and T.cat(pool.x, 1) or nil
        if npool > 0 then -- the keys of earlier rounds, shown as often as the candidates
          local found = D.Dataset{x = pool_x, y = core.tensor.from_table(pool.y), classes = C, name = "keys"}
          for _ = 1, repeats do parts[#parts + 1] = found end
        end
        local opt, schedule = opts.optimizer, nil
        if type(opt) == "function" then
          opt = opt(model:parameters())
        elseif embed == "training" then
          opt = optim.Adam(model:parameters(), {lr = opts.lr or recipe.lr})
          schedule = optim.CosineAnnealingLR(opt, {T_max = epochs})
        else
          opt = optim.SGD(model:parameters(), {lr = opts.lr or recipe.lr, momentum = 0.9, nesterov = true})
        end
        train.train{model = model, data = D.concat(parts, "owner+candidates"), epochs = epochs,
          batch_size = opts.batch_size or 128, optimizer = opt, schedule = schedule, regularizers = opts.regularizers,
          progress = opts.progress or false, log = opts.log}
        -- judge the earlier keys and the new candidates by the model as it is now
        local jx, jy = cx, cy
        if npool > 0 then
          jx, jy = T.cat({pool_x, cx}, 1), {}
          for i, c in ipairs(pool.y) do jy[i] = c end
          for i, c in ipairs(cy) do jy[npool + i] = c end
        end
        local eligible, margin = eligible_of(model, null_models, jx, jy)
        forgotten = npool
        for _, i in ipairs(eligible) do
          if i <= npool then forgotten = forgotten - 1 else eligible_total = eligible_total + 1 end
        end
        keys = select_keys(jx, jy, eligible, margin, cap, nkeys, select == "margin")
        for k, i in ipairs(keys.from) do
          if i > npool then pool.x[#pool.x + 1], pool.y[#pool.y + 1] = keys.x[k], keys.y[k] end
        end
      end
      if type(opts.log) == "function" then opts.log(string.format("round %d: %d of %d keys", round, #keys.y, nkeys)) end
      if #keys.y >= nkeys then break end
    end
    if #keys.y < nkeys then
      error(string.format("blackbox.keygen: found only %d of %d keys in %d rounds of %d candidates (%d answered as "
        .. "chosen by the marked model and by no null model; per class: %s; at most %d per class are taken; %d "
        .. "taken earlier and forgotten since); allow more rounds, candidates or epochs, or ask for fewer keys", #keys.y, nkeys,
        rounds, ncand, eligible_total, per_class_text(keys.per_class, C), cap, forgotten), 0)
    end
    return {x = T.cat(keys.x, 1), y = keys.y}
  end)
  core.rng.set_state(saved)
  if not ok then error(res, 2) end
  return Key{inputs = res.x, labels = core.tensor.from_table(res.y), K = nkeys, classes = C, p = opts.p or BB.DEFAULT_P,
    seed = seed, input_shape = data:input_shape(), model_hash = K.model_hash(model), seconds = core.sys.clock() - t0}
end

--- Writes the key as a self-contained file with a SHA-256 of its content; returns the key.
function Key:save(path)
  K.save(path, {inputs = self.inputs, labels = self.labels}, {format = BB.FORMAT, K = tostring(self.K),
    classes = tostring(self.classes), p = string.format("%.17g", self.p), seed = tostring(self.seed),
    input_shape = cjson.encode(self.input_shape), model_hash = self.model_hash or "",
    calibration = self.calibration and cjson.encode(self.calibration) or ""})
  return self
end

--- A key from the bytes of a key file (`path` names it in messages).
function BB.decode(bytes, path)
  local t, md = K.decode(bytes, path, BB.FORMAT, {"inputs", "labels", "K", "classes"})
  local nkeys, classes = math.tointeger(tonumber(md.K)), math.tointeger(tonumber(md.classes))
  local function bad(msg) error(path .. ": inconsistent key: " .. msg, 0) end
  if not nkeys or not classes or classes < 2 then bad("K or classes is not a valid integer") end
  if core.tensor.dim(t.labels) ~= 1 or core.tensor.size(t.labels, 1) ~= nkeys or core.tensor.size(t.inputs, 1) ~= nkeys then
    bad("it holds " .. core.tensor.size(t.inputs, 1) .. " inputs and " .. core.tensor.numel(t.labels) .. " labels for K = " .. nkeys)
  end
  for _, v in ipairs(core.tensor.flat(t.labels)) do
    if v ~= math.floor(v) or v < 0 or v >= classes then bad("label " .. v .. " is not a class id in 0.." .. classes - 1) end
  end
  local shape = core.tensor.size(t.inputs)
  table.remove(shape, 1)
  local cal
  if md.calibration and md.calibration ~= "" then
    local okc, c = pcall(cjson.decode, md.calibration)
    if not okc or type(c) ~= "table" or type(c.matches) ~= "table" or #c.matches ~= nkeys or type(c.mismatches) ~= "table" then
      bad("the calibration does not fit the key")
    end
    c.models = math.tointeger(c.models)
    for i, v in ipairs(c.matches) do c.matches[i] = math.tointeger(v) end
    for i, v in ipairs(c.mismatches) do c.mismatches[i] = math.tointeger(v) end
    cal = c
  end
  return Key{inputs = t.inputs, labels = t.labels, K = nkeys, classes = classes, p = tonumber(md.p) or BB.DEFAULT_P,
    seed = math.tointeger(tonumber(md.seed)) or 0, input_shape = shape,
    model_hash = md.model_hash ~= "" and md.model_hash or nil, calibration = cal}
end

local load = K.loader("blackbox.load", BB.decode)
--- Reads a key file written by key:save, checking its SHA-256.
-- @tparam string path
function BB.load(path) return load(path) end

return BB
