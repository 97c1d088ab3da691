-- Minimal classes: Class(...) calls __init; instances find methods through the
-- class chain; tostring shows the class name.
local function class(name, parent)
  local c = {__name = name}
  c.__index = c
  setmetatable(c, {
    __index = parent,
    __call = function(cls, ...)
      local obj = setmetatable({}, cls)
      obj:__init(...)
      return obj
    end,
  })
  if parent then
    for _, mm in ipairs {"__tostring", "__call", "__len"} do c[mm] = rawget(c, mm) or parent[mm] end
  end
  return c
end

return class
