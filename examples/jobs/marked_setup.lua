-- The setup of the robustness sweep (examples/sweeps.lua): the owner's marked paper MLP
-- with both marks (examples/marked.lua: trained once, then loaded from args.out).
local examples = debug.getinfo(1, "S").source:sub(2):match("^(.*)/jobs/") or "examples"
package.path = examples .. "/?.lua;" .. package.path
return function(args)
  local owner = require("marked").get{epochs = args.epochs or 5, seed = 1, K = 20, out = args.out or "results",
    train_size = args.train_size}
  return {model = owner.model, test = owner.test, data = owner.train, wb_key = owner.wb_key, bb_key = owner.bb_key}
end
