-- deepsigns.nn: modules and losses.
local F = require "deepsigns.functional"
local layers = require "deepsigns.nn.layers"
local containers = require "deepsigns.nn.containers"

local nn = {Module = require "deepsigns.nn.module", functional = F}
for k, v in pairs(layers) do nn[k] = v end
for k, v in pairs(containers) do nn[k] = v end
nn.cross_entropy, nn.mse, nn.bce = F.cross_entropy, F.mse, F.bce
nn.softmax, nn.log_softmax = F.softmax, F.log_softmax
return nn
