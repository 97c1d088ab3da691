-- Reports: CSV, JSON lines and gnuplot figures (PNG and SVG) of result rows.
local cjson = require "cjson"

local R = {}

local function columns(rows)
  local seen, cols = {}, {}
  local first = {"attack", "strength", "seed", "accuracy", "accuracy_drop", "ber", "wb_p_value", "wb_detected",
    "mismatches", "theta", "bb_p_value", "bb_owned", "removed", "success", "attack_seconds"}
  for _, c in ipairs(first) do
    for _, r in ipairs(rows) do if r[c] ~= nil then cols[#cols + 1] = c; seen[c] = true; break end end
  end
  local extra = {}
  for _, r in ipairs(rows) do for k in pairs(r) do if not seen[k] then seen[k] = true; extra[#extra + 1] = k end end end
  table.sort(extra)
  for _, c in ipairs(extra) do cols[#cols + 1] = c end
  return cols
end

local function cell(v)
  if v == nil then return "" end
  if type(v) == "number" then return math.type(v) == "integer" and tostring(v) or string.format("%.6g", v) end
  local s = tostring(v)
  if s:find('[,"\n]') then s = '"' .. s:gsub('"', '""') .. '"' end
  return s
end

function R.csv(rows, path)
  if type(rows) ~= "table" then error("report.csv: expects a list of rows", 2) end
  local cols = columns(rows)
  local lines = {table.concat(cols, ",")}
  for _, r in ipairs(rows) do
    local t = {}
    for i, c in ipairs(cols) do t[i] = cell(r[c]) end
    lines[#lines + 1] = table.concat(t, ",")
  end
  local text = table.concat(lines, "\n") .. "\n"
  if path then require("deepsigns.safetensors").write_atomic(path, text) end
  return text
end

function R.jsonl(rows, path)
  local lines = {}
  for i, r in ipairs(rows) do lines[i] = cjson.encode(r) end
  local text = table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
  if path then require("deepsigns.safetensors").write_atomic(path, text) end
  return text
end

function R.read_jsonl(path)
  local rows = {}
  local f = io.open(path, "r")
  if not f then return rows end
  for line in f:lines() do
    if line:match("%S") then
      local ok, row = pcall(cjson.decode, line)
      if ok and type(row) == "table" then rows[#rows + 1] = row end -- a torn last line is skipped
    end
  end
  f:close()
  return rows
end

function R.gnuplot_available()
  return os.execute("command -v gnuplot >/dev/null 2>&1") == true
end

-- Plots the watermark score (BER or mismatches) and the accuracy against the
-- attack strength on two axes, as in the paper's figures. Writes stem.png and
-- stem.svg. opts: title, x ("strength"), score ("ber"|"mismatches"), xlabel, logx.
function R.plot(rows, stem, opts)
  opts = opts or {}
  if not R.gnuplot_available() then
    error("report.plot: gnuplot is not installed (apt-get install gnuplot-nox); the rows are still in your CSV", 2)
  end
  stem = stem:gsub("%.png$", ""):gsub("%.svg$", "")
  local x = opts.x or "strength"
  local score = opts.score or (rows[1] and rows[1].ber ~= nil and "ber" or "mismatches")
  local sorted = {}
  for i, r in ipairs(rows) do sorted[i] = r end
  table.sort(sorted, function(a, b) return a[x] < b[x] end)
  local dat = stem .. ".dat"
  local f = assert(io.open(dat, "w"))
  for _, r in ipairs(sorted) do
    f:write(string.format("%.10g %.10g %.10g\n", r[x], r[score] or 0, 100 * (r.accuracy or 0)))
  end
  f:close()
  local label = score == "ber" and "bit error rate" or "mismatched keys"
  local script = {
    "set title '" .. (opts.title or "watermark under attack"):gsub("'", "") .. "'",
    "set xlabel '" .. (opts.xlabel or x):gsub("'", "") .. "'",
    "set ylabel '" .. label .. "'",
    "set y2label 'test accuracy (%)'",
    "set ytics nomirror", "set y2tics", "set grid", "set key bottom left",
    opts.logx and "set logscale x" or "",
    score == "ber" and "set yrange [0:1]" or "set yrange [0:*]",
  }
  local plot = string.format("plot '%s' using 1:2 with linespoints lw 2 title '%s' axes x1y1, "
    .. "'%s' using 1:3 with linespoints lw 2 dt 2 title 'accuracy' axes x1y2", dat, label, dat)
  local gp = stem .. ".gp"
  local g = assert(io.open(gp, "w"))
  g:write(table.concat(script, "\n"), "\n")
  g:write("set terminal pngcairo size 800,500\nset output '", stem, ".png'\n", plot, "\n")
  g:write("set terminal svg size 800,500\nset output '", stem, ".svg'\n", plot, "\n")
  g:close()
  local ok = os.execute("gnuplot '" .. gp .. "' 2>/dev/null")
  if ok ~= true then error("report.plot: gnuplot failed on " .. gp, 2) end
  return stem .. ".png", stem .. ".svg"
end

return R
