-- A sweep job (examples/sweeps.lua): the paper MLP trained on Fashion-MNIST plainly
-- (variant "none") or with a 32-bit white-box mark of the given variant. Row: training
-- seconds per epoch, test accuracy, BER. Run timing sweeps with one worker per machine.
return {params = {"variant", "seed", "epochs", "train_size"}, run = function(p)
  local ds = require "deepsigns"
  local wb = ds.watermark.whitebox
  local train, test = ds.data.fashion_mnist{normalize = true}
  if p.train_size and p.train_size < #train then train = train:subset{n = p.train_size, seed = p.seed} end
  local model = ds.models.mlp{784, 512, 512, 10, dropout = 0.2}
  local args = {model = model, data = train, epochs = p.epochs or 3, progress = false}
  if p.variant ~= "none" then
    args.key = wb.keygen{model = model, layer = "fc2", data = train, bits = 32, targets = {0}, seed = p.seed,
      variant = p.variant}
  end
  local t0 = ds.core.sys.clock()
  if args.key then wb.embed(args) else ds.train(args) end
  local row = {seconds_per_epoch = (ds.core.sys.clock() - t0) / args.epochs, accuracy = ds.evaluate(model, test).accuracy}
  if args.key then row.ber = wb.extract(model, args.key).ber end
  return row
end}
