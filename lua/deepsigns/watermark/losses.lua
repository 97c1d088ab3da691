-- The white-box watermark losses as differentiable functions: each variant is one C
-- op (core.watermark) that returns the loss with its gradients, recorded as one
-- autograd node whose backward scales them by the incoming gradient.
local core = require "deepsigns.core"
local A = require "deepsigns.autograd"

local item, binary = core.tensor.item, core.ops.binary
local L = {}

-- The node of a loss v whose gradients for inputs are grads (a list, nil where none).
local function record(v, inputs, grads)
  return A.record(v, inputs, function(g)
    local s = item(g)
    local out = {}
    for i = 1, #inputs do
      local gi = grads[i]
      if gi ~= nil and s ~= 1 then gi = binary("mul", gi, s) end
      out[i] = gi
    end
    return table.unpack(out, 1, #inputs)
  end)
end

-- "reference": l1 (pull + separation + unit norm) + l2 projection of the target
-- centres present in y (ops_watermark.h). h: B x M activations, c: C x M centres.
function L.reference(h, y, c, a, b, targets, l1, l2)
  local v, gh, gc = core.watermark.reference_loss(h, y, c, a, b, targets, l1, l2)
  return record(v, {h, c}, {gh, gc})
end

-- "paper": l1 (the pull of each activation to its class mean and the capped push from
-- the other classes' means, per sample) + l2 projection of the target classes' means
-- (ops_watermark.h). mu: C x M means, one per class.
function L.paper(h, y, mu, a, b, targets, l1, l2)
  local v, gh, gmu = core.watermark.paper_loss(h, y, mu, a, b, targets, l1, l2)
  return record(v, {h, mu}, {gh, gmu})
end

return L
