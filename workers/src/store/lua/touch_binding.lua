local f = '\31' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if not v or string.sub(v, 1, 1) ~= 'a' then return 0 end
local last, blob = string.match(v, '^a(%d*)|(.*)$')
if tonumber(ARGV[2]) > (tonumber(last) or 0) then
  redis.call('HSET', KEYS[1], f, 'a' .. ARGV[2] .. '|' .. blob)
end
return 1
