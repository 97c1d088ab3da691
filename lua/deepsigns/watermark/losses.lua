-- The white-box watermark losses as differentiable functions over the C core
-- ops (deepsigns.core wm_*). A class map {[class + 1] = centre row or 0} says
-- which classes have a centre; nil means one centre row per class.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"

local record = A.record
local L = {}

-- 1/2 sum_i ||h_i - c_{y_i}||^2 (samples of classes with a centre)
function L.pull(h, y, c, map, classes)
  local v = core.wm_pull(h, y, c, map, classes)
  return record(v, {h, c}, function(g)
    return core.wm_pull_backward(h, y, c, map, classes, core.item(g))
  end)
end

-- sum_i sum_{other centres r} ||h_i - c_r||^2, with the centres held constant
function L.push(h, y, c, map, classes)
  local v = core.wm_push(h, y, c, map, classes)
  return record(v, {h}, function(g) return core.wm_push_backward(h, y, c, map, classes, core.item(g)) end)
end

-- reference L2: (1/B) sum_i (c_y . c_n - 1) ||c_y - c_n||^2
function L.separation(c, y)
  local v = core.wm_separation(c, y)
  return record(v, {c}, function(g) return core.wm_separation_backward(c, y, core.item(g)) end)
end

-- reference L3: sum_k |1 - ||c_k||^2|
function L.unit_norm(c)
  local v = core.wm_unit_norm(c)
  return record(v, {c}, function(g) return core.wm_unit_norm_backward(c, core.item(g)) end)
end

-- sum of BCE(b, sigmoid(mu A)) over targets and bits
function L.projection(mu, a, b)
  local v = core.wm_projection(mu, a, b)
  return record(v, {mu}, function(g) return core.wm_projection_backward(mu, a, b, core.item(g)) end)
end

-- Each variant's whole regularizer is one C op returning its value and gradients from
-- one pass; the gradient for the activations is added into their accumulated gradient
-- during the backward pass (autograd.record's defer) instead of being handed on as a
-- buffer of its own. A second backward (retain_graph) gets copies of the centres'
-- gradient: the first may now be someone's .grad.
local function centre_grad(g2)
  local used = false
  return function(g)
    local s = core.item(g)
    if s == 1 and not used then
      used = true
      A.fresh[g2] = true
      return nil, g2
    end
    return nil, core.binary("mul", g2, s)
  end
end

-- reference: l1 (pull + separation + unit_norm) + l2 projection(centres of the targets in y).
-- Only the pull term depends on h: its gradient, l1 (h_i - c_{y_i}), is not made as a
-- B x M buffer but added into h's accumulated gradient during the backward pass, or,
-- when h is a ReLU's output, folded into that ReLU's backward pass.
-- made: {value=, gc=} when the ReLU that made h computed the loss on the way
-- (core.wm_relu_reference, the same op's results), or nil.
function L.reference(h, y, c, a, b, targets, l1, l2, made)
  local v, gc
  if made then
    v, gc = made.value, made.gc
  else
    v, gc = core.wm_reference_loss(h, y, c, a, b, targets, l1, l2)
  end
  local classes = core.size(c, 1)
  local function scale(g) return l1 * core.item(g) end
  return A.record(v, {h, c}, centre_grad(gc), false,
    {[1] = {fn = function(acc, g) core.wm_pull_add(acc, h, y, c, nil, classes, scale(g)) end,
      pull = {y = y, c = c, classes = classes, scale = scale}}})
end

-- paper: (2 pull - push) l1 / B over the target rows + l2 projection(their batch means).
-- d/dh is non-zero on the target rows only: those rows are added into h's accumulated
-- gradient during the backward pass (no B x M buffer).
function L.paper(h, y, mu, a, b, map, l1, l2)
  local v, gt, gmu, rows = core.wm_paper_loss(h, y, mu, a, b, map, l1, l2)
  return A.record(v, {h, mu}, centre_grad(gmu), false,
    gt and {[1] = function(acc, g) core.wm_rows_add(acc, rows, gt, core.item(g)) end} or nil)
end

return L
