local f = '\31' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if not v then return 'missing' end
if string.sub(v, 1, 1) == 'x' then
  if redis.call('HGET', KEYS[1], f .. ':by') == ARGV[3] then return 'ended' end
  return 'noop'
end
redis.call('HSET', KEYS[1], f, 'x' .. string.sub(v, 2), f .. ':why', ARGV[2], f .. ':by', ARGV[3], f .. ':end', ARGV[4])
return 'ended'
