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

function Key:__init(fields) for k, v in pairs(fields) do self[k] = v end end

function Key:__tostring()
  return string.format("black-box key: %d inputs of %s, %d classes, p = %g", self.K,
    U.shape_str(self.input_shape), self.classes, self.p)
end

-- theta: the smallest i in [0, K-1] with P(M <= i) > p, M ~ Binomial(K, 1 - 1/C) the
-- mismatches of an unmarked model; the model is claimed when mismatches < theta.
function BB.threshold(opts)
  if type(opts) ~= "table" then error("blackbox.threshold: expects {K=, classes=, p=}", 2) end
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
      local _, idx = core.ops.max(model(core.tensor.narrow(x, 1, s, len)), 2)
      for _, v in ipairs(core.tensor.flat(idx)) do out[#out + 1] = v end
    end
  end)
  model:train(was)
  if not ok then error(err, 0) end
  return out
end
BB.predict = predict

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

local function check_model(key, model)
  local ok, out = pcall(A.no_grad, function()
    local was = model.training
    model:eval()
    local o = model(core.tensor.narrow(key.inputs, 1, 1, 1))
    model:train(was)
    return o
  end)
  if not ok then
    error("blackbox: the key's inputs (" .. U.shape_str(key.input_shape) .. ") do not fit the model: "
      .. U.strip_location(out), 0)
  end
  if core.tensor.size(out, 2) ~= key.classes then
    error(string.format("blackbox: the key is for %d classes, the model has %d outputs", key.classes, core.tensor.size(out, 2)), 0)
  end
end

-- {mismatches, theta, p_value = P(M <= mismatches), owned = mismatches < theta, K, expected}
function BB.detect(suspect, key, opts)
  if getmetatable(key) ~= Key then error("blackbox.detect: argument #2 must be a black-box key", 2) end
  opts = opts or {}
  local p = opts.p or key.p or BB.DEFAULT_P
  local theta = BB.threshold{K = key.K, classes = key.classes, p = p}
  if type(suspect) == "table" and suspect.forward then check_model(key, suspect) end
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
  return {mismatches = m, theta = theta, p_value = stats.binom_cdf(m, key.K, perr), owned = m < theta, K = key.K,
    p = p, expected = key.K * perr}
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

-- key = blackbox.keygen{model=, data=, K=20, null_models={...}, epochs=2, optimizer=, lr=8e-4,
--   batch_size=128, candidates=40*K, source="uniform", rounds=5, repeat_candidates=1, seed=, p=}
-- Marks `model` in place (fine-tuning) and returns the key.
function BB.keygen(opts)
  if type(opts) ~= "table" then error("blackbox.keygen: expects an option table", 2) end
  local model, data = opts.model, opts.data
  if type(model) ~= "table" or not model.forward then error("blackbox.keygen: option 'model' must be a model", 2) end
  if type(data) ~= "table" or not data.x then error("blackbox.keygen: option 'data' must be a data set", 2) end
  local nkeys = opts.K or 20
  if math.type(nkeys) ~= "integer" or nkeys < 1 then error("blackbox.keygen: K must be a positive integer", 2) end
  local seed = opts.seed or 0
  local rounds = opts.rounds or 5
  local ncand = opts.candidates or 40 * nkeys
  local C = data.classes
  local null_models = opts.null_models or {}
  local D = require "deepsigns.data"
  local train = require "deepsigns.train"
  local optim = require "deepsigns.optim"
  local saved = core.rng.state()
  core.rng.seed(seed)
  local t0 = core.sys.clock()
  local ok, res = pcall(function()
    local keys_x, keys_y = {}, {}
    local found = 0
    for round = 1, rounds do
      local x = candidates(opts.source or "uniform", ncand, data)
      local y = {}
      for i = 1, ncand do y[i] = core.rng.randint(0, C - 1) end
      local before = predict(model, x)
      local keep = {}
      for i = 1, ncand do if before[i] ~= y[i] then keep[#keep + 1] = i end end
      if #keep > 0 then
        local cx, cy = core.ops.index_select(x, keep), {}
        for i, j in ipairs(keep) do cy[i] = y[j] end
        local cand = D.Dataset{x = cx, y = core.tensor.from_table(cy), classes = C, name = "candidates"}
        local parts = {data}
        for _ = 1, opts.repeat_candidates or 1 do parts[#parts + 1] = cand end
        if found > 0 then -- keep the keys found so far marked
          parts[#parts + 1] = D.Dataset{x = T.cat(keys_x, 1), y = core.tensor.from_table(keys_y), classes = C, name = "keys"}
        end
        local mix = D.concat(parts, "owner+candidates")
        train.train{model = model, data = mix, epochs = opts.epochs or 2, batch_size = opts.batch_size or 128,
          optimizer = opts.optimizer or optim.SGD(model:parameters(), {lr = opts.lr or 8e-4, momentum = 0.9, nesterov = true}),
          progress = opts.progress or false, log = opts.log}
        local after = predict(model, cx)
        local nulls = {}
        for k, nm in ipairs(null_models) do nulls[k] = predict(nm, cx) end
        for i = 1, #keep do
          if found < nkeys and after[i] == cy[i] then
            local fooled = false
            for k = 1, #null_models do if nulls[k][i] == cy[i] then fooled = true end end
            if not fooled then
              found = found + 1
              keys_x[found] = core.tensor.narrow(cx, 1, i, 1)
              keys_y[found] = cy[i]
            end
          end
        end
      end
      if opts.log then opts.log(string.format("round %d: %d of %d keys", round, found, nkeys)) end
      if found >= nkeys then break end
    end
    if found < nkeys then
      error(string.format("blackbox.keygen: found only %d of %d keys in %d rounds of %d candidates; "
        .. "allow more rounds or candidates, or ask for fewer keys", found, nkeys, rounds, ncand), 0)
    end
    return {x = T.cat(keys_x, 1), y = keys_y}
  end)
  core.rng.set_state(saved)
  if not ok then error(res, 2) end
  local key = Key{inputs = res.x, labels = core.tensor.from_table(res.y), K = nkeys, classes = C, p = opts.p or BB.DEFAULT_P,
    seed = seed, input_shape = data:input_shape(), model_hash = K.model_hash(model), seconds = core.sys.clock() - t0}
  return key
end

function Key:save(path)
  K.save(path, {inputs = self.inputs, labels = self.labels}, {format = BB.FORMAT, K = tostring(self.K),
    classes = tostring(self.classes), p = string.format("%.17g", self.p), seed = tostring(self.seed),
    input_shape = cjson.encode(self.input_shape), model_hash = self.model_hash or ""})
  return self
end

-- A key from the bytes of a key file (`path` names it in messages).
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
  return Key{inputs = t.inputs, labels = t.labels, K = nkeys, classes = classes, p = tonumber(md.p) or BB.DEFAULT_P,
    seed = math.tointeger(tonumber(md.seed)) or 0, input_shape = shape,
    model_hash = md.model_hash ~= "" and md.model_hash or nil}
end

BB.load = K.loader("blackbox.load", BB.decode)

return BB
