-- Reverse-mode autograd, define-by-run: a tape of nodes.
--
-- An op whose input needs a gradient records its result with a node {inputs, needs,
-- backward}; backward(g, needs) returns one gradient per input (nil where not
-- needed). Inputs never point to outputs, so the graph is a DAG that Lua's collector
-- frees like anything else.
--
-- Gradients accumulate. A leaf that requires grad owns a persistent .grad buffer
-- (made at its first gradient, zeroed by an optimiser's zero_grad, as in Torch7):
-- each gradient that reaches it is added into that buffer. A backward may also add a
-- parameter's gradient straight into it (A.accumulator, Torch7's accGradParameters:
-- the linear layer's GEMM does) and return nil for that input. A tensor is never
-- written in place after a backward returned it, so a backward may return g itself,
-- or the same tensor for several inputs.
local core = require "deepsigns.core"
local U = require "deepsigns.util"

local getuv, setuv = core.tensor.getuv, core.tensor.setuv
local size, numel, same_shape = core.tensor.size, core.tensor.numel, core.tensor.same_shape
local clone, zeros, full = core.tensor.clone, core.tensor.zeros, core.tensor.full
local binary, binary_ = core.ops.binary, core.ops.binary_
local shape_str = U.shape_str

local A = {}
local enabled = true

--- Whether ops record a graph now (false inside ds.no_grad).
function A.is_enabled() return enabled end

--- Runs fn(...) with graph recording off (evaluation, manual updates) and returns its
-- results; recording is restored even when fn raises.
-- @usage local y = ds.no_grad(function() return model(x) end)
function A.no_grad(fn, ...)
  local prev = enabled
  enabled = false
  local res = table.pack(pcall(fn, ...))
  enabled = prev
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

function A.needs_grad(t)
  local u = getuv(t)
  return u ~= nil and (u.requires_grad or u.node ~= nil)
end

function A.is_leaf(t)
  local u = getuv(t)
  return not (u and u.node)
end

function A.set_requires_grad(t, on, who)
  local u = getuv(t)
  if u and u.node then
    error((who or "requires_grad") .. ": only leaf tensors can change requires_grad "
      .. "(this one is the result of an op; use :detach())", 3)
  end
  if on then
    if not u then u = {}; setuv(t, u) end
    u.requires_grad = true
  elseif u then
    u.requires_grad = nil
  end
  return t
end

-- The leaf's gradient buffer, or nil.
function A.grad(t)
  local u = getuv(t)
  return u and u.grad
end

-- Sets (or with nil, drops) the leaf's gradient buffer; g must have t's shape.
function A.set_grad(t, g)
  local u = getuv(t)
  if g ~= nil then
    if not same_shape(g, t) then
      error("grad: a gradient of shape " .. shape_str(g) .. " for a tensor of shape " .. shape_str(t), 3)
    end
    if not u then u = {}; setuv(t, u) end
  end
  if u then u.grad = g end
end

-- Records `out` as the result of an op on `inputs` (a list) if any needs a gradient.
function A.record(out, inputs, backward)
  if not enabled then return out end
  local needs, any = {}, false
  for i = 1, #inputs do
    local x = inputs[i]
    local n = type(x) == "userdata" and A.needs_grad(x) or false
    needs[i] = n
    any = any or n
  end
  if any then setuv(out, {node = {inputs = inputs, needs = needs, backward = backward}}) end
  return out
end

-- g added into the leaf's buffer (u: its autograd info); the first gradient becomes a
-- copy of its own, so that no tensor a backward returned is ever written.
local function accumulate(u, g)
  if u.grad == nil then u.grad = clone(g) else binary_("add", u.grad, u.grad, g) end
end

-- Where a backward adds t's gradient itself: (buffer, returned). For a leaf that
-- requires grad, its own .grad buffer (made as zeros the first time) and nil, since the
-- gradient is then already in place; for any other tensor a new zero buffer, which the
-- backward returns as t's gradient.
function A.accumulator(t)
  local u = getuv(t)
  if u and u.requires_grad and not u.node then
    if u.grad == nil then u.grad = zeros(size(t)) end
    return u.grad, nil
  end
  local z = zeros(size(t))
  return z, z
end

-- Children before parents (iterative DFS post-order over tensors that have nodes).
local function topo_order(root)
  local order, state, stack = {}, {}, {root}
  while #stack > 0 do
    local t = stack[#stack]
    if state[t] == nil then
      state[t] = 1
      local node = getuv(t).node
      for _, x in ipairs(node.inputs) do
        local xu = type(x) == "userdata" and getuv(x)
        if xu and xu.node and state[x] == nil then stack[#stack + 1] = x end
      end
    else
      stack[#stack] = nil
      if state[t] == 1 then
        state[t] = 2
        order[#order + 1] = t
      end
    end
  end
  return order
end

-- The backward pass from root with seed gradient g (a scalar root: 1).
function A.backward(root, g, retain_graph)
  local ru = getuv(root)
  if not (ru and (ru.node or ru.requires_grad)) then
    error("backward: the tensor does not require grad and has no graph", 3)
  end
  if g == nil then
    if numel(root) ~= 1 then
      error("backward: output has " .. numel(root) .. " elements (" .. shape_str(root)
        .. "); pass a gradient of that shape for a non-scalar", 3)
    end
    g = full(size(root), 1)
  elseif not same_shape(g, root) then
    error("backward: gradient " .. shape_str(g) .. " does not match output " .. shape_str(root), 3)
  end
  if not ru.node then return accumulate(ru, g) end
  local grads = {[root] = g}
  local order = topo_order(root)
  for i = #order, 1, -1 do
    local t = order[i]
    local node = getuv(t).node
    local gt = grads[t]
    grads[t] = nil
    if gt ~= nil then
      if not node.backward then
        error("backward: the graph was already freed; pass retain_graph=true to the first backward", 3)
      end
      local gs = table.pack(node.backward(gt, node.needs))
      for j, x in ipairs(node.inputs) do
        local gx = gs[j]
        if gx ~= nil and node.needs[j] then
          if not same_shape(gx, x) then
            error("backward: gradient " .. shape_str(gx) .. " for input " .. j .. " does not match its shape "
              .. shape_str(x), 3)
          end
          local xu = getuv(x)
          if xu.node then
            local prev = grads[x]
            grads[x] = prev == nil and gx or binary("add", prev, gx)
          else
            accumulate(xu, gx)
          end
        end
      end
    end
    if not retain_graph then node.backward, node.inputs = nil, {} end
  end
end

return A
