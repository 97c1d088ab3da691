-- Minimal classes: Class(...) calls __init; instances find methods through the
-- class chain; tostring shows the class name. Every class is registered by name
-- (class.registry), and a class whose chain sets __keep_args (nn.Module does) keeps
-- each instance's constructor arguments in obj._args, so that a model can be rebuilt
-- from a description of how it was made (models.load).
local registry = {}

local function class(name, parent)
  local c = {__name = name}
  c.__index = c
  setmetatable(c, {
    __index = parent,
    __call = function(cls, ...)
      local obj = setmetatable({}, cls)
      if cls.__keep_args then obj._args = table.pack(...) end
      obj:__init(...)
      return obj
    end,
  })
  if parent then
    for _, mm in ipairs {"__tostring", "__call", "__len"} do c[mm] = rawget(c, mm) or parent[mm] end
  end
  registry[name] = c
  return c
end

return setmetatable({registry = registry}, {__call = function(_, name, parent) return class(name, parent) end})
