-- deepsigns.watermark: the white-box and black-box DeepSigns schemes.
return setmetatable({}, {
  __index = function(t, k)
    local mod = ({whitebox = "deepsigns.watermark.whitebox", blackbox = "deepsigns.watermark.blackbox",
      losses = "deepsigns.watermark.losses", keyfile = "deepsigns.watermark.keyfile"})[k]
    if mod then
      local v = require(mod)
      rawset(t, k, v)
      return v
    end
  end,
})
