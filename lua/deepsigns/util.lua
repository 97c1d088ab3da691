-- Helpers the whole library shares: the version, shapes in messages, passing on a
-- message without its source location, and checking option tables.
local core = require "deepsigns.core"

local U = {}
U.VERSION = "0.2.0"

local size = core.tensor.size

-- "2x3" for a tensor or a shape table, "scalar" for no dimensions.
function U.shape_str(t)
  local s = type(t) == "table" and t or size(t)
  return #s == 0 and "scalar" or table.concat(s, "x")
end

-- A message without Lua's "file.lua:12: " prefix, for an error raised again under
-- another name (the location would point inside the library, not at the caller).
function U.strip_location(msg)
  return (tostring(msg):gsub("^[^:\n]+%.lua:%d+: ", ""))
end

-- Levenshtein distance, for suggesting the option a user probably meant.
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = {[0] = i}
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

-- The valid name nearest to `name`, or nil when none is close.
function U.nearest(name, valid)
  local best, bd = nil, math.huge
  for _, v in ipairs(valid) do
    local d = distance(name, v)
    if d < bd or (d == bd and v < best) then best, bd = v, d end
  end
  if best and bd <= math.max(2, #name // 3) then return best end
  -- a prefix or a part of a longer name ("target" for "targets", "bit" for "bits")
  for _, v in ipairs(valid) do
    if #name >= 2 and (v:find(name, 1, true) or name:find(v, 1, true)) then return v end
  end
  return nil
end

-- Checks an option table: opts must be nil or a table whose keys are all in `valid`
-- (a list of names). An unknown key is an error naming `who`, the key and the nearest
-- valid name. Returns opts, or an empty table for nil. level: as error's (default 3,
-- the caller of the function that calls check_options).
function U.check_options(who, opts, valid, level)
  level = level or 3
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(string.format("%s: expects an option table, got %s", who, type(opts)), level) end
  local set = {}
  for _, v in ipairs(valid) do set[v] = true end
  local unknown = {}
  for k in pairs(opts) do
    if not set[k] then unknown[#unknown + 1] = tostring(k) end
  end
  if #unknown == 0 then return opts end
  table.sort(unknown)
  local k = unknown[1]
  local near = type(k) == "string" and U.nearest(k, valid)
  local names = {}
  for i, v in ipairs(valid) do names[i] = v end
  table.sort(names)
  error(string.format("%s: unknown option '%s'%s (options: %s)", who, k, near and (" (did you mean '" .. near .. "'?)") or "",
    table.concat(names, ", ")), level)
end

return U
