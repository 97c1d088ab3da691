-- The reference lives in the source: every public function has a doc comment, which
-- ds.help returns (and the interpreter's help prints).
local H = require "helper"
local ds = H.ds
local help = require "deepsigns.help"

-- the public surface: tables of functions and classes, and classes' methods
local function public()
  local list = {}
  local function add(prefix, t, methods_only)
    for k, v in pairs(t) do
      if type(k) == "string" and not k:match("^_") then
        if type(v) == "function" then list[#list + 1] = {prefix .. k, v}
        elseif not methods_only and type(v) == "table" and rawget(v, "__init") then list[#list + 1] = {prefix .. k, v} end
      end
    end
  end
  add("ds.", ds)
  for _, k in ipairs {"robustness", "robustness_verdicts", "sweep"} do list[#list + 1] = {"ds." .. k, ds[k]} end
  add("ds.Tensor:", ds.Tensor)
  add("ds.nn.", ds.nn)
  add("nn.Module:", ds.nn.Module, true)
  add("nn.Sequential:", ds.nn.Sequential, true)
  add("ds.functional.", ds.functional)
  add("ds.optim.", ds.optim)
  add("optim.Optimizer:", ds.optim.Optimizer, true)
  add("ds.data.", ds.data)
  add("data.Dataset:", ds.data.Dataset, true)
  add("ds.models.", ds.models)
  add("whitebox.", ds.watermark.whitebox)
  add("whitebox key:", ds.watermark.whitebox.Key, true)
  add("blackbox.", ds.watermark.blackbox)
  add("blackbox key:", ds.watermark.blackbox.Key, true)
  add("ds.attacks.", ds.attacks)
  add("ds.report.", ds.report)
  add("ds.stats.", ds.stats)
  return list
end

describe("the reference", function()
  it("has a doc comment for every public function and class", function()
    local missing = {}
    for _, e in ipairs(public()) do
      local fn = e[2]
      if type(fn) == "table" then fn = rawget(fn, "__init") end
      local info = debug.getinfo(fn, "S")
      if info.what == "Lua" and not help.doc_lines(fn) then missing[#missing + 1] = e[1] end
    end
    table.sort(missing)
    assert(#missing == 0, "no doc comment: " .. table.concat(missing, ", "))
  end)

  it("renders signature, options with defaults, returns, errors and an example", function()
    local text = ds.help(ds.train)
    assert.matches("Trains a model", text)
    assert.matches("Options:", text)
    assert.matches("epochs%s+%(integer, default 1%)", text)
    assert.matches("Returns:", text)
    assert.matches("Errors:", text)
    assert.matches("Example:", text)
    assert.matches("Conv2d", ds.help(ds.nn))
    assert.matches("keygen", ds.help(ds.watermark.whitebox))
    assert.matches("^nn.Linear%(...%)", ds.help(ds.nn.Linear))
    assert.matches("expects a function, a class or a table", ds.help(42))
  end)
end)
