local f = '\31' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if not v then return 'missing' end
local st = string.sub(v, 1, 1)
if st == 'n' then return 'already' end
if st == 'x' then return 'ended' end
redis.call('HSET', KEYS[1], f, 'n' .. string.sub(v, 2), f .. ':why', ARGV[2])
return 'ending'
