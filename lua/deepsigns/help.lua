-- The reference text of the library, read from its doc comments: the block of
-- comment lines, starting with "---" (LDoc's convention), just above a function's
-- definition. ds.help(x) returns it and the interpreter's help(x) prints it; `make doc`
-- builds the same comments into HTML with LDoc.
--
-- LDoc tags read here: @tparam[opt=default] type name text, @param name text, @treturn
-- type text, @return text, @raise text, @usage (the lines after it, an example) and
-- @see. Parameters named opts.x are the option table's fields.
local H = {}

local file_lines = {}

local function lines_of(path)
  if file_lines[path] == nil then
    local f = io.open(path, "r")
    local lines = false
    if f then
      lines = {}
      for line in f:lines() do lines[#lines + 1] = line end
      f:close()
    end
    file_lines[path] = lines
  end
  return file_lines[path] or nil
end

-- The doc comment above line `at` of `path` (without the dashes), or nil.
local function block_above(path, at)
  local lines = lines_of(path)
  if not lines then return nil end
  local i, block = at - 1, {}
  while i >= 1 and lines[i]:match("^%s*%-%-") do -- up to the "---" line that opens the block
    table.insert(block, 1, lines[i])
    if lines[i]:match("^%s*%-%-%-") then break end
    i = i - 1
  end
  if #block == 0 or not block[1]:match("^%s*%-%-%-") then return nil end
  for k, line in ipairs(block) do block[k] = line:gsub("^%s*%-%-%-?", ""):gsub("^ ", "", 1) end
  return block
end

-- The raw doc lines of a Lua function, or nil.
function H.doc_lines(fn)
  if type(fn) ~= "function" then return nil end
  local info = debug.getinfo(fn, "S")
  if not info or info.what ~= "Lua" or not info.source:match("^@") then return nil end
  return block_above(info.source:sub(2), info.linedefined)
end

-- The class table's constructor, or the function itself.
local function documented(x)
  if type(x) == "table" and rawget(x, "__init") then return rawget(x, "__init") end
  return x
end

local function parse(lines)
  local doc = {summary = {}, args = {}, options = {}, returns = {}, raises = {}, usage = {}, see = {}}
  local current
  for _, line in ipairs(lines) do
    local tag, rest = line:match("^%s*@(%w+)%s*(.*)$")
    if tag == "tparam" or tag == "param" then
      local mod, tp, name, text
      if tag == "tparam" then
        mod, rest = rest:match("^(%b[])%s*(.*)$")
        if not mod then mod, rest = "", line:match("@tparam%s*(.*)$") end
        tp, name, text = rest:match("^(%S+)%s+(%S+)%s*(.*)$")
      else
        mod, rest = rest:match("^(%b[])%s*(.*)$")
        if not mod then mod, rest = "", line:match("@param%s*(.*)$") end
        name, text = rest:match("^(%S+)%s*(.*)$")
      end
      local default = mod and mod:match("opt=([^%]]*)")
      local entry = {name = name or "?", type = tp, text = text or "", default = default,
        optional = mod and mod:match("opt") ~= nil}
      local field = entry.name:match("^opts%.(.+)$")
      if field then entry.name = field; table.insert(doc.options, entry) else table.insert(doc.args, entry) end
      current = entry
    elseif tag == "treturn" then
      local tp, text = rest:match("^(%S+)%s*(.*)$")
      current = {type = tp, text = text or ""}
      table.insert(doc.returns, current)
    elseif tag == "return" then
      current = {text = rest}
      table.insert(doc.returns, current)
    elseif tag == "raise" then
      current = {text = rest}
      table.insert(doc.raises, current)
    elseif tag == "usage" then
      current = "usage"
      if rest ~= "" then table.insert(doc.usage, rest) end
    elseif tag == "see" then
      table.insert(doc.see, rest)
      current = nil
    elseif current == "usage" then
      table.insert(doc.usage, line)
    elseif current then
      current.text = current.text .. " " .. line:gsub("^%s+", "")
    else
      table.insert(doc.summary, line)
    end
  end
  return doc
end

local function render(doc)
  local out = {}
  local summary = table.concat(doc.summary, "\n"):gsub("^%s+", ""):gsub("%s+$", "")
  out[#out + 1] = summary
  local function section(title, list, fmt)
    if #list == 0 then return end
    out[#out + 1] = "\n" .. title
    for _, e in ipairs(list) do out[#out + 1] = "  " .. fmt(e) end
  end
  local function param(e)
    local t = {}
    if e.type then t[#t + 1] = e.type end
    if e.default and e.default ~= "" then t[#t + 1] = "default " .. e.default
    elseif e.optional then t[#t + 1] = "optional" end
    return string.format("%-16s %s%s", e.name, #t > 0 and "(" .. table.concat(t, ", ") .. ") " or "", e.text)
  end
  section("Arguments:", doc.args, param)
  section("Options:", doc.options, param)
  section("Returns:", doc.returns, function(e) return (e.type and e.type .. ": " or "") .. e.text end)
  section("Errors:", doc.raises, function(e) return e.text end)
  if #doc.usage > 0 then
    out[#out + 1] = "\nExample:"
    for _, line in ipairs(doc.usage) do out[#out + 1] = "  " .. line end
  end
  if #doc.see > 0 then out[#out + 1] = "\nSee also: " .. table.concat(doc.see, ", ") end
  return table.concat(out, "\n")
end

-- The first sentence of a function's reference, or nil.
function H.summary(fn)
  local lines = H.doc_lines(documented(fn))
  if not lines then return nil end
  local doc = parse(lines)
  local text = table.concat(doc.summary, " "):gsub("%s+", " "):gsub("^ ", "")
  return text:match("^(.-%.)%s") or text:match("^(.-%.)$") or text
end

-- The entries of a table that have a reference, sorted: {name, value}.
local function entries(t)
  local list = {}
  local seen = {}
  local function add(k, v)
    if type(k) == "string" and not k:match("^_") and not seen[k] then
      if type(v) == "function" or (type(v) == "table" and rawget(v, "__init")) then
        seen[k] = true
        list[#list + 1] = {k, v}
      end
    end
  end
  for k, v in pairs(t) do add(k, v) end
  local mt = getmetatable(t)
  if mt and type(mt.__keys) == "table" then -- lazily loaded modules (ds.nn, ...) and functions
    for k, what in pairs(mt.__keys) do
      if not seen[k] then list[#list + 1] = {k, type(what) == "table" and t[k] or "module"}; seen[k] = true end
    end
  end
  table.sort(list, function(a, b) return a[1] < b[1] end)
  return list
end

--- The reference of a function, a class or a module of deepsigns, as text: what it
-- does, its arguments and options with their defaults, what it returns, its errors and
-- an example. For a table of functions, a list of them with the first sentence of each.
-- The interpreter's help(x) prints it.
-- @param x a function (ds.train), a class (ds.nn.Linear) or a table (ds.attacks, ds.Tensor)
-- @treturn string the reference
-- @usage print(ds.help(ds.train))
-- help(ds.watermark.whitebox.keygen)   -- in the REPL
function H.help(x)
  if type(x) == "function" or (type(x) == "table" and rawget(x, "__init")) then
    local lines = H.doc_lines(documented(x))
    if not lines then
      local info = type(x) == "function" and debug.getinfo(x, "S")
      return info and info.what == "C" and "(a function of the C core: see the reference of the Lua function that calls it)"
        or "(no reference is written for this function)"
    end
    local text = render(parse(lines))
    if type(x) == "table" then text = x.__name .. "(...)\n" .. text end
    return text
  end
  if type(x) == "table" then
    local out = {}
    for _, e in ipairs(entries(x)) do
      local s = e[2] == "module" and "(a module: help(...) of it lists its functions)" or H.summary(e[2])
      out[#out + 1] = string.format("%-22s %s", e[1], s or "")
    end
    if #out == 0 then return "(no documented functions in this table)" end
    return table.concat(out, "\n")
  end
  return "help: expects a function, a class or a table of the library, got " .. type(x)
end

--- Prints ds.help(x) (bound to help in the deepsigns interpreter).
-- @param x a function, a class or a table of the library
-- @usage help(ds.train)
function H.print(x) print(H.help(x)) end

return H
