-- Helpers shared by the examples: the data set and model of an experiment, the
-- training recipe, data sets derived from Fashion-MNIST in the MNIST and CIFAR-10
-- file formats, and report files.
local ds = require "deepsigns"
local C = {}

-- Each model: its constructor for an input shape, the layer a white-box mark goes in,
-- and how that layer's output is pooled into features.
local MODELS = {
  mlp = {layer = "fc2", pool = "flatten", name = "paper MLP", make = function(input, opts)
    local n = input[1] * input[2] * input[3]
    return ds.models.mlp{n, 512, 512, 10, dropout = 0.2}
  end},
  cnn = {layer = "fc1", pool = "flatten", name = "paper CNN", make = function(input)
    return ds.models.cifar_cnn{input = input}
  end},
  wrn = {layer = "block3", pool = "channel_mean", name = "Wide ResNet", make = function(input, opts)
    return ds.models.wrn{depth = opts.wrn_depth or 16, widen = opts.wrn_widen or 4, input = input}
  end},
}

-- The experiment an example's options select: --mnist DIR or --cifar DIR (the standard
-- files; Fashion-MNIST by default), --model mlp|cnn|wrn (default: mlp for 28x28 data,
-- cnn for CIFAR-10), --train-size N (a random subset of the training set).
-- Returns train, test, new_model(), the white-box layer, a description, the layer's pooling.
function C.experiment(opts)
  local train, test, name
  if opts.cifar then
    train, test = ds.data.cifar10{dir = opts.cifar, normalize = true}
    name = "CIFAR-10"
  elseif opts.mnist then
    train, test = ds.data.mnist{dir = opts.mnist, normalize = true}
    name = "MNIST"
  else
    train, test = ds.data.fashion_mnist{normalize = true}
    name = "Fashion-MNIST"
  end
  if opts.train_size then train = train:subset{n = opts.train_size, seed = opts.seed or 0} end
  local kind = opts.model or (opts.cifar and "cnn" or "mlp")
  local m = MODELS[kind]
  if not m then error("--model must be mlp, cnn or wrn, got " .. tostring(kind), 0) end
  local input = train:input_shape()
  return train, test, function() return m.make(input, opts) end, m.layer, name .. ", " .. m.name, m.pool
end

-- Trains with Adam 1e-3, cosine-annealed over the run (the project's MLP recipe); with
-- extra.key, through whitebox.embed.
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

-- Data sets nobody tuned for, derived from Fashion-MNIST samples (seeded) and written in
-- the real file formats, so that they load through ds.data.mnist / ds.data.cifar10:
--   "mnist": 28x28 grey images, inverted and transposed;
--   "cifar": 3x32x32 colour images, each garment drawn in a random colour on a random
--            background colour (the colours carry no class information).
-- Returns dir.
function C.derived_data(kind, dir, n_train, n_test, seed)
  local tr, te = ds.data.fashion_mnist{}
  local saved = ds.core.rng.state()
  ds.manual_seed(seed or 1)
  local parts = {}
  for i, src in ipairs {tr:subset{n = n_train, seed = seed}, te:subset{n = n_test, seed = seed}} do
    local n, x = #src, nil
    if kind == "mnist" then
      x = (1 - src.x:transpose(3, 4)):contiguous()
    elseif kind == "cifar" then
      x = ds.zeros(n, 3, 32, 32)
      local fg, bg = ds.rand(n, 3, 1, 1), ds.rand(n, 3, 1, 1)
      local img = src.x:expand(n, 3, 28, 28)
      local inner = x:narrow(3, 3, 28):narrow(4, 3, 28)
      inner:copy(img * fg + (1 - img) * bg)
      x:narrow(3, 1, 2):copy(bg:expand(n, 3, 2, 32))
      x:narrow(3, 31, 2):copy(bg:expand(n, 3, 2, 32))
      x:narrow(4, 1, 2):copy(bg:expand(n, 3, 32, 2))
      x:narrow(4, 31, 2):copy(bg:expand(n, 3, 32, 2))
    else
      error("derived_data: kind must be mnist or cifar", 2)
    end
    parts[i] = ds.data.Dataset{x = x, y = src.y, classes = 10, name = kind .. "-format"}
  end
  ds.core.rng.set_state(saved)
  os.execute("mkdir -p '" .. dir .. "'")
  if kind == "mnist" then ds.data.write_mnist(dir, parts[1], parts[2]) else ds.data.write_cifar10(dir, parts[1], parts[2]) end
  return dir
end

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
