local H = require "helper"
local ds = H.ds

describe("models", function()
  before_each(function() ds.manual_seed(1) end)

  it("builds the paper MLP with named post-activation layers", function()
    local m = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}
    assert.same({3, 10}, m(ds.rand(3, 1, 28, 28)):size())
    local a = m:activations(ds.rand(3, 1, 28, 28), "fc2")
    assert.same({3, 512}, a:size())
    assert.is_true((-a):max():item() <= 0) -- post-ReLU
    assert.equal(784 * 512 + 512 + 512 * 512 + 512 + 5130, m:num_parameters())
  end)

  it("builds the paper CNN for 1x28x28 and 3x32x32", function()
    local c = ds.models.cifar_cnn{input = {1, 28, 28}}
    assert.same({2, 10}, c(ds.rand(2, 1, 28, 28)):size())
    local c3 = ds.models.cifar_cnn{}
    assert.same({2, 10}, c3(ds.rand(2, 3, 32, 32)):size())
    assert.same({2, 512}, c3:activations(ds.rand(2, 3, 32, 32), "fc1"):size())
    assert.same({2, 64, 11, 11}, c:activations(ds.rand(2, 1, 28, 28), "conv4"):size())
  end)

  it("builds a Wide ResNet with named blocks", function()
    local w = ds.models.wrn{depth = 10, widen = 1}
    assert.same({2, 10}, w(ds.rand(2, 3, 32, 32)):size())
    assert.same({2, 64, 8, 8}, w:activations(ds.rand(2, 3, 32, 32), "block3"):size())
    assert.has_error(function() ds.models.wrn{depth = 15} end, "models.wrn: depth must be 6n + 4 (10, 16, 22, 28, ...), got 15")
  end)
end)
