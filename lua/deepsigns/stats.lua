-- Exact binomial tail probabilities (for BER p-values and black-box thresholds).
local S = {}

local function log_add(a, b)
  if a == -math.huge then return b end
  if b == -math.huge then return a end
  if a < b then a, b = b, a end
  return a + math.log(1 + math.exp(b - a))
end

-- log P(X = k) for X ~ Binomial(n, p), for every k = 0..n (index k + 1)
local function log_pmf(n, p)
  local out = {}
  if p <= 0 or p >= 1 then
    for k = 0, n do out[k + 1] = ((p <= 0 and k == 0) or (p >= 1 and k == n)) and 0 or -math.huge end
    return out
  end
  local lp, lq = math.log(p), math.log(1 - p)
  local lc = 0 -- log C(n, k)
  for k = 0, n do
    out[k + 1] = lc + k * lp + (n - k) * lq
    lc = lc + math.log((n - k) / (k + 1))
  end
  return out
end

local function check(n, k, p, who)
  if math.type(n) ~= "integer" or n < 0 then error(who .. ": n must be an integer >= 0", 3) end
  if type(p) ~= "number" or p < 0 or p > 1 then error(who .. ": p must be in [0, 1]", 3) end
  if type(k) ~= "number" then error(who .. ": k must be a number", 3) end
end

--- P(X <= k)
function S.binom_cdf(k, n, p)
  check(n, k, p, "binom_cdf")
  if k < 0 then return 0 end
  if k >= n then return 1 end
  local lp, acc = log_pmf(n, p), -math.huge
  for i = 0, math.floor(k) do acc = log_add(acc, lp[i + 1]) end
  return math.min(1, math.exp(acc))
end

--- P(X >= k)
function S.binom_sf(k, n, p)
  check(n, k, p, "binom_sf")
  if k <= 0 then return 1 end
  if k > n then return 0 end
  local lp, acc = log_pmf(n, p), -math.huge
  for i = math.ceil(k), n do acc = log_add(acc, lp[i + 1]) end
  return math.min(1, math.exp(acc))
end

--- Expected value and standard deviation of Binomial(n, p).
function S.binom_moments(n, p) return n * p, math.sqrt(n * p * (1 - p)) end

return S
