-- Tiny option parser shared by the examples: --name value pairs and --flag.
-- local opts = dofile("examples/args.lua")(arg, {epochs = 5, variant = "paper"})
return function(argv, defaults)
  local opts = {}
  for k, v in pairs(defaults or {}) do opts[k] = v end
  local i = 1
  while argv and argv[i] do
    local name = argv[i]:match("^%-%-([%w_%-]+)$")
    if not name then error("unexpected argument '" .. argv[i] .. "' (options are --name value)", 0) end
    name = name:gsub("%-", "_")
    local v = argv[i + 1]
    if v == nil or v:match("^%-%-") then
      opts[name] = true
      i = i + 1
    else
      opts[name] = math.tointeger(tonumber(v)) or tonumber(v) or v
      i = i + 2
    end
  end
  return opts
end
