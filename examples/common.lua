-- Helpers shared by the examples: the data set and model of an experiment.
local ds = require "deepsigns"
local C = {}

-- Fashion-MNIST by default; MNIST with --mnist DIR; CIFAR-10 with --cifar DIR.
function C.experiment(opts)
  if opts.cifar then
    local train, test = ds.data.cifar10{dir = opts.cifar, normalize = true}
    return train, test, function() return ds.models.cifar_cnn{input = {3, 32, 32}} end, "fc1", "CIFAR-10, paper CNN"
  end
  local train, test
  if opts.mnist then
    train, test = ds.data.mnist{dir = opts.mnist, normalize = true}
  else
    train, test = ds.data.fashion_mnist{normalize = true}
  end
  local name = opts.mnist and "MNIST" or "Fashion-MNIST"
  return train, test, function() return ds.models.mlp{784, 512, 512, 10, dropout = 0.2} end, "fc2", name .. ", paper MLP"
end

-- Trains with Adam 1e-3, cosine-annealed over the run (the project's MLP recipe).
function C.fit(model, train, epochs, extra)
  local opt = ds.optim.Adam(model:parameters(), {lr = 1e-3})
  local args = {model = model, data = train, epochs = epochs, optimizer = opt,
    schedule = ds.optim.CosineAnnealingLR(opt, {T_max = epochs}), progress = false}
  for k, v in pairs(extra or {}) do args[k] = v end
  if args.key then
    return ds.watermark.whitebox.embed(args)
  end
  return ds.train(args)
end

function C.mean_epoch_seconds(history)
  local s = 0
  for _, h in ipairs(history) do s = s + h.seconds end
  return s / #history
end

function C.pct(x) return string.format("%.2f%%", 100 * x) end

-- An attack sweep's rows as <stem>.csv, plus a white-box (BER) and a black-box
-- (mismatches) plot against xlabel when gnuplot is there.
function C.report(rows, stem, what, xlabel)
  ds.report.csv(rows, stem .. ".csv")
  if not ds.report.gnuplot_available() then return end
  ds.report.plot(rows, stem .. "_wb", {title = "white-box: " .. what, xlabel = xlabel, score = "ber"})
  ds.report.plot(rows, stem .. "_bb", {title = "black-box: " .. what, xlabel = xlabel, score = "mismatches"})
  print("plots: " .. stem .. "_wb.png, " .. stem .. "_bb.png")
end

return C
