-- A sweep job (examples/sweeps.lua): the paper MLP trained on Fashion-MNIST with `bits`
-- bits in layer fc2 (the white-box defaults; 0 bits: unmarked). Row: test accuracy,
-- and the mark's BER, p-value and verdict.
return {params = {"bits", "seed", "epochs", "train_size"}, run = function(p)
  local ds = require "deepsigns"
  local wb = ds.watermark.whitebox
  local train, test = ds.data.fashion_mnist{normalize = true}
  if p.train_size and p.train_size < #train then train = train:subset{n = p.train_size, seed = p.seed} end
  local model = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}
  local args = {model = model, data = train, epochs = p.epochs or 5, progress = false}
  local row = {}
  if (p.bits or 0) > 0 then
    args.key = wb.keygen{model = model, layer = "fc2", data = train, bits = p.bits, targets = {0}, seed = p.seed}
    wb.embed(args)
    local r = wb.extract(model, args.key)
    row.ber, row.wb_p_value, row.wb_detected = r.ber, r.p_value, r.detected
  else
    ds.train(args)
  end
  row.accuracy = ds.evaluate(model, test).accuracy
  return row
end}
