-- The white-box loss terms one by one (core.testing's plain-loop reference ops) as
-- differentiable functions, to check the fused losses of core.watermark against.
local ds = require "deepsigns"
local A = require "deepsigns.autograd"
local testing = ds.core.testing

local W = {}

-- a node for value v with gradients grads[i] of inputs[i] (nil: none)
local function node(v, inputs, grads)
  return A.record(ds.tensor(v), inputs, function(g)
    local s, out = g:item(), {}
    for i = 1, #inputs do out[i] = grads[i] and grads[i] * s end
    return table.unpack(out, 1, #inputs)
  end)
end

function W.pull(h, y, c, map, classes)
  local v, gh, gc = testing.wm_pull(h, y, c, map, classes)
  return node(v, {h, c}, {gh, gc})
end

function W.push(h, y, c, map, classes) -- the centres are constants in it
  local v, gh = testing.wm_push(h, y, c, map, classes)
  return node(v, {h}, {gh})
end

function W.separation(c, y)
  local v, gc = testing.wm_separation(c, y)
  return node(v, {c}, {gc})
end

function W.unit_norm(c)
  local v, gc = testing.wm_unit_norm(c)
  return node(v, {c}, {gc})
end

function W.projection(m, a, b)
  local v, gm = testing.wm_projection(m, a, b)
  return node(v, {m}, {gm})
end

return W
