-- The paper's networks, with named layers so a watermark can target them.
local class = require "deepsigns.class"
local nn = require "deepsigns.nn"
local Module = require "deepsigns.nn.module"
local U = require "deepsigns.util"

local M = {}

--- MNIST-MLP: ds.models.mlp{784, 512, 512, 10, dropout=0.2}. Hidden layers fc1, fc2, ...
-- are Linear + ReLU (post-activation outputs); dropout after each hidden layer.
function M.mlp(spec)
  spec = spec or {784, 512, 512, 10}
  for k in pairs(spec) do
    if math.type(k) ~= "integer" and k ~= "dropout" then
      local near = type(k) == "string" and U.nearest(k, {"dropout"})
      error("models.mlp: unknown option '" .. tostring(k) .. "'" .. (near and " (did you mean 'dropout'?)" or "")
        .. " (give the layer sizes and dropout=)", 2)
    end
  end
  local sizes = {}
  for i, v in ipairs(spec) do
    if math.type(v) ~= "integer" or v < 1 then error("models.mlp: layer size " .. i .. " must be a positive integer", 2) end
    sizes[i] = v
  end
  if #sizes < 2 then error("models.mlp: give at least input and output sizes, e.g. {784, 512, 512, 10}", 2) end
  local p = spec.dropout or 0
  local m = nn.Sequential(nn.Flatten():named("flatten"))
  for i = 1, #sizes - 1 do
    local last = i == #sizes - 1
    m:add(nn.Linear(sizes[i], sizes[i + 1], {activation = not last and "relu" or nil}):named("fc" .. i))
    if not last and p > 0 then m:add(nn.Dropout(p):named("drop" .. i)) end
  end
  local args = {table.unpack(sizes)}
  args.dropout = p
  m.arch = {builder = "mlp", args = args}
  return m
end

--- The paper's CIFAR CNN (as the Keras example it follows): 32C3(same)-32C3-MP2-
-- 64C3(same)-64C3-MP2-512FC-10FC with ReLU; for 3x32x32 or 1x28x28 inputs.
function M.cifar_cnn(opts)
  opts = U.check_options("models.cifar_cnn", opts, {"input", "classes", "dropout_conv", "dropout_fc"})
  local input = opts.input or {3, 32, 32}
  local classes = opts.classes or 10
  local p_conv, p_fc = opts.dropout_conv or 0.25, opts.dropout_fc or 0.5
  local c, h, w = input[1], input[2], input[3]
  if not (c and h and w) or h < 12 or w < 12 then
    error("models.cifar_cnn: input must be {channels, height, width} of at least 12x12, got " .. U.shape_str(input), 2)
  end
  -- conv layers carry their ReLU (fused in C), so "conv1".."conv4" name post-activation
  -- outputs, as "fc1" does
  local relu = "relu"
  local m = nn.Sequential(
    nn.Conv2d(c, 32, 3, {padding = 1, activation = relu}):named("conv1"),
    nn.Conv2d(32, 32, 3, {activation = relu}):named("conv2"),
    nn.MaxPool2d(2):named("pool1"))
  if p_conv > 0 then m:add(nn.Dropout(p_conv):named("drop1")) end
  m:add(nn.Conv2d(32, 64, 3, {padding = 1, activation = relu}):named("conv3"))
  m:add(nn.Conv2d(64, 64, 3, {activation = relu}):named("conv4"))
  m:add(nn.MaxPool2d(2):named("pool2"))
  if p_conv > 0 then m:add(nn.Dropout(p_conv):named("drop2")) end
  local fh, fw = ((h - 2) // 2 - 2) // 2, ((w - 2) // 2 - 2) // 2
  m:add(nn.Flatten():named("flatten"))
  m:add(nn.Linear(64 * fh * fw, 512, {activation = "relu"}):named("fc1"))
  if p_fc > 0 then m:add(nn.Dropout(p_fc):named("drop3")) end
  m:add(nn.Linear(512, classes):named("fc2"))
  m.arch = {builder = "cifar_cnn", args = {input = input, classes = classes, dropout_conv = p_conv, dropout_fc = p_fc}}
  return m
end

-- Wide ResNet (Zagoruyko & Komodakis): pre-activation basic blocks.
local WideBasic = class("nn.WideBasic", Module)
M.WideBasic = WideBasic
--- models.WideBasic(cin, cout, stride, dropout): a Wide ResNet's pre-activation basic
-- block (BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus a 1x1 convolution shortcut when
-- the shape changes).
function WideBasic:__init(cin, cout, stride, dropout)
  Module.__init(self)
  self.bn1 = self:add_child("bn1", nn.BatchNorm2d(cin))
  self.conv1 = self:add_child("conv1", nn.Conv2d(cin, cout, 3, {stride = stride, padding = 1, bias = false}))
  self.bn2 = self:add_child("bn2", nn.BatchNorm2d(cout))
  self.drop = dropout > 0 and self:add_child("drop", nn.Dropout(dropout)) or nil
  self.conv2 = self:add_child("conv2", nn.Conv2d(cout, cout, 3, {padding = 1, bias = false}))
  if stride ~= 1 or cin ~= cout then
    self.shortcut = self:add_child("shortcut", nn.Conv2d(cin, cout, 1, {stride = stride, bias = false}))
  end
  self.cin, self.cout, self.stride_ = cin, cout, stride
end
function WideBasic:forward(x)
  local o = self.bn1(x):relu()
  local y = self.conv1(o)
  y = self.bn2(y):relu()
  if self.drop then y = self.drop(y) end
  y = self.conv2(y)
  return y + (self.shortcut and self.shortcut(o) or x)
end
function WideBasic:extra_repr() return self.cin .. " -> " .. self.cout .. ", stride " .. self.stride_ end

--- ds.models.wrn{depth=16, widen=4, classes=10, input={3,32,32}, dropout=0}:
-- conv1, block1..block3 (groups of basic blocks), bn, relu, pool, fc.
function M.wrn(opts)
  opts = U.check_options("models.wrn", opts, {"depth", "widen", "classes", "input", "dropout"})
  local depth, k = opts.depth or 16, opts.widen or 4
  if (depth - 4) % 6 ~= 0 or depth < 10 then error("models.wrn: depth must be 6n + 4 (10, 16, 22, 28, ...), got " .. tostring(depth), 2) end
  local n = (depth - 4) // 6
  local input = opts.input or {3, 32, 32}
  local widths = {16 * k, 32 * k, 64 * k}
  local m = nn.Sequential(nn.Conv2d(input[1], 16, 3, {padding = 1, bias = false}):named("conv1"))
  local cin = 16
  for g = 1, 3 do
    local group = nn.Sequential()
    for b = 1, n do
      group:add(WideBasic(cin, widths[g], (b == 1 and g > 1) and 2 or 1, opts.dropout or 0))
      cin = widths[g]
    end
    m:add(group:named("block" .. g))
  end
  m:add(nn.BatchNorm2d(cin):named("bn"))
  m:add(nn.ReLU():named("relu"))
  m:add(nn.GlobalAvgPool():named("pool"))
  m:add(nn.Linear(cin, opts.classes or 10):named("fc"))
  m.arch = {builder = "wrn", args = {depth = depth, widen = k, input = input, classes = opts.classes or 10,
    dropout = opts.dropout or 0}}
  return m
end

-- ---- rebuilding a model from its description (Module:architecture) ----

local function value_of(d)
  if d.value ~= nil then return math.tointeger(d.value) or d.value end -- JSON numbers come back as floats
  if d.module then return M.build(d.module) end
  if d.null then return nil end
  local t = {}
  for i, x in pairs(d.list or {}) do t[math.tointeger(tonumber(i))] = value_of(x) end
  for k, x in pairs(d.fields or {}) do t[k] = value_of(x) end
  return t
end

--- The module a description made by Module:architecture stands for, with fresh weights.
function M.build(arch)
  if type(arch) ~= "table" then error("models.build: expects a description (model:architecture())", 2) end
  if arch.builder then
    local make = M[arch.builder]
    if type(make) ~= "function" or arch.builder == "build" or arch.builder == "load" then
      error("models.build: no model builder '" .. tostring(arch.builder) .. "'", 2)
    end
    return make(value_of(arch.args))
  end
  local cls = class.registry[arch.class]
  if not cls then error("models.build: no class '" .. tostring(arch.class) .. "' (only library layers can be rebuilt)", 2) end
  local m
  if arch.class == "nn.Sequential" then
    m = cls()
    for _, c in ipairs(arch.children or {}) do m:add(M.build(c)) end
  else
    local args = {}
    for i, a in ipairs(arch.args or {}) do args[i] = value_of(a) end
    m = cls(table.unpack(args, 1, #(arch.args or {})))
  end
  if arch.name then m.name = arch.name end
  return m
end

--- model, metadata = ds.load_model(path): the model a file written by model:save holds,
-- rebuilt from the architecture recorded in it, with its weights.
function M.load(path)
  if type(path) ~= "string" then error("load_model: expects a file path", 2) end
  local tensors, md = require("deepsigns.safetensors").load(path)
  if not md.architecture_json then
    error("load_model: " .. path .. " records no architecture (written by another program, or by deepsigns "
      .. "before 0.2): build the model and call model:load(path)", 2)
  end
  local ok, arch = pcall(require("cjson").decode, md.architecture_json)
  if not ok or type(arch) ~= "table" then error("load_model: " .. path .. ": the recorded architecture is not valid", 2) end
  local built, model = pcall(M.build, arch)
  if not built then error("load_model: " .. path .. ": " .. U.strip_location(model), 2) end
  local fits, err = pcall(model.load_state_dict, model, tensors)
  if not fits then error("load_model: " .. path .. " does not fit its own architecture: " .. U.strip_location(err), 2) end
  return model, md
end

return M
