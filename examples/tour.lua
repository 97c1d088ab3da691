-- A short tour of deepsigns tensors, autograd and layers.
-- Run: build/bin/deepsigns examples/tour.lua
local ds = require "deepsigns"
ds.manual_seed(1)

print("== tensors: float32, views share storage ==")
local a = ds.tensor{{1, 2, 3}, {4, 5, 6}}
print(a)
local col = a:select(2, 2)      -- a view: column 2
col:fill(0)
print("after zeroing column 2 through a view:")
print(a)
print("transpose is a view too:", a:transpose(1, 2):size()[1] .. "x" .. a:transpose(1, 2):size()[2])

print("\n== broadcasting and reductions ==")
local b = a + ds.tensor{10, 20, 30}
print(b)
print("sum over dim 1:", table.concat(b:sum(1):totable(), " "), " mean:", b:mean():item())

print("\n== matmul through OpenBLAS sgemm ==")
local x, w = ds.randn(2, 3), ds.ones(3, 2)
print(x:matmul(w))
local n = 512
local m1, m2 = ds.randn(n, n), ds.randn(n, n)
local t0 = ds.clock()
local reps = 5
for _ = 1, reps do m1:matmul(m2) end
local secs = (ds.clock() - t0) / reps
print(string.format("%dx%d matmul: %.1f GFLOP/s", n, n, 2 * n ^ 3 / secs / 1e9))

print("\n== autograd ==")
local v = ds.tensor({1, 2, 3}, {requires_grad = true})
local loss = (v * v):sum()
loss:backward()
print("d/dv sum(v^2) at (1,2,3):", table.concat(v.grad:totable(), " "))

print("\n== a small network ==")
local nn = ds.nn
local model = nn.Sequential(nn.Linear(3, 8):named("fc1"), nn.ReLU(), nn.Linear(8, 2):named("fc2"))
print(model)
local out = model(ds.randn(4, 3))
print("output:", out:size()[1] .. "x" .. out:size()[2])
print("memory in use:", ds.memory().tensors .. " tensors, " .. ds.memory().bytes .. " bytes")
