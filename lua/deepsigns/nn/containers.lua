-- Containers: Sequential (errors name the failing child) and Residual.
local class = require "deepsigns.class"
local Module = require "deepsigns.nn.module"
local U = require "deepsigns.util"

local C = {}

C.Sequential = class("nn.Sequential", Module)
--- nn.Sequential(m1, m2, ...): applies its children in order. An error inside a child
-- names it: "in module 3 (nn.Linear 'fc2') of nn.Sequential: ...".
-- @usage local m = ds.nn.Sequential(ds.nn.Flatten(), ds.nn.Linear(784, 10):named("out"))
function C.Sequential:__init(...)
  Module.__init(self)
  for i, m in ipairs {...} do self:add(m) end
end

--- Appends a child: seq:add(module) or seq:add(name, module); returns the Sequential.
function C.Sequential:add(a, b)
  local name, m = a, b
  if b == nil then name, m = nil, a end
  if name then m.name = name end
  return Module.add_child(self, m.name or tostring(#self._children + 1), m) and self
end

--- Applies the children in order; an error inside one names it.
function C.Sequential:forward(x)
  for i, c in ipairs(self._children) do
    local ok, out = pcall(c.module, x)
    if not ok then
      local label = c.module.__name .. (c.module.name and (" '" .. c.module.name .. "'") or "")
      -- the child's "file:line:" prefix points inside the library: drop it
      local msg = U.strip_location(out)
      error(string.format("in module %d (%s) of nn.Sequential: %s", i, label, msg), 0)
    end
    x = out
  end
  return x
end

function C.Sequential:__len() return #self._children end

-- y = block(x) + shortcut(x) (shortcut defaults to identity)
C.Residual = class("nn.Residual", Module)
--- nn.Residual(block, shortcut): y = block(x) + shortcut(x), the shortcut the identity
-- when not given.
function C.Residual:__init(block, shortcut)
  Module.__init(self)
  self:add_child("block", block)
  if shortcut then self:add_child("shortcut", shortcut) end
  self.block, self.shortcut = block, shortcut
end
function C.Residual:forward(x)
  local y = self.block(x)
  return y + (self.shortcut and self.shortcut(x) or x)
end

return C
