-- How the REPL shows results: tensors as tensors, tables as readable trees.
local T = require "deepsigns.tensor"

local R = {}

local function key_str(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. (type(k) == "string" and string.format("%q", k) or tostring(k)) .. "]"
end

local function show_value(v, indent, seen, depth)
  if T.is_tensor(v) then return (tostring(v):gsub("\n", "\n" .. indent)) end
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return (tostring(v):gsub("\n", "\n" .. indent)) end
  if seen[v] then return "<cycle>" end
  if depth > 3 then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = show_value(v[i], indent .. "  ", seen, depth + 1) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = key_str(k) .. " = " .. show_value(v[k], indent .. "  ", seen, depth + 1)
  end
  seen[v] = nil
  local flat = "{" .. table.concat(parts, ", ") .. "}"
  if #flat <= 78 and not flat:find("\n") then return flat end
  return "{\n" .. indent .. "  " .. table.concat(parts, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

function R.format(v) return show_value(v, "", {}, 0) end

function R.show(...)
  for i = 1, select("#", ...) do print(R.format((select(i, ...)))) end
end

return R
