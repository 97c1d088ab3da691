-- nn.Module: parameters and buffers held as fields, ordered children, train/eval,
-- state_dict, clone, layer lookup and activation capture.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"
local class = require "deepsigns.class"
local U = require "deepsigns.util"

local Module = class("nn.Module")
Module.__keep_args = true -- constructor arguments, for Module:architecture

--- nn.Module: the base of every layer and model. A subclass sets parameters
-- (register_parameter), buffers and children in its __init and defines forward(x);
-- model(x) calls forward.
function Module:__init()
  self.training = true
  self._params = {}   -- names of parameter fields, in order
  self._buffers = {}  -- names of buffer fields (running stats), in order
  self._children = {} -- {key=, module=} in order
end

--- Makes t a parameter of the module, at self[name], as a leaf that requires grad.
function Module:register_parameter(name, t)
  self[name] = A.set_requires_grad(t, true)
  self._params[#self._params + 1] = name
  return t
end

--- Makes t a buffer (state that is saved but not trained, e.g. running statistics) at self[name].
function Module:register_buffer(name, t)
  self[name] = t
  self._buffers[#self._buffers + 1] = name
  return t
end

--- Adds module m as a child under key (its parameters become the module's).
function Module:add_child(key, m)
  if getmetatable(m) == nil or type(m.forward) ~= "function" then
    error("add_child: '" .. tostring(key) .. "' is not an nn module", 3)
  end
  self._children[#self._children + 1] = {key = tostring(key), module = m}
  return m
end

--- Gives the module a name (used in state_dict keys and model:layer(name)); returns it.
-- @usage ds.nn.Linear(512, 512):named("fc2")
function Module:named(name)
  self.name = name
  return self
end

--- The module's computation; model(x) calls it (subclasses define it).
function Module:forward(x) error(self.__name .. ": forward is not implemented", 2) end

function Module:__call(...)
  local out = self:forward(...)
  if self._hook then self._hook(self, out) end
  return out
end

--- The child modules, in order.
function Module:children()
  local list = {}
  for i, c in ipairs(self._children) do list[i] = c.module end
  return list
end

-- Visits (prefix, module) depth first.
local function walk(m, prefix, fn)
  fn(prefix, m)
  for _, c in ipairs(m._children) do
    walk(c.module, prefix .. c.key .. ".", fn)
  end
end

--- An iterator of (name, tensor) over every parameter, with state_dict names ("fc1.weight").
-- @usage for name, p in model:named_parameters() do print(name, p:numel()) end
function Module:named_parameters()
  local list = {}
  walk(self, "", function(prefix, m)
    for _, n in ipairs(m._params) do
      if m[n] then list[#list + 1] = {prefix .. n, m[n]} end
    end
  end)
  local i = 0
  return function()
    i = i + 1
    if list[i] then return list[i][1], list[i][2] end
  end
end

--- The parameters as a list (what an optimiser takes).
function Module:parameters()
  local ps = {}
  for _, p in self:named_parameters() do ps[#ps + 1] = p end
  return ps
end

--- The number of parameter values.
function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + core.tensor.numel(p) end
  return n
end

--- The parameters and buffers by name, as PyTorch's state_dict ({["fc1.weight"] = tensor, ...}).
function Module:state_dict()
  local sd = {}
  walk(self, "", function(prefix, m)
    for _, n in ipairs(m._params) do if m[n] then sd[prefix .. n] = m[n] end end
    for _, n in ipairs(m._buffers) do if m[n] then sd[prefix .. n] = m[n] end end
  end)
  return sd
end

local shape_str = U.shape_str

--- Copies the values of a state dict into the module's tensors, in place; everything is
-- checked before anything is written (a mismatch leaves the module unchanged).
-- @tparam table sd {name = tensor}
-- @tparam[opt] table opts
-- @tparam[opt=true] boolean opts.strict missing or unexpected keys are errors
-- @raise naming every missing, unexpected or misshapen tensor
function Module:load_state_dict(sd, opts)
  if type(sd) ~= "table" then error("load_state_dict: expects a table of tensors, got " .. type(sd), 2) end
  local strict = not (opts and opts.strict == false)
  local own = self:state_dict()
  local problems = {}
  for k, t in pairs(own) do
    local v = sd[k]
    if v == nil then
      if strict then problems[#problems + 1] = "missing key '" .. k .. "'" end
    elseif not T.is_tensor(v) then
      problems[#problems + 1] = "'" .. k .. "' is a " .. type(v) .. ", not a tensor"
    elseif shape_str(v) ~= shape_str(t) then
      problems[#problems + 1] = string.format("'%s' has shape %s, the model expects %s", k, shape_str(v), shape_str(t))
    end
  end
  if strict then
    for k in pairs(sd) do
      if own[k] == nil and not tostring(k):match("num_batches_tracked$") then
        problems[#problems + 1] = "unexpected key '" .. tostring(k) .. "'"
      end
    end
  end
  if #problems > 0 then
    table.sort(problems)
    error("load_state_dict: " .. table.concat(problems, "; "), 2)
  end
  for k, t in pairs(own) do
    if sd[k] ~= nil then core.tensor.copy(t, sd[k]) end
  end
  return self
end

--- Training mode (dropout active, batch statistics) for the module and its children;
-- train(false) is eval(). Returns the module.
function Module:train(on)
  if on == nil then on = true end
  walk(self, "", function(_, m) m.training = on end)
  return self
end

--- Evaluation mode: dropout off, running statistics. Returns the module.
function Module:eval() return self:train(false) end

--- A deep copy: tensors are copied (fresh leaves), shared references stay shared.
function Module:clone()
  local memo = {}
  local function copy(v)
    if type(v) == "userdata" and T.is_tensor(v) then
      if memo[v] then return memo[v] end
      local c = core.tensor.clone(v)
      if A.needs_grad(v) then A.set_requires_grad(c, true) end
      memo[v] = c
      return c
    elseif type(v) == "table" then
      if memo[v] then return memo[v] end
      local mt = getmetatable(v)
      -- classes and library tables are shared, instances copied
      if rawget(v, "__index") == v then return v end
      local c = {}
      memo[v] = c
      for k, x in pairs(v) do
        if k ~= "_hook" then c[copy(k)] = copy(x) end
      end
      return setmetatable(c, mt)
    end
    return v
  end
  return copy(self)
end

--- The class ids (0-based, the data's label values) the model predicts for x, in eval
-- mode without a graph.
-- @param x a batch of inputs
-- @return a tensor of size(x, 1) class ids
-- @usage local ids = model:predict(test.x:narrow(1, 1, 10))
function Module:predict(x)
  if not T.is_tensor(x) then error("predict: argument #1 must be a tensor of inputs", 2) end
  local was = self.training
  self:eval()
  local ok, res = pcall(A.no_grad, function()
    local _, idx = core.ops.max(self(x), 2)
    return idx
  end)
  self:train(was)
  if not ok then error(res, 0) end
  return res
end

--- A module below this one, by name (anywhere below), by 1-based child index, or by a
-- dotted path of child keys ("3.1").
-- @raise naming the layers there are, when none matches
function Module:layer(which)
  if math.type(which) == "integer" then
    local c = self._children[which]
    if not c then
      error(string.format("layer: index %d out of range (the model has %d layers)", which, #self._children), 2)
    end
    return c.module
  end
  if type(which) ~= "string" then error("layer: expects a layer name or index, got " .. type(which), 2) end
  local found
  walk(self, "", function(prefix, m)
    if not found and (m.name == which or prefix:sub(1, -2) == which) and m ~= self then found = m end
  end)
  if not found then
    local names = {}
    walk(self, "", function(prefix, m) if m ~= self then names[#names + 1] = m.name or prefix:sub(1, -2) end end)
    error("layer: no layer named '" .. which .. "' (layers: " .. table.concat(names, ", ") .. ")", 2)
  end
  return found
end

--- Runs fn(captured) with the outputs of the given layers (modules) captured while it
-- runs: captured[layer] = that layer's last output (with its graph).
function Module:with_capture(layers, fn)
  local captured = {}
  for _, l in ipairs(layers) do
    if l._hook then error("with_capture: layer is already being captured", 2) end
    l._hook = function(m, out) captured[m] = out end
  end
  local ok, err = pcall(fn, captured)
  for _, l in ipairs(layers) do l._hook = nil end
  if not ok then error(err, 0) end
  return captured
end

--- The output of a layer (a name, an index or the module) for input x, in eval mode
-- without a graph.
-- @usage local h = model:activations(x, "fc2")
function Module:activations(x, which)
  local l = type(which) == "table" and which or self:layer(which)
  local was = self.training
  self:eval()
  local ok, res = pcall(A.no_grad, function()
    local out
    self:with_capture({l}, function(c) self(x); out = c[l] end)
    return out
  end)
  self:train(was)
  if not ok then error(res, 0) end
  return res
end

--- Saves the model as a safetensors file (atomically): parameters and buffers by
-- state_dict name (PyTorch's safetensors load them by name), the architecture (so that
-- ds.load_model rebuilds the model), the format and version in the metadata.
-- @tparam string path
-- @tparam[opt] table metadata more string keys and values for the header
-- @usage model:save("results/mlp.safetensors", {seed = "1"})
function Module:save(path, metadata)
  if type(path) ~= "string" then error("save: expects a file path", 2) end
  local md = {}
  for k, v in pairs(metadata or {}) do md[k] = v end
  md.format = md.format or "deepsigns-model"
  md.deepsigns_version = U.VERSION
  md.architecture = md.architecture or tostring(self)
  local ok, arch = pcall(self.architecture, self)
  if ok then md.architecture_json = require("cjson").encode(arch) end
  require("deepsigns.safetensors").save(path, self:state_dict(), md)
  return self
end

--- Loads weights saved by model:save (or by PyTorch for the same architecture) into
-- this model; it is unchanged if anything does not match. Returns the model and the
-- file's metadata.
-- @tparam string path
-- @tparam[opt] table opts {strict = true}
function Module:load(path, opts)
  if type(path) ~= "string" then error("load: expects a file path", 2) end
  local tensors, md = require("deepsigns.safetensors").load(path)
  local ok, err = pcall(self.load_state_dict, self, tensors, opts)
  if not ok then
    error(path .. " does not fit this model: " .. U.strip_location(err), 2)
  end
  return self, md
end

--- The text after the class name when the module is printed (subclasses define it).
function Module:extra_repr() return "" end

local function tree(m)
  local head = m.__name
  local extra = m:extra_repr()
  if extra ~= "" then head = head .. "(" .. extra .. ")" end
  if #m._children == 0 then return head end
  local lines = {head .. " {"}
  for _, c in ipairs(m._children) do
    local label = c.module.name and (c.key == c.module.name and c.key or c.key .. " " .. c.module.name) or c.key
    local body = tree(c.module):gsub("\n", "\n  ")
    lines[#lines + 1] = "  (" .. label .. "): " .. body
  end
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n")
end

--- The module tree, and its number of parameters.
function Module:__tostring()
  local n = self:num_parameters()
  local digits = tostring(n):reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
  return tree(self) .. "\n(" .. digits .. " parameters)"
end

-- How the module was made, as plain data (cjson can write it): the constructor of a
-- ds.models builder and its arguments, or the class name, constructor arguments (modules
-- among them described the same way) and name of each module, a container's children
-- in order. models.build(description) makes such a module again.
local function describe_value(v, who)
  local tv = type(v)
  if tv == "number" or tv == "string" or tv == "boolean" then return {value = v} end
  if tv == "table" and type(v.architecture) == "function" and getmetatable(v) then return {module = v:architecture()} end
  if tv == "table" and getmetatable(v) == nil then
    local list, fields = {}, {}
    for k, x in pairs(v) do
      if math.type(k) == "integer" then list[k] = describe_value(x, who) else fields[tostring(k)] = describe_value(x, who) end
    end
    return {list = list, fields = fields}
  end
  error("architecture: " .. who .. " was made with a " .. tv .. " argument, which cannot be described", 0)
end
--- A constructor argument as plain data (numbers, strings, booleans, tables of them,
-- and modules by their architecture), as Module:architecture records it.
function Module.describe_value(v, who) return describe_value(v, who) end

--- How the module was made, as plain data (recorded in model files; ds.models.build
-- makes the module again from it).
function Module:architecture()
  if self.arch then return {builder = self.arch.builder, args = describe_value(self.arch.args, self.__name)} end
  local d = {class = self.__name, name = self.name}
  if self.__name == "nn.Sequential" then
    d.children = {}
    for i, c in ipairs(self._children) do d.children[i] = c.module:architecture() end
    return d
  end
  local args = self._args or {n = 0}
  d.args = {}
  for i = 1, args.n do d.args[i] = args[i] == nil and {null = true} or describe_value(args[i], self.__name) end
  return d
end

return Module
