-- The safetensors format: 8-byte little-endian header length, a JSON header
-- {name = {dtype, shape, data_offsets}, __metadata__ = {string = string}}, then
-- the raw little-endian data. JSON goes through lua-cjson. Writes are atomic
-- (temporary file, flush, fsync, rename), so a failed save changes nothing.
local core = require "deepsigns.core"
local cjson = require "cjson.safe"
local T = require "deepsigns.tensor"

local S = {}
local MAX_HEADER = 100 * 1024 * 1024

local WIDTH = {F32 = 4, F64 = 8, I64 = 8, I32 = 4, I16 = 2, I8 = 1, U8 = 1, BOOL = 1}
local UNPACK = {F64 = "<d", I64 = "<i8", I32 = "<i4", I16 = "<i2", I8 = "<i1", U8 = "<I1", BOOL = "<I1"}

local function fail(path, fmt, ...)
  error(string.format("%s: " .. fmt, path, ...), 0)
end

-- Encodes tensors (name -> tensor) and metadata (string -> string) into one string.
function S.encode(tensors, metadata)
  local names = {}
  for k, v in pairs(tensors) do
    if type(k) ~= "string" then error("save: tensor names must be strings, got " .. type(k), 3) end
    if not T.is_tensor(v) then error("save: '" .. k .. "' is a " .. type(v) .. ", not a tensor", 3) end
    if k == "__metadata__" then error("save: '__metadata__' is reserved", 3) end
    names[#names + 1] = k
  end
  table.sort(names)
  local header, blobs, at = {}, {}, 0
  for i, k in ipairs(names) do
    local bytes = core.tensor.to_bytes(tensors[k])
    blobs[i] = bytes
    local shape = core.tensor.size(tensors[k])
    header[k] = {dtype = "F32", shape = setmetatable(shape, cjson.array_mt), data_offsets = {at, at + #bytes}}
    at = at + #bytes
  end
  if metadata then
    local md = {}
    for k, v in pairs(metadata) do
      if type(k) ~= "string" then error("save: metadata keys must be strings", 3) end
      md[k] = type(v) == "string" and v or assert(cjson.encode(v))
    end
    if next(md) then header.__metadata__ = md end
  end
  local json = assert(cjson.encode(header))
  json = json .. string.rep(" ", (8 - #json % 8) % 8) -- align the data to 8 bytes
  return string.pack("<I8", #json) .. json .. table.concat(blobs)
end

-- Decodes a safetensors string; `path` names it in messages. Returns tensors, metadata.
function S.decode(s, path)
  path = path or "safetensors"
  if #s < 8 then fail(path, "not a safetensors file (only %d bytes)", #s) end
  local hlen = string.unpack("<I8", s)
  if hlen > MAX_HEADER or hlen > #s - 8 then
    fail(path, "header length %d does not fit the file (%d bytes): truncated or not safetensors", hlen, #s)
  end
  local text = s:sub(9, 8 + hlen)
  local header, err = cjson.decode(text)
  if type(header) ~= "table" or not text:match("^%s*{") then fail(path, "header is not valid JSON (%s)", tostring(err or "not an object")) end
  local base, data_len = 8 + hlen, #s - 8 - hlen
  local tensors, spans = {}, {}
  local metadata = {}
  for name, info in pairs(header) do
    if name == "__metadata__" then
      if type(info) ~= "table" then fail(path, "__metadata__ is not an object") end
      for k, v in pairs(info) do
        if type(k) ~= "string" or type(v) ~= "string" then fail(path, "__metadata__ values must be strings") end
        metadata[k] = v
      end
    else
      if type(name) ~= "string" or type(info) ~= "table" then fail(path, "bad entry in the header") end
      local width = WIDTH[info.dtype]
      if not width then fail(path, "tensor '%s' has unsupported dtype %s", name, tostring(info.dtype)) end
      local shape, offs = info.shape, info.data_offsets
      if type(shape) ~= "table" or type(offs) ~= "table" or #offs ~= 2 then
        fail(path, "tensor '%s' lacks a shape or data_offsets", name)
      end
      local n = 1
      for i, d in ipairs(shape) do
        if math.type(d) ~= "integer" and not (type(d) == "number" and d == math.floor(d)) then
          fail(path, "tensor '%s': dimension %d is not an integer", name, i)
        end
        d = math.tointeger(d)
        if d < 0 or d > 2 ^ 40 or (d > 0 and n > 2 ^ 40 // d) then fail(path, "tensor '%s': dimension %d is out of range", name, i) end
        shape[i] = d
        n = n * d
      end
      if #shape > 8 then fail(path, "tensor '%s' has %d dimensions (at most 8)", name, #shape) end
      local b, e = math.tointeger(offs[1]), math.tointeger(offs[2])
      if not (b and e) or b < 0 or e < b or e > data_len then
        local function show(v) return tostring(math.tointeger(v) or v) end
        fail(path, "tensor '%s': data_offsets [%s, %s] outside the %d data bytes (truncated file?)", name,
          show(offs[1]), show(offs[2]), data_len)
      end
      if e - b ~= n * width then
        fail(path, "tensor '%s': %d bytes for shape {%s} of %s (expected %d)", name, e - b,
          table.concat(shape, ","), info.dtype, n * width)
      end
      spans[#spans + 1] = {b, e, name}
      local t
      if info.dtype == "F32" then
        t = core.tensor.from_bytes(s, shape, base + b)
      else
        local vals, fmt = {}, UNPACK[info.dtype]
        local pos = base + b + 1
        for i = 1, n do vals[i], pos = string.unpack(fmt, s, pos) end
        t = core.tensor.from_bytes(string.pack("<" .. string.rep("f", n), table.unpack(vals)), shape)
      end
      if not core.ops.all_finite(t) then fail(path, "tensor '%s' contains NaN or infinite values", name) end
      tensors[name] = t
    end
  end
  table.sort(spans, function(x, y) return x[1] < y[1] end)
  for i = 2, #spans do
    if spans[i][1] < spans[i - 1][2] then fail(path, "tensors '%s' and '%s' overlap", spans[i - 1][3], spans[i][3]) end
  end
  return tensors, metadata
end

-- Atomic write of `bytes` to path: a temporary file beside it, flushed and synced, then
-- renamed into place. On any error, an interrupt (Ctrl-C) included, the temporary file
-- is removed and path is as it was.
function S.write_atomic(path, bytes)
  local tmp = string.format("%s.tmp-%d-%d", path, os.time(), math.random(1 << 30))
  local ok, err = pcall(function()
    local f, oerr = io.open(tmp, "wb")
    if not f then error("save: cannot write " .. path .. " (" .. tostring(oerr) .. ")", 0) end
    local written, werr = f:write(bytes)
    local flushed = written and f:flush()
    f:close()
    if not (written and flushed and core.sys.fsync(tmp)) then
      error("save: writing " .. path .. " failed (" .. tostring(werr or "disk full?") .. "); nothing was changed", 0)
    end
    local renamed, rerr = os.rename(tmp, path)
    if not renamed then error("save: cannot move the new file into place at " .. path .. " (" .. tostring(rerr) .. ")", 0) end
  end)
  if not ok then
    os.remove(tmp)
    error(err, 0)
  end
end

function S.save(path, tensors, metadata)
  S.write_atomic(path, S.encode(tensors, metadata))
end

function S.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("load: cannot open " .. path .. " (" .. tostring(err) .. ")", 0) end
  local s = f:read("a")
  f:close()
  return s
end

function S.load(path)
  return S.decode(S.read_file(path), path)
end

return S
