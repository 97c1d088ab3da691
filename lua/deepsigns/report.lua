-- Reports: CSV, JSON lines and gnuplot figures (PNG and SVG) of result rows.
local cjson = require "cjson"
local U = require "deepsigns.util"

local R = {}

local KNOWN = {"setup", "attack", "strength", "seed", "accuracy", "accuracy_drop", "ber", "wb_p_value", "wb_detected",
    "wb_detected_paper", "wb_attack_success", "wb_attack_success_paper", "mismatches", "theta", "bb_p_value", "bb_owned",
    "bb_attack_success", "attack_seconds"}

local function columns(rows, lead)
  local seen, cols = {}, {}
  for _, list in ipairs {lead or {}, KNOWN} do
    for _, c in ipairs(list) do
      for _, r in ipairs(rows) do
        if not seen[c] and r[c] ~= nil then cols[#cols + 1] = c; seen[c] = true end
      end
    end
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

--- Result rows as CSV: the lead columns when given, then the known ones (setup, attack,
-- strength, seed, accuracy, the marks' scores and verdicts), then the others sorted.
-- Written to path (atomically) when given; returns the text.
-- @tparam table rows a list of tables (e.g. ds.robustness's rows)
-- @tparam[opt] string path
-- @tparam[opt] table lead column names to put first (e.g. a sweep's parameters)
-- @usage ds.report.csv(rows, "results/prune.csv")
function R.csv(rows, path, lead)
  if type(rows) ~= "table" then error("report.csv: expects a list of rows", 2) end
  local cols = columns(rows, lead)
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

-- A row as one line of JSON with its keys in sorted order, so the same rows always
-- give the same file.
local function encode_row(r)
  if type(r) ~= "table" or next(r) == nil or r[1] ~= nil then return cjson.encode(r) end
  local keys = {}
  for k in pairs(r) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = cjson.encode(k) .. ":" .. cjson.encode(r[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- Result rows as JSON lines, one row a line; written to path when given; returns the text.
function R.jsonl(rows, path)
  local lines = {}
  for i, r in ipairs(rows) do lines[i] = encode_row(r) end
  local text = table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
  if path then require("deepsigns.safetensors").write_atomic(path, text) end
  return text
end

--- The rows of a JSON-lines file (a missing file: none; a torn last line is skipped).
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

--- Whether gnuplot is installed (report.plot needs it).
function R.gnuplot_available()
  return os.execute("command -v gnuplot >/dev/null 2>&1") == true
end

-- The series of a plot: rows grouped by attack and setup (a line each), each sorted by x.
local function series_of(rows, x, score)
  local groups, order = {}, {}
  for _, r in ipairs(rows) do
    if type(r[x]) == "number" then
      local name = tostring(r.attack or "")
      if r.setup ~= nil and r.setup ~= cjson.null then name = tostring(r.setup) .. (name ~= "" and ", " .. name or "") end
      if name == "" then name = score == "ber" and "bit error rate" or "mismatched keys" end
      if not groups[name] then groups[name] = {}; order[#order + 1] = name end
      table.insert(groups[name], r)
    end
  end
  for _, name in ipairs(order) do table.sort(groups[name], function(a, b) return a[x] < b[x] end) end
  return groups, order
end

local PLOT_OPTIONS = {"title", "x", "score", "xlabel", "logx"}

--- report.plot(rows, stem, {title=, x="strength", score="ber"|"mismatches", xlabel=, logx=})
-- Plots the watermark score (BER or mismatches, left axis) and the test accuracy (right
-- axis, dashed) against x, one line per attack and setup (the rows' `attack` and
-- `setup`), as in the paper's figures, with the legend outside the plot area. Writes
-- stem.png and stem.svg (and the gnuplot script and data beside them); returns both paths.
function R.plot(rows, stem, opts)
  opts = U.check_options("report.plot", opts, PLOT_OPTIONS)
  if type(rows) ~= "table" then error("report.plot: expects a list of rows", 2) end
  if type(stem) ~= "string" then error("report.plot: argument #2 must be the output path (without extension)", 2) end
  if not R.gnuplot_available() then
    error("report.plot: gnuplot is not installed (apt-get install gnuplot-nox); the rows are still in your CSV", 2)
  end
  stem = stem:gsub("%.png$", ""):gsub("%.svg$", "")
  local x = opts.x or "strength"
  local score = opts.score or (rows[1] and rows[1].ber ~= nil and "ber" or "mismatches")
  local groups, order = series_of(rows, x, score)
  if #order == 0 then error("report.plot: no row has a numeric '" .. x .. "' to plot against", 2) end
  local dat = stem .. ".dat"
  local lines = {}
  for _, name in ipairs(order) do -- one gnuplot data block per series, two blank lines apart
    for _, r in ipairs(groups[name]) do
      local v = r[score]
      lines[#lines + 1] = string.format("%.10g %s %.10g", r[x], type(v) == "number" and string.format("%.10g", v) or "NaN",
        100 * (r.accuracy or 0))
    end
    lines[#lines + 1] = "\n"
  end
  R.write(dat, table.concat(lines, "\n") .. "\n")
  local label = score == "ber" and "bit error rate" or "mismatched keys"
  local script = {
    "set title '" .. (opts.title or "watermark under attack"):gsub("'", "") .. "'",
    "set xlabel '" .. (opts.xlabel or x):gsub("'", "") .. "'",
    "set ylabel '" .. label .. "'",
    "set y2label 'test accuracy (%)'",
    "set ytics nomirror", "set y2tics", "set grid",
    "set key outside right top vertical box",
    opts.logx and "set logscale x" or "",
    score == "ber" and "set yrange [0:1]" or "set yrange [0:*]",
  }
  local parts = {}
  for i, name in ipairs(order) do
    local t = name:gsub("'", "")
    parts[#parts + 1] = string.format("'%s' index %d using 1:2 with linespoints lw 2 lc %d title '%s'", dat, i - 1, i,
      #order > 1 and t .. " (" .. label .. ")" or label)
    parts[#parts + 1] = string.format("'%s' index %d using 1:3 with linespoints lw 1 dt 2 lc %d title '%s' axes x1y2",
      dat, i - 1, i, #order > 1 and t .. " (accuracy)" or "accuracy")
  end
  local plot = "plot " .. table.concat(parts, ", \\\n  ")
  local gp = stem .. ".gp"
  R.write(gp, table.concat(script, "\n") .. "\n"
    .. "set terminal pngcairo size 1000,500\nset output '" .. stem .. ".png'\n" .. plot .. "\n"
    .. "set terminal svg size 1000,500\nset output '" .. stem .. ".svg'\n" .. plot .. "\n")
  local ok = os.execute("gnuplot '" .. gp .. "' 2>/dev/null")
  if ok ~= true then error("report.plot: gnuplot failed on " .. gp, 2) end
  return stem .. ".png", stem .. ".svg"
end

--- Writes text to path atomically.
function R.write(path, text) require("deepsigns.safetensors").write_atomic(path, text) end

return R
