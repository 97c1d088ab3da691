-- The README's tour runs as written, and prints what its comments say.
local H = require "helper"

describe("the README's tour", function()
  it("runs as written", function()
    local f = assert(io.open(H.root .. "/README.md"))
    local text = f:read("a")
    f:close()
    local code = text:match("## A tour%s+```lua\n(.-)\n```")
    assert.is_string(code)
    local dir = H.tmpdir()
    local s = assert(io.open(dir .. "/tour.lua", "w"))
    s:write(code, "\n")
    s:close()
    local p = assert(io.popen("cd " .. dir .. " && " .. H.root .. "/build/bin/deepsigns tour.lua 2>&1"))
    local out = p:read("a")
    local ok = p:close()
    assert(ok, out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do
      if not line:match("^epoch %d+/%d+") then lines[#lines + 1] = line end -- training's progress lines
    end
    assert.matches("^0%.0\t2%.3%d*e%-10\ttrue\tfalse$", lines[1])   -- white-box: BER 0, detected; unmarked not
    assert.equal("true\tfalse", lines[2])                          -- black-box: owned; unmarked not
    assert.equal("0.0", lines[3])                                   -- the mark read from the files
    assert.matches("Reads the signature from a suspect model", out)
  end)
end)
