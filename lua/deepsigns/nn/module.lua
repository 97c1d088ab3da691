-- nn.Module: parameters and buffers held as fields, ordered children, train/eval,
-- state_dict, clone, layer lookup and activation capture.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"
local T = require "deepsigns.tensor"
local class = require "deepsigns.class"
local U = require "deepsigns.util"

local Module = class("nn.Module")

function Module:__init()
  self.training = true
  self._params = {}   -- names of parameter fields, in order
  self._buffers = {}  -- names of buffer fields (running stats), in order
  self._children = {} -- {key=, module=} in order
end

-- Parameters start as leaf tensors that require grad.
function Module:register_parameter(name, t)
  self[name] = A.set_requires_grad(t, true)
  self._params[#self._params + 1] = name
  return t
end

function Module:register_buffer(name, t)
  self[name] = t
  self._buffers[#self._buffers + 1] = name
  return t
end

function Module:add_child(key, m)
  if getmetatable(m) == nil or type(m.forward) ~= "function" then
    error("add_child: '" .. tostring(key) .. "' is not an nn module", 3)
  end
  self._children[#self._children + 1] = {key = tostring(key), module = m}
  return m
end

-- Gives the module a name (used in state_dict keys and model:layer(name)).
function Module:named(name)
  self.name = name
  return self
end

function Module:forward(x) error(self.__name .. ": forward is not implemented", 2) end

function Module:__call(...)
  local out = self:forward(...)
  if self._hook then self._hook(self, out) end
  return out
end

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

function Module:parameters()
  local ps = {}
  for _, p in self:named_parameters() do ps[#ps + 1] = p end
  return ps
end

function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + core.tensor.numel(p) end
  return n
end

function Module:state_dict()
  local sd = {}
  walk(self, "", function(prefix, m)
    for _, n in ipairs(m._params) do if m[n] then sd[prefix .. n] = m[n] end end
    for _, n in ipairs(m._buffers) do if m[n] then sd[prefix .. n] = m[n] end end
  end)
  return sd
end

local shape_str = U.shape_str

-- Copies values in place; every check happens before anything is written.
-- opts.strict (default true): missing or unexpected keys are errors.
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

function Module:train(on)
  if on == nil then on = true end
  walk(self, "", function(_, m) m.training = on end)
  return self
end

function Module:eval() return self:train(false) end

-- Deep copy: tensors are copied (fresh leaves), shared references stay shared.
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

-- Finds a module by name (anywhere below), by 1-based child index, or by a
-- dotted path of child keys ("3.1").
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

-- Runs fn with hooks capturing the outputs of the given layers: {layer=output}.
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

-- The chosen layer's output for input x, in eval mode without a graph.
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

-- Model files (safetensors): parameters and buffers by state_dict name, with the
-- architecture, format and version in the metadata. The write is atomic.
function Module:save(path, metadata)
  if type(path) ~= "string" then error("save: expects a file path", 2) end
  local md = {}
  for k, v in pairs(metadata or {}) do md[k] = v end
  md.format = md.format or "deepsigns-model"
  md.deepsigns_version = U.VERSION
  md.architecture = md.architecture or tostring(self)
  if self.arch then md.arch = self.arch end
  require("deepsigns.safetensors").save(path, self:state_dict(), md)
  return self
end

-- Loads weights saved by model:save (or by PyTorch for the same architecture);
-- the model is unchanged if anything does not match.
function Module:load(path, opts)
  if type(path) ~= "string" then error("load: expects a file path", 2) end
  local tensors, md = require("deepsigns.safetensors").load(path)
  local ok, err = pcall(self.load_state_dict, self, tensors, opts)
  if not ok then
    error(path .. " does not fit this model: " .. U.strip_location(err), 2)
  end
  return self, md
end

function Module:extra_repr() return "" end

function Module:__tostring()
  local head = self.__name
  local extra = self:extra_repr()
  if extra ~= "" then head = head .. "(" .. extra .. ")" end
  if #self._children == 0 then return head end
  local lines = {head .. " {"}
  for _, c in ipairs(self._children) do
    local label = c.module.name and (c.key == c.module.name and c.key or c.key .. " " .. c.module.name) or c.key
    local body = tostring(c.module):gsub("\n", "\n  ")
    lines[#lines + 1] = "  (" .. label .. "): " .. body
  end
  lines[#lines + 1] = "}"
  return table.concat(lines, "\n")
end

return Module
