local H = require "helper"
local ds = H.ds

local bin = H.root .. "/build/bin/deepsigns"

local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("the deepsigns interpreter", function()
  it("runs a chunk with ds bound", function()
    local out, code = run(bin .. " -e " .. q("print(ds.randn(2,3):matmul(ds.ones(3,2)):size(1))"))
    assert.equal(0, code)
    assert.equal("2\n", out)
  end)

  it("runs a script with arg as lua does", function()
    local dir = H.tmpdir()
    local f = assert(io.open(dir .. "/s.lua", "w"))
    f:write('local a, b = ...\nprint(arg[0]:match("s.lua$"), arg[1], arg[2], a, b, #arg)\n')
    f:close()
    local out, code = run(bin .. " " .. dir .. "/s.lua x y")
    assert.equal(0, code)
    assert.equal("s.lua\tx\ty\tx\ty\t2\n", out)
  end)

  it("exits non-zero with the error and a traceback when a script fails", function()
    local out, code = run(bin .. " -e " .. q("error('boom')"))
    assert.is_not.equal(0, code)
    assert.matches("deepsigns: %(command line%):1: boom", out)
    assert.matches("stack traceback", out)
    local out2, code2 = run(bin .. " /nonexistent/script.lua")
    assert.is_not.equal(0, code2)
    assert.matches("cannot open /nonexistent/script.lua", out2)
  end)

  it("opens a REPL that prints tensors, tables and multi-line input", function()
    local input = table.concat({
      "ds.randn(2,3):matmul(ds.ones(3,2))",
      "x = 1 +",
      "41",
      "x",
      "{a = 1, b = {1, 2}}",
      "error('oops')",
      "ds.ones(2)",
    }, "\n") .. "\n"
    local dir = H.tmpdir()
    local f = assert(io.open(dir .. "/in.txt", "w")); f:write(input); f:close()
    local out, code = run("HOME=" .. dir .. " " .. bin .. " < " .. dir .. "/in.txt")
    assert.equal(0, code)
    assert.matches("%[deepsigns.Tensor float32 2x2%]", out)
    assert.matches("\n42\n", out)
    assert.matches("{a = 1, b = {1, 2}}", out, 1, true)
    assert.matches("oops", out)
    assert.matches(" 1  1\n%[deepsigns.Tensor float32 2%]\n", out)
    -- history is kept
    local hf = io.open(dir .. "/.deepsigns_history")
    assert.is_not_nil(hf)
    assert.matches("x = 1 +\n41", hf:read("a"), 1, true)
    hf:close()
  end)

  it("prints its usage on stdout with -h, and names an unknown option", function()
    local out, code = run(bin .. " -h 2>/dev/null")
    assert.equal(0, code)
    assert.matches("^usage: deepsigns %[options%] %[script.lua %[args...%]%]", out)
    assert.matches("%-e 'chunk'", out)
    assert.matches("Ctrl%-C", out)
    local err, code2 = run(bin .. " -x")
    assert.is_not.equal(0, code2)
    assert.matches("deepsigns: unknown option '%-x' %(deepsigns %-h lists the options%)", err)
  end)

  it("binds help, which prints the reference", function()
    local out, code = run(bin .. " -e " .. q("help(ds.manual_seed)"))
    assert.equal(0, code)
    assert.matches("Seeds the one generator", out)
  end)

  -- a long training in the background, and Ctrl-C (SIGINT) after `after` seconds
  local TRAINING = 'local d = ds.data.Dataset{x = ds.rand(20000, 64), y = ds.zeros(20000), classes = 2}; ' ..
    'ds.train{model = ds.models.mlp{64, 256, 2}, data = d, epochs = 500, progress = false, checkpoint = CK}'
  local function interrupted(cmd, after)
    return run(string.format("sh -c %s", q(cmd .. " & pid=$!; sleep " .. after .. "; kill -INT $pid; wait $pid")))
  end

  it("stops a training at a batch boundary on Ctrl-C; the REPL keeps its session", function()
    local dir = H.tmpdir()
    local f = assert(io.open(dir .. "/in.txt", "w"))
    f:write("CK = '" .. dir .. "/ck.safetensors'\n", TRAINING, "\nprint('still here')\n")
    f:close()
    local out = interrupted("HOME=" .. dir .. " " .. bin .. " < " .. dir .. "/in.txt", 3)
    assert.matches("train: interrupted at epoch %d+, batch %d+", out)
    assert.matches("still here", out)
    -- the checkpoint holds whole epochs, and no temporary file is left beside it
    local tensors, md = ds.load(dir .. "/ck.safetensors")
    assert.is_true(tonumber(md.epoch) >= 1)
    assert.is_table(tensors)
    for name in require("lfs").dir(dir) do assert.is_nil(name:match("%.tmp%-"), name) end
  end)

  it("stops a script on Ctrl-C with a clear message", function()
    local dir = H.tmpdir()
    local f = assert(io.open(dir .. "/s.lua", "w"))
    f:write("CK = nil\n", TRAINING, "\n")
    f:close()
    local out, code = interrupted(bin .. " " .. dir .. "/s.lua", 2)
    assert.is_not.equal(0, code)
    assert.matches("deepsigns: train: interrupted at epoch %d+, batch %d+", out)
    -- outside a training the chunk stops at once
    local out2, code2 = interrupted(bin .. " -e " .. q("while true do end"), 1)
    assert.is_not.equal(0, code2)
    assert.matches("interrupted", out2)
  end)

  it("completes names with tab (ds.nn.Li -> ds.nn.Linear)", function()
    if os.execute("command -v tmux >/dev/null 2>&1") ~= true then
      pending("tmux is not installed")
      return
    end
    local dir = H.tmpdir()
    local sess = "dscomp" .. tostring(os.time()) .. math.random(1000)
    os.execute(string.format("HOME=%s tmux new-session -d -s %s -x 120 -y 20 %s", dir, sess, bin))
    os.execute("sleep 0.5")
    os.execute(string.format("tmux send-keys -t %s 'x = ds.nn.Li' Tab", sess))
    os.execute("sleep 0.5")
    local screen = run(string.format("tmux capture-pane -p -t %s", sess))
    os.execute(string.format("tmux kill-session -t %s", sess))
    assert.matches("x = ds.nn.Linear", screen, 1, true)
  end)
end)

describe("a plain lua5.4 using the module", function()
  it("exits cleanly after parallel work (the module is never unloaded under OpenMP threads)", function()
    local env = string.format("LUA_PATH='%s/lua/?.lua;%s/lua/?/init.lua;;' LUA_CPATH='%s/build/lib/?.so;;'",
      H.root, H.root, H.root)
    local chunk = 'local ds = require "deepsigns"; local x = ds.rand(64, 8, 16, 16); ' ..
      'for _ = 1, 3 do ds.core.tensor.free(ds.core.nn.conv2d(x, ds.randn(8, 8, 3, 3), nil, 1, 1, 1, 1)) end; ' ..
      'print("done"); os.exit(0, true)'
    for _ = 1, 3 do
      local out, code = run(env .. " lua5.4 -e " .. q(chunk))
      assert.equal(0, code, out)
      assert.equal("done\n", out)
    end
  end)
end)

describe("an installed copy", function()
  it("installs with luarocks and loads from a plain lua5.4", function()
    if os.execute("command -v luarocks >/dev/null 2>&1") ~= true then
      pending("luarocks is not installed")
      return
    end
    local tree = H.tmpdir()
    local out, code = run(string.format("cd %s && luarocks --lua-version=5.4 make --tree %s rockspec/deepsigns-scm-1.rockspec",
      H.root, tree))
    assert.equal(0, code, out)
    local env = string.format("LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua;;' LUA_CPATH='%s/lib/lua/5.4/?.so;;'",
      tree, tree, tree)
    local got, c2 = run(env .. " lua5.4 -e " .. q('local ds = require "deepsigns"; print(ds.ones(2):sum():item())'))
    assert.equal(0, c2, got)
    assert.equal("2.0\n", got)
    local got2, c3 = run("env -i HOME=" .. tree .. " " .. tree .. "/bin/deepsigns -e " .. q("print(ds.version)"))
    assert.equal(0, c3, got2)
    os.execute("rm -rf " .. tree)
  end)
end)
