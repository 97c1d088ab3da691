-- The training loop and evaluation.
--   ds.train{model=, data=, epochs=, batch_size=, optimizer=, schedule=, regularizers={...},
--            test=, progress=, on_epoch=function(epoch, stats) end} --> history
--
-- A regularizer adds a term to the loss; the loop knows nothing else of it:
--   {name = "reg", layers = {"fc2"}, loss = function(batch, acts) ... end, optimizer = opt}
-- loss(batch, acts) gets the batch {x=, y=, logits=, epoch=, index=, batches=} and acts, the
-- outputs of the named layers in this forward pass (with their graph), and returns a
-- scalar tensor, or nil for no term this batch. optimizer (optional) trains the
-- regularizer's own parameters: it is zeroed and stepped with the model's and saved in
-- checkpoints. A plain function(batch, acts) is a regularizer without layers.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local F = require "deepsigns.functional"
local T = require "deepsigns.tensor"
local U = require "deepsigns.util"

local TR = {}

local function fmt_time(s)
  s = math.max(0, math.floor(s + 0.5))
  return string.format("%d:%02d", s // 60, s % 60)
end

-- Correct predictions of logits (B x C) against class ids y.
local function correct(logits, y)
  local _, idx = core.ops.max(logits, 2) -- 0-based positions = class ids
  return core.tensor.item(core.ops.sum(core.ops.binary("eq", idx, y)))
end
TR.correct = correct

--- The model's accuracy and mean cross-entropy on a data set, in eval mode, without a graph.
-- @param model the model
-- @param data a data set
-- @tparam[opt] table opts {batch_size = 1000}
-- @treturn table {accuracy = fraction correct, loss = mean cross-entropy, n = samples}
-- @raise for an empty data set, a sample holding NaN or infinity (named), or non-finite model outputs
-- @usage print(ds.evaluate(model, test).accuracy)
function TR.evaluate(model, data, opts)
  if type(model) ~= "table" or type(model.forward) ~= "function" then error("evaluate: argument #1 must be a model", 2) end
  if type(data) ~= "table" or not data.x or not data.check_usable then error("evaluate: argument #2 must be a data set", 2) end
  opts = U.check_options("evaluate", opts, {"batch_size"})
  data:check_usable("evaluate")
  local was = model.training
  model:eval()
  local ok, res = pcall(A.no_grad, function()
    local n, right, loss_sum = 0, 0, 0
    for x, y in data:batches{size = opts.batch_size or 1000} do
      local logits = model(x)
      if not core.ops.all_finite(logits) then
        error(string.format("evaluate: the model's outputs are not finite (NaN or infinite) for samples %d..%d of %s",
          n + 1, n + core.tensor.size(y, 1), tostring(data.name)), 0)
      end
      local b = core.tensor.size(y, 1)
      loss_sum = loss_sum + core.tensor.item((core.nn.cross_entropy(logits, y))) * b
      right = right + correct(logits, y)
      n = n + b
    end
    return {accuracy = n > 0 and right / n or 0, loss = n > 0 and loss_sum / n or 0, n = n}
  end)
  model:train(was)
  if not ok then error(res, 0) end
  return res
end

local REGULARIZER_FIELDS = {"name", "layers", "loss", "optimizer"}

local function normalise_regularizers(regs)
  local list, layers = {}, {}
  for i, r in ipairs(regs or {}) do
    if type(r) == "function" then r = {loss = r} end
    if type(r) ~= "table" or type(r.loss) ~= "function" then
      error("train: regularizer " .. i .. " must be a function or a table with a loss function", 3)
    end
    U.check_options("train: regularizer " .. i, r, REGULARIZER_FIELDS, 4)
    if r.layers ~= nil and type(r.layers) ~= "table" then
      error("train: regularizer " .. i .. ": layers must be a list of layer names or indices", 3)
    end
    if r.optimizer ~= nil and (type(r.optimizer) ~= "table" or type(r.optimizer.step) ~= "function") then
      error("train: regularizer " .. i .. ": optimizer must be an optimiser", 3)
    end
    list[#list + 1] = {name = r.name or ("reg" .. i), layers = r.layers or {}, loss = r.loss, optimizer = r.optimizer}
    for _, l in ipairs(r.layers or {}) do layers[#layers + 1] = l end
  end
  return list, layers
end

local Progress = {}
Progress.__index = Progress

local function new_progress(opts, epochs, nb)
  local tty = opts.progress
  if tty == nil then tty = core.sys.isatty(1) end
  return setmetatable({tty = tty, log = type(opts.log) == "function" and opts.log or print,
    epochs = epochs, nb = nb, last = 0}, Progress)
end

function Progress:batch(epoch, b, s, t0)
  if not self.tty then return end
  local now = core.sys.clock()
  if now - self.last < 0.1 and b < self.nb then return end
  self.last = now
  local el = now - t0
  local width = 24
  local fill = math.floor(width * b / self.nb)
  io.stdout:write(string.format("\repoch %d/%d [%s%s] %d/%d loss %.4f acc %5.2f%% %6.0f samples/s ETA %s ",
    epoch, self.epochs, string.rep("=", fill), string.rep(" ", width - fill), b, self.nb,
    s.loss_sum / math.max(s.n, 1), 100 * s.right / math.max(s.n, 1), s.n / math.max(el, 1e-9),
    fmt_time(el / b * (self.nb - b))))
  io.stdout:flush()
end

function Progress:epoch(stats)
  local parts = {string.format("epoch %d/%d  loss %.4f  acc %.2f%%", stats.epoch, self.epochs, stats.loss,
    100 * stats.accuracy)}
  for name, v in pairs(stats.regularizers) do parts[#parts + 1] = string.format("%s %.4f", name, v) end
  if stats.test_accuracy then parts[#parts + 1] = string.format("test %.2f%%", 100 * stats.test_accuracy) end
  parts[#parts + 1] = string.format("%.0f samples/s  %.1f s", stats.samples_per_sec, stats.seconds)
  local line = table.concat(parts, "  ")
  if self.tty then io.stdout:write("\r\27[K" .. line .. "\n"); io.stdout:flush()
  else self.log(line) end
end

-- Checkpoints: one safetensors file holding the model, the optimiser(s), the
-- generator state, the schedule and the history, written atomically each epoch.
local function save_checkpoint(path, model, opt, regs, schedule, epoch, history)
  local cjson = require "cjson"
  local tensors = {}
  for k, v in pairs(model:state_dict()) do tensors["model." .. k] = v end
  local md = {format = "deepsigns-checkpoint", epoch = tostring(epoch), rng = (core.rng.state():gsub(".", function(c)
    return string.format("%02x", c:byte()) end))}
  md.optimizer = cjson.encode(opt:state_tensors("optim.", tensors))
  local reg_states = {}
  for i, r in ipairs(regs) do
    if r.optimizer then
      for j, p in ipairs(r.optimizer.params) do tensors["reg." .. i .. ".param." .. j] = p end
      reg_states[i] = r.optimizer:state_tensors("reg." .. i .. ".optim.", tensors)
    end
  end
  md.regularizers = cjson.encode(reg_states)
  if schedule then md.schedule = cjson.encode({epoch = schedule.epoch}) end
  md.history = cjson.encode(history)
  require("deepsigns.safetensors").save(path, tensors, md)
end

local function load_checkpoint(path, model, opt, regs, schedule)
  local cjson = require "cjson"
  local tensors, md = require("deepsigns.safetensors").load(path)
  if md.format ~= "deepsigns-checkpoint" then error("train: " .. path .. " is not a training checkpoint", 0) end
  local sd = {}
  for k, v in pairs(tensors) do
    local name = k:match("^model%.(.+)$")
    if name then sd[name] = v end
  end
  local ok, err = pcall(model.load_state_dict, model, sd)
  if not ok then error("train: " .. path .. " does not fit this model: " .. tostring(err), 0) end
  opt:load_state_tensors("optim.", tensors, cjson.decode(md.optimizer))
  local rs = cjson.decode(md.regularizers or "[]")
  for i, r in ipairs(regs) do
    if r.optimizer and rs[i] then
      for j, p in ipairs(r.optimizer.params) do
        local t = tensors["reg." .. i .. ".param." .. j]
        if t then core.tensor.copy(p, t) end
      end
      r.optimizer:load_state_tensors("reg." .. i .. ".optim.", tensors, rs[i])
    end
  end
  if schedule and md.schedule then
    schedule.epoch = math.tointeger(cjson.decode(md.schedule).epoch) or 0
    if schedule.epoch > 0 then schedule.optimizer.lr = schedule.fn(schedule.base_lr, schedule.epoch, schedule.opts) end
  end
  local rng = md.rng:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  core.rng.set_state(rng)
  local history = cjson.decode(md.history or "[]")
  return math.tointeger(tonumber(md.epoch)), history
end

-- The epochs' statistics as CSV (log="train.csv"), rewritten atomically after each epoch.
local function write_csv(path, history)
  local regs, seen = {}, {}
  for _, h in ipairs(history) do
    for k in pairs(h.regularizers or {}) do if not seen[k] then seen[k] = true; regs[#regs + 1] = k end end
  end
  table.sort(regs)
  local cols = {"epoch", "loss", "accuracy", "test_loss", "test_accuracy", "lr", "seconds", "samples_per_sec", "skipped"}
  local lines = {table.concat(cols, ",") .. (#regs > 0 and "," .. table.concat(regs, ",") or "")}
  for _, h in ipairs(history) do
    local row = {}
    for i, c in ipairs(cols) do row[i] = h[c] == nil and "" or string.format("%.10g", h[c]) end
    for _, r in ipairs(regs) do row[#row + 1] = h.regularizers[r] and string.format("%.10g", h.regularizers[r]) or "" end
    lines[#lines + 1] = table.concat(row, ",")
  end
  require("deepsigns.safetensors").write_atomic(path, table.concat(lines, "\n") .. "\n")
end

local TRAIN_OPTIONS = {"model", "data", "epochs", "batch_size", "optimizer", "lr", "schedule", "regularizers", "test",
  "progress", "log", "on_epoch", "loss", "on_nonfinite", "shuffle", "drop_last", "augment", "checkpoint", "fresh"}

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

--- Trains a model: each batch runs the forward pass, the loss (cross-entropy, plus each
-- regularizer's term), one backward pass and an optimiser step; prints a progress line
-- per epoch (a bar on a terminal).
-- A regularizer is {name=, layers={layer names}, loss=function(batch, acts), optimizer=}:
-- its loss gets the batch {x=, y=, logits=, epoch=, index=, batches=} and the named
-- layers' outputs of this forward pass, and returns a scalar tensor (or nil); its own
-- optimiser, if any, is stepped with the model's. A Ctrl-C in the deepsigns interpreter
-- stops training at the next batch boundary.
-- @tparam table opts
-- @param opts.model the model (an nn.Module)
-- @param opts.data the training data set (ds.data.Dataset)
-- @tparam[opt=1] integer opts.epochs
-- @tparam[opt=128] integer opts.batch_size
-- @param[opt=Adam(lr)] opts.optimizer an optimiser over the model's parameters
-- @tparam[opt=1e-3] number opts.lr the default optimiser's learning rate
-- @param[opt] opts.schedule a learning-rate schedule (ds.optim.StepLR, ...), stepped each epoch
-- @tparam[opt] table opts.regularizers a list of regularizers (whitebox keys give theirs: key:regularizer())
-- @param[opt] opts.test a data set evaluated after each epoch (test_accuracy in the history)
-- @param[opt] opts.loss function(logits, y, x) returning the loss (default: cross-entropy)
-- @tparam[opt=true] boolean opts.shuffle shuffle the batches each epoch
-- @tparam[opt=false] boolean opts.drop_last drop a last, smaller batch
-- @tparam[opt] table opts.augment {pad=4, flip=0.5}: random crops and flips of image batches
-- @tparam[opt="error"] string opts.on_nonfinite "error", "skip" (the batch) or "ignore" a non-finite loss or gradient
-- @tparam[opt] string opts.checkpoint a file saved after every epoch (model, optimisers, generator,
-- schedule, history); when it exists, training resumes from it
-- @tparam[opt=false] boolean opts.fresh start over even when the checkpoint exists
-- @param[opt] opts.progress true/false: show progress (default: a bar on a terminal, lines otherwise)
-- @param[opt] opts.log a path "train.csv" that gets the epochs' statistics, or a function(line) for the progress lines
-- @param[opt] opts.on_epoch function(epoch, stats); returning false stops training
-- @treturn table the history: one table per epoch {epoch, loss, accuracy, test_accuracy,
-- test_loss, lr, seconds, samples_per_sec, skipped, regularizers = {name = mean}}
-- @raise for an unknown option (naming the nearest valid one), an empty data set, a
-- non-finite loss or gradient (naming the epoch and batch), a checkpoint of another model
-- @usage local opt = ds.optim.Adam(model:parameters(), {lr = 1e-3})
-- ds.train{model = model, data = train, test = test, epochs = 5, optimizer = opt,
--          schedule = ds.optim.CosineAnnealingLR(opt, {T_max = 5}), checkpoint = "run.ckpt"}
function TR.train(opts)
  if type(opts) ~= "table" then error("train: expects an option table {model=, data=, ...}", 2) end
  U.check_options("train", opts, TRAIN_OPTIONS)
  local model, data = opts.model, opts.data
  if type(model) ~= "table" or type(model.forward) ~= "function" then error("train: option 'model' must be a model", 2) end
  if type(data) ~= "table" or not data.x or not data.batches then error("train: option 'data' must be a data set", 2) end
  if #data == 0 then error("train: the data set " .. tostring(data.name) .. " is empty", 2) end
  local epochs = opts.epochs or 1
  if math.type(epochs) ~= "integer" or epochs < 0 then error("train: epochs must be an integer >= 0", 2) end
  local bs = opts.batch_size or 128
  if math.type(bs) ~= "integer" or bs < 1 then error("train: batch_size must be a positive integer", 2) end
  if opts.drop_last and #data < bs then
    error(string.format("train: drop_last with batch_size %d leaves no batch of %s's %d samples", bs, data.name, #data), 2)
  end
  local optim = require "deepsigns.optim"
  local opt = opts.optimizer or optim.Adam(model:parameters(), {lr = opts.lr or 1e-3})
  if type(opt) ~= "table" or type(opt.step) ~= "function" then error("train: option 'optimizer' must be an optimiser", 2) end
  local on_nonfinite = opts.on_nonfinite or "error"
  if on_nonfinite ~= "error" and on_nonfinite ~= "skip" and on_nonfinite ~= "ignore" then
    error('train: on_nonfinite must be "error", "skip" or "ignore", got ' .. tostring(on_nonfinite), 2)
  end
  local log = opts.log
  if log ~= nil and type(log) ~= "function" and type(log) ~= "string" then
    error("train: log must be a CSV path or a function(line), got " .. type(log), 2)
  end
  local regs, layer_names = normalise_regularizers(opts.regularizers)
  local layers, module_of = {}, {} -- each named layer once
  for _, name in ipairs(layer_names) do
    if module_of[name] == nil then
      module_of[name] = model:layer(name)
      layers[#layers + 1] = module_of[name]
    end
  end
  local loss_fn = opts.loss or function(logits, y) return F.cross_entropy(logits, y) end
  local nb = data:num_batches(bs, opts.drop_last)
  local progress = new_progress(opts, epochs, nb)
  if opts.progress == false then progress.tty = false; progress.log = type(log) == "function" and log or function() end end
  local history, first = {}, 1
  if opts.checkpoint and not opts.fresh and exists(opts.checkpoint) then
    local done
    done, history = load_checkpoint(opts.checkpoint, model, opt, regs, opts.schedule)
    first = done + 1
    progress.log(string.format("resuming from %s after epoch %d of %d (fresh=true starts over)", opts.checkpoint, done,
      epochs))
  end
  core.sys.defer_interrupts(true) -- Ctrl-C stops the loop at a batch boundary, below
  local ok, err = pcall(function()
    for epoch = first, epochs do
      model:train()
      local s = {n = 0, right = 0, loss_sum = 0, reg = {}, skipped = 0}
      local t0 = core.sys.clock()
      for x, y, b in data:batches{size = bs, shuffle = opts.shuffle ~= false, drop_last = opts.drop_last, augment = opts.augment} do
        if core.sys.take_interrupt() then
          error(string.format("train: interrupted at epoch %d, batch %d%s", epoch, b, opts.checkpoint and
            string.format("; %s holds epoch %d (run again to resume)", opts.checkpoint, epoch - 1) or ""), 0)
        end
        opt:zero_grad()
        for _, r in ipairs(regs) do if r.optimizer then r.optimizer:zero_grad() end end
        local logits, acts = nil, {}
        if #layers > 0 then
          local cap = model:with_capture(layers, function() logits = model(x) end)
          for name, l in pairs(module_of) do acts[name] = cap[l] end
        else
          logits = model(x)
        end
        local loss = loss_fn(logits, y, x)
        local batch = {x = x, y = y, logits = logits, epoch = epoch, index = b, batches = nb}
        local total, reg_vals = loss, {}
        for _, r in ipairs(regs) do
          local rl = r.loss(batch, acts)
          if rl ~= nil then
            if not (T.is_tensor(rl) and core.tensor.numel(rl) == 1) then
              error("train: regularizer '" .. r.name .. "' must return a scalar tensor or nil, got "
                .. (T.is_tensor(rl) and "a tensor of shape " .. U.shape_str(rl) or type(rl)), 2)
            end
            reg_vals[r.name] = core.tensor.item(rl)
            total = total + rl
          end
        end
        local lv = core.tensor.item(total)
        if lv ~= lv or lv == math.huge or lv == -math.huge then
          if on_nonfinite == "skip" then
            s.skipped = s.skipped + 1
            goto continue
          end
          error(string.format("train: the loss is not finite (%s) at epoch %d, batch %d; lower the learning rate, "
            .. "or pass on_nonfinite=\"skip\" to skip such batches", lv ~= lv and "nan" or tostring(lv), epoch, b), 2)
        end
        total:backward()
        if on_nonfinite ~= "ignore" then
          for _, p in ipairs(opt.params) do
            local g = A.grad(p)
            if g and not core.ops.all_finite(g) then
              if on_nonfinite == "skip" then s.skipped = s.skipped + 1; goto continue end
              error(string.format("train: a gradient is not finite at epoch %d, batch %d", epoch, b), 2)
            end
          end
        end
        opt:step()
        for _, r in ipairs(regs) do if r.optimizer then r.optimizer:step() end end
        do
          local n = core.tensor.size(y, 1)
          s.n = s.n + n
          s.loss_sum = s.loss_sum + core.tensor.item(loss) * n
          s.right = s.right + correct(logits, y)
          for k, v in pairs(reg_vals) do s.reg[k] = (s.reg[k] or 0) + v * n end
        end
        progress:batch(epoch, b, s, t0)
        ::continue::
      end
      local secs = core.sys.clock() - t0
      if opts.schedule then opts.schedule:step() end
      local stats = {epoch = epoch, loss = s.loss_sum / math.max(s.n, 1), accuracy = s.right / math.max(s.n, 1),
        seconds = secs, samples_per_sec = s.n / math.max(secs, 1e-9), lr = opt.lr, regularizers = {},
        skipped = s.skipped}
      for k, v in pairs(s.reg) do stats.regularizers[k] = v / math.max(s.n, 1) end
      if opts.test then
        local ev = TR.evaluate(model, opts.test)
        stats.test_accuracy, stats.test_loss = ev.accuracy, ev.loss
      end
      history[epoch] = stats
      progress:epoch(stats)
      if opts.checkpoint then save_checkpoint(opts.checkpoint, model, opt, regs, opts.schedule, epoch, history) end
      if type(log) == "string" then write_csv(log, history) end
      if opts.on_epoch and opts.on_epoch(epoch, stats) == false then break end
    end
  end)
  core.sys.defer_interrupts(false)
  if not ok then error(err, 0) end
  return history
end

return TR
