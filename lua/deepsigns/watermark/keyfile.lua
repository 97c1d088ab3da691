-- Key files: one self-contained safetensors file per key, carrying a SHA-256 of
-- its own content (checked on load: a tampered key is refused) and of the
-- marked model's weights. Keys never travel inside model files.
local core = require "deepsigns.core"
local S = require "deepsigns.safetensors"

local K = {}
K.VERSION = "1"

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

-- SHA-256 over a canonical form: sorted names with shapes and bytes, sorted metadata.
function K.digest(tensors, metadata)
  local parts = {}
  for _, k in ipairs(sorted_keys(tensors)) do
    parts[#parts + 1] = k .. "\0" .. table.concat(core.tensor.size(tensors[k]), "x") .. "\0" .. core.tensor.to_bytes(tensors[k])
  end
  for _, k in ipairs(sorted_keys(metadata)) do
    if k ~= "key_sha256" then parts[#parts + 1] = k .. "=" .. tostring(metadata[k]) .. "\0" end
  end
  return core.sys.sha256(table.concat(parts, "\0"))
end

-- SHA-256 of a model's weights (state_dict names, shapes and bytes).
function K.model_hash(model)
  return K.digest(model:state_dict(), {})
end

function K.save(path, tensors, metadata)
  local md = {}
  for k, v in pairs(metadata) do md[k] = type(v) == "string" and v or require("cjson").encode(v) end
  md.key_format_version = K.VERSION
  md.key_sha256 = K.digest(tensors, md)
  S.save(path, tensors, md)
end

-- Loads and verifies a key file of the given format ("deepsigns-wb-key", ...).
function K.load(path, format, required)
  return K.decode(S.read_file(path), path, format, required)
end

-- The same from the file's bytes (`path` names it in messages; the fuzzer uses this).
function K.decode(bytes, path, format, required)
  local tensors, md = S.decode(bytes, path)
  if md.format ~= format then
    error(string.format("%s: not a %s file (format: %s)", path, format, tostring(md.format)), 0)
  end
  if md.key_format_version ~= K.VERSION then
    error(string.format("%s: key format version %s is not supported (this is version %s)", path,
      tostring(md.key_format_version), K.VERSION), 0)
  end
  if md.key_sha256 ~= K.digest(tensors, md) then
    error(path .. ": the key's SHA-256 does not match its content: the file was modified or corrupted", 0)
  end
  for _, name in ipairs(required or {}) do
    if tensors[name] == nil and md[name] == nil then error(path .. ": the key lacks '" .. name .. "'", 0) end
  end
  return tensors, md
end

-- load(path) for a key type whose decode(bytes, path) builds the key.
function K.loader(who, decode)
  return function(path)
    if type(path) ~= "string" then error(who .. ": expects a file path", 2) end
    return decode(S.read_file(path), path)
  end
end

return K
