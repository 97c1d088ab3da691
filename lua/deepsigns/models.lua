-- The paper's networks, with named layers so a watermark can target them.
local class = require "deepsigns.class"
local nn = require "deepsigns.nn"
local Module = require "deepsigns.nn.module"
local U = require "deepsigns.util"

local M = {}

-- MNIST-MLP: ds.models.mlp{784, 512, 512, 10, dropout=0.2}. Hidden layers fc1, fc2, ...
-- are Linear + ReLU (post-activation outputs); dropout after each hidden layer.
function M.mlp(spec)
  spec = spec or {784, 512, 512, 10}
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
  m.arch = {kind = "mlp", sizes = sizes, dropout = p}
  return m
end

-- The paper's CIFAR CNN (as the Keras example it follows): 32C3(same)-32C3-MP2-
-- 64C3(same)-64C3-MP2-512FC-10FC with ReLU; for 3x32x32 or 1x28x28 inputs.
function M.cifar_cnn(opts)
  opts = opts or {}
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
  m.arch = {kind = "cifar_cnn", input = input, classes = classes}
  return m
end

-- Wide ResNet (Zagoruyko & Komodakis): pre-activation basic blocks.
local WideBasic = class("nn.WideBasic", Module)
M.WideBasic = WideBasic
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

-- ds.models.wrn{depth=16, widen=4, classes=10, input={3,32,32}, dropout=0}:
-- conv1, block1..block3 (groups of basic blocks), bn, relu, pool, fc.
function M.wrn(opts)
  opts = opts or {}
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
  m.arch = {kind = "wrn", depth = depth, widen = k, input = input}
  return m
end

return M
