local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {} end
local out = {v}
local bids = string.match(v, '^%a|%d*|([^|]*)|')
for id in string.gmatch(bids or '', '[^,]+') do
  local f = '\31' .. id
  local b = redis.call('HGET', KEYS[1], f)
  local why = false
  if b then
    local st = string.byte(b, 1)
    -- `n` (ending) and `x` (ended) carry `:why`; `p` and `a` never do.
    if st == 110 or st == 120 then why = redis.call('HGET', KEYS[1], f .. ':why') end
  end
  out[#out + 1] = id
  out[#out + 1] = b
  out[#out + 1] = why
end
return out
