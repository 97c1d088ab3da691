-- Reverse-mode autograd, define-by-run.
-- Each result of a differentiable op that has an input needing a gradient gets a
-- node {inputs, needs, backward}; backward(g, needs) returns one gradient per
-- input (nil where not needed). Inputs never point to outputs, so the graph is a
-- DAG that Lua's collector frees like anything else. Gradients accumulate.
local core = require "deepsigns.core"

local getuv, setuv = core.getuv, core.setuv
local A = {}
local enabled = true

function A.is_enabled() return enabled end

-- Runs fn with graph recording off (optimiser steps, evaluation).
function A.no_grad(fn, ...)
  local prev = enabled
  enabled = false
  local res = table.pack(pcall(fn, ...))
  enabled = prev
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

function A.info(t) return getuv(t) end

function A.needs_grad(t)
  local u = getuv(t)
  return u ~= nil and (u.requires_grad or u.node ~= nil)
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
    u.requires_grad, u.spare, u.spare_zeroed = nil, nil, nil
  end
  return t
end

-- Records `out` as the result of an op on `inputs` (a list) if any needs a gradient.
-- fresh: the backward returns only tensors it has just made (a C kernel's results,
-- never g itself, a view of it or a tensor kept elsewhere), or g itself written over
-- when called as backward(g, needs, true), which says g is the pass's alone; the
-- backward pass may then add further gradients into them in place. (Freeing them as
-- soon as used was tried: it made the white-box overhead in make bench 7% instead of 3%.)
-- defer: {[j] = fn(acc, g)} for inputs whose gradient is not returned by backward
-- but added by fn into acc, that input's otherwise complete gradient, in place
-- (g: this node's incoming gradient). A loss term over an activation then writes no
-- buffer of its own: it adds into the gradient already flowing there. An entry may
-- instead be {fn = fn, pull = {y =, c =, classes =, scale = fn(g)}}: when the input is
-- a ReLU's output and this is its only deferred add, the ReLU's backward takes the
-- term into its own pass (node.fuse_pull(g, pull, scale, relu input)) and fn is not run.
function A.record(out, inputs, backward, fresh, defer)
  if not enabled then return out end
  local needs, any = {}, false
  for i = 1, #inputs do
    local x = inputs[i]
    local n = type(x) == "userdata" and A.needs_grad(x) or false
    needs[i] = n
    any = any or n
  end
  if any then
    setuv(out, {node = {inputs = inputs, needs = needs, backward = backward, fresh = fresh, defer = defer}})
  end
  return out
end

local same_shape = core.same_shape

local function shape_str(t)
  local s = core.size(t)
  return #s == 0 and "scalar" or table.concat(s, "x")
end

-- Children before parents (iterative DFS post-order over tensors that have nodes),
-- from a list of roots.
local function topo_order(roots)
  local order, state, stack = {}, {}, {}
  for i = 1, #roots do stack[i] = roots[i] end
  while #stack > 0 do
    local t = stack[#stack]
    local s = state[t]
    if s == nil then
      state[t] = 1
      local u = getuv(t)
      local node = u and u.node
      if node and node.inputs then
        for _, x in ipairs(node.inputs) do
          local xu = type(x) == "userdata" and getuv(x)
          if xu and xu.node and state[x] == nil then stack[#stack + 1] = x end
        end
      end
    else
      stack[#stack] = nil
      if s == 1 then
        state[t] = 2
        order[#order + 1] = t
      end
    end
  end
  return order
end

-- Gradients that nothing else holds (a fused op's own result, a sum made here): a
-- further contribution to the same tensor is added into them in place, saving a
-- buffer and a pass. Weak keys: an entry goes with its tensor.
A.fresh = setmetatable({}, {__mode = "k"})

-- Recycled gradient buffers. A weight gradient a fused op wrote (marked recyclable
-- here) that became a leaf's .grad and that nobody read through t.grad (tensor.lua
-- marks a read or an assignment as escaped) is, at optimiser:zero_grad(), kept as the
-- leaf's spare; the op's next backward writes into it (A.take_spare) instead of into
-- a new buffer: memory that is still in cache, not fresh pages of a new allocation.
-- A gradient someone may hold is never reused.
A.recyclable = setmetatable({}, {__mode = "k"})

-- The leaf's gradient without marking it escaped (optimisers, the training loop).
function A.grad_of(t)
  local u = getuv(t)
  return u and u.grad
end

-- g added to a leaf's gradient (u: its autograd info); g is the leaf's from now on
local function accumulate(u, g)
  if u.grad ~= nil then g = core.binary("add", u.grad, g) end
  u.grad, u.grad_escaped = g, nil
end

-- Adds g to leaf t's gradient as a backward pass would, for a gradient made outside the
-- graph (ds.train's white-box regularizer). g is handed over: the caller keeps no other
-- reference to it.
function A.add_to_grad(t, g)
  local u = getuv(t)
  if not (u and u.requires_grad) then error("add_to_grad: the tensor does not require grad", 2) end
  accumulate(u, g)
end

-- Whether the leaf's gradient would be kept as its spare when dropped (nobody can hold it).
function A.recyclable_grad(t)
  local u = getuv(t)
  local g = u and u.grad
  return g ~= nil and not u.grad_escaped and A.recyclable[g] == true
end

-- Drops the leaf's gradient, keeping the buffer as its spare when nobody can hold it.
-- zeroed: the caller has just set it to zero (an optimiser step that cleared it on the
-- way), so the next backward accumulates into it without a zeroing pass.
function A.drop_grad(t, zeroed)
  local u = getuv(t)
  if not u then return end
  local g = u.grad
  if g ~= nil and not u.grad_escaped and A.recyclable[g] then u.spare, u.spare_zeroed = g, zeroed == true end
  u.grad, u.grad_escaped = nil, nil
end

-- The leaf's spare buffer (taken: used once) and whether it holds zeros, or nil.
function A.take_spare(t)
  local u = getuv(t)
  local sp = u and u.spare
  if sp == nil then return nil end
  local zeroed = u.spare_zeroed
  u.spare, u.spare_zeroed = nil, nil
  return sp, zeroed
end

local run_backward

function A.backward(root, grad, retain_graph)
  local ru = getuv(root)
  if not (ru and (ru.node or ru.requires_grad)) then
    error("backward: the tensor does not require grad and has no graph", 3)
  end
  if grad == nil then
    if core.numel(root) ~= 1 then
      error("backward: output has " .. core.numel(root) .. " elements (" .. shape_str(root)
        .. "); pass a gradient of that shape for a non-scalar", 3)
    end
    grad = core.full(core.size(root), 1)
  elseif not same_shape(grad, root) then
    error("backward: gradient " .. shape_str(grad) .. " does not match output " .. shape_str(root), 3)
  end
  run_backward({root}, {grad}, retain_graph)
end

-- The backward pass of the sum of scalar losses, without building the sum as a node
-- (ds.train: a loss and its regularizers). Numbers and terms without a graph add nothing.
function A.backward_sum(terms, retain_graph)
  local roots, seeds = {}, {}
  for i, r in ipairs(terms) do
    if type(r) == "userdata" then
      if core.numel(r) ~= 1 then
        error("backward: loss term " .. i .. " has " .. core.numel(r) .. " elements (" .. shape_str(r)
          .. "); each term must be a scalar", 3)
      end
      local u = getuv(r)
      if u and (u.node or u.requires_grad) then
        roots[#roots + 1], seeds[#seeds + 1] = r, core.full(core.size(r), 1)
      end
    elseif type(r) ~= "number" then
      error("backward: loss term " .. i .. " is a " .. type(r), 3)
    end
  end
  if #roots == 0 then error("backward: no loss term requires grad or has a graph", 3) end
  run_backward(roots, seeds, retain_graph)
end

-- roots: tensors with a graph or requiring grad; seeds: their gradients
function run_backward(roots, seeds, retain_graph)
  local handed = {} -- gradients already stored somewhere (never share one tensor)
  local seeded = {}
  for _, sd in ipairs(seeds) do seeded[sd] = true end
  -- Whether node's incoming g is the pass's alone: a C kernel made it for this pass and
  -- nothing reads it after node's backward (no deferred term of node takes it, the graph
  -- is not kept, it is not a seed the caller may hold). The backward may then write its
  -- result over g (backward(g, needs, true): dropout and the unary ops do), so g is taken
  -- off the handed list: it may be stored again, as that result.
  local function claim(g, node)
    local mine = not retain_graph and not node.defer and A.fresh[g] and not seeded[g] and core.is_contiguous(g)
    if mine then handed[g] = nil end
    return mine or false
  end
  local function own(g)
    if handed[g] then g = core.clone(g) end
    handed[g] = true
    return g
  end
  local function to_leaf(u, g)
    if handed[g] or not core.is_contiguous(g) then g = core.clone(g) end
    handed[g] = true
    accumulate(u, g)
  end
  local grads, inner = {}, {}
  for i, r in ipairs(roots) do
    local ru = getuv(r)
    if not ru.node then -- a leaf: its gradient is the seed itself
      to_leaf(ru, seeds[i])
    elseif grads[r] ~= nil then -- the same tensor twice: its seeds add up
      grads[r] = core.binary("add", grads[r], seeds[i])
    else
      grads[r], inner[#inner + 1] = seeds[i], r
    end
  end
  if #inner == 0 then return end
  local deferred = {} -- tensor -> list of {fn, g}: added once its gradient is complete
  local function run_deferred(list, acc)
    for _, d in ipairs(list) do d[1](acc, d[2]) end
  end
  local order = topo_order(inner)
  for i = #order, 1, -1 do
    local t = order[i]
    local g = grads[t]
    grads[t] = nil
    local node = getuv(t).node
    local later = deferred[t]
    local fused = nil
    -- a pull term the ReLU was made with (tensor.relu_made_by: ds.train's white-box
    -- regularizer): its gradient goes into the ReLU's own backward pass, after any
    -- deferred terms
    local pull = node.pull
    if pull then
      pull.done = true
      if pull.cancel or not node.needs[1] then pull = nil elseif g == nil then g = core.zeros(core.size(t)) end
    end
    if later and not pull and g ~= nil and #later == 1 and later[1][3] and node.fuse_pull and node.needs[1] then
      -- the one deferred term folded into the ReLU's backward: no separate pass over g
      deferred[t] = nil
      local d = later[1]
      fused = node.fuse_pull(g, d[3], d[3].scale(d[2]), node.inputs[1], claim(g, node))
      later = nil
    end
    if later then
      deferred[t] = nil
      if g == nil then
        g = core.zeros(core.size(t))
      elseif retain_graph or not A.fresh[g] or not core.is_contiguous(g) then
        g = core.clone(g)
      end
      run_deferred(later, g)
    end
    if pull then fused = node.fuse_pull(g, pull, pull.scale, node.inputs[1], claim(g, node)) end
    if g ~= nil then
      if not node.backward then
        error("backward: the graph was already freed; pass retain_graph=true to the first backward", 4)
      end
      local gs = fused and table.pack(fused) or table.pack(node.backward(g, node.needs, claim(g, node)))
      if node.fresh then
        for j = 1, gs.n do if gs[j] ~= nil then A.fresh[gs[j]] = true end end
      end
      for j, x in ipairs(node.inputs) do
        local gi = gs[j]
        if gi ~= nil and node.needs[j] then
          if not same_shape(gi, x) then
            error("backward: gradient " .. shape_str(gi) .. " for input " .. j .. " does not match its shape "
              .. shape_str(x), 4)
          end
          local xu = getuv(x)
          if xu.node then
            local prev = grads[x]
            if prev == nil then
              grads[x] = own(gi)
            -- ours alone: add in place (not when the graph is kept: a retained backward
            -- may hand the same buffers again)
            elseif not retain_graph and A.fresh[prev] and core.is_contiguous(prev) then
              core.binary_("add", prev, prev, gi)
            elseif not retain_graph and A.fresh[gi] and not handed[gi] and core.is_contiguous(gi) then
              core.binary_("add", gi, gi, prev)
              handed[gi] = true
              grads[x] = gi
            else
              local sum = core.binary("add", prev, gi)
              A.fresh[sum], handed[sum] = true, true
              grads[x] = sum
            end
          else
            to_leaf(xu, gi)
          end
        end
      end
      if node.defer then
        for j, entry in pairs(node.defer) do
          local x = node.inputs[j]
          local fn, pull = entry, nil
          if type(entry) == "table" then fn, pull = entry.fn, entry.pull end
          if node.needs[j] then
            local xu = getuv(x)
            if xu.node then
              deferred[x] = deferred[x] or {}
              table.insert(deferred[x], {fn, g, pull})
            else -- a leaf: its gradient made here
              local acc = core.zeros(core.size(x))
              fn(acc, g)
              to_leaf(xu, acc)
            end
          end
        end
      end
    end
    if not retain_graph then node.backward, node.inputs, node.fuse_pull, node.pull = nil, {}, nil, nil end
  end
end

return A
