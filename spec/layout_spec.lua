-- The library's layers read one way (README, "Layout"): core -> generic Lua ->
-- watermark -> attacks and evaluation; a file requires only from its own layer or
-- below, never the package root, and the generic layer knows nothing of watermarks.
local H = require "helper"
local lfs = require "lfs"

local LAYERS = {
  {"deepsigns.core"},
  {"deepsigns.util", "deepsigns.class", "deepsigns.format", "deepsigns.stats", "deepsigns.autograd",
    "deepsigns.tensor", "deepsigns.functional", "deepsigns.nn", "deepsigns.optim", "deepsigns.train",
    "deepsigns.data", "deepsigns.models", "deepsigns.safetensors", "deepsigns.repl", "deepsigns.help"},
  {"deepsigns.watermark"},
  {"deepsigns.attacks", "deepsigns.robustness", "deepsigns.report", "deepsigns.sweep"},
}
local GENERIC = 2

local function layer_of(module)
  local best
  for rank, list in ipairs(LAYERS) do
    for _, prefix in ipairs(list) do
      if module == prefix or module:sub(1, #prefix + 1) == prefix .. "." then best = rank end
    end
  end
  return best
end

local function lua_files(dir, out)
  for f in lfs.dir(dir) do
    local p = dir .. "/" .. f
    if f ~= "." and f ~= ".." then
      if lfs.attributes(p, "mode") == "directory" then lua_files(p, out)
      elseif f:match("%.lua$") then out[#out + 1] = p end
    end
  end
  return out
end

local function module_name(path)
  return (path:match("lua/(deepsigns/.*)%.lua$"):gsub("/init$", ""):gsub("/", "."))
end

local function code_lines(path) -- the file without its comments
  local lines = {}
  for line in io.lines(path) do lines[#lines + 1] = (line:gsub("%-%-.*$", "")) end
  return lines
end

describe("layout", function()
  local files = lua_files(H.root .. "/lua/deepsigns", {})

  it("every library file requires only from its own layer or below, never the package root", function()
    assert.is_true(#files > 20)
    for _, path in ipairs(files) do
      local name = module_name(path)
      if name ~= "deepsigns" then
        local own = layer_of(name)
        assert(own, name .. " is in no layer of this spec")
        for _, line in ipairs(code_lines(path)) do
          for dep in line:gmatch('require%s*%(?%s*"([%w%._]+)"') do
            assert(dep ~= "deepsigns", name .. " requires the package root")
            local rank = layer_of(dep)
            if rank then
              assert(rank <= own, string.format("%s (layer %d) requires %s (layer %d)", name, own, dep, rank))
            end
          end
        end
      end
    end
  end)

  it("the generic layer's code names no watermark", function()
    for _, path in ipairs(files) do
      local name = module_name(path)
      if layer_of(name) == GENERIC then
        for i, line in ipairs(code_lines(path)) do
          local lower = line:lower()
          for _, word in ipairs {"pull", "wm_", "white-box", "whitebox", "watermark", "centre"} do
            assert(not lower:find(word, 1, true), string.format("%s:%d names '%s': %s", path, i, word, line))
          end
        end
      end
    end
  end)
end)
