local v = redis.call('GET', KEYS[1])
local now = tonumber(ARGV[1])
local function take(n, answer, since)
  local record = 'c|' .. ARGV[1] .. '|' .. n
  local value = tostring(n)
  if since then
    record = record .. '|' .. since
    value = value .. '|' .. since
  end
  redis.call('SET', KEYS[1], record, 'PX', ARGV[3])
  return {answer, value}
end
if not v then return take(1, 'claimed') end
local kind = string.sub(v, 1, 1)
local rest = string.sub(v, 3)
if kind == 's' then return {'sent', rest} end
if kind == 'f' then return {'failed', rest} end
local f = {}
for x in string.gmatch(rest, '[^|]+') do f[#f + 1] = x end
if kind == 'r' then return take(tonumber(f[1]) + 1, 'claimed') end
if kind == 'd' then return take(tonumber(f[1]) + 1, 'in_doubt', f[2]) end
local at = tonumber(f[1])
local n = tonumber(f[2])
local lease = tonumber(ARGV[2])
if now - at < lease then return {'busy', tostring(at + lease - now)} end
-- The lapsed attempt (claimed at `at`) may have posted: the doubt began then, or earlier.
return take(n + 1, 'in_doubt', f[3] or f[1])
