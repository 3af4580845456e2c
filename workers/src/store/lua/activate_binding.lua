local f = '\31' .. ARGV[1]
local v = redis.call('HGET', KEYS[1], f)
if not v then return 'missing' end
local st = string.sub(v, 1, 1)
if st == 'a' then return 'active' end
if st ~= 'p' then return names[st] or st end
redis.call('HSET', KEYS[1], f, 'a' .. ARGV[3] .. '|' .. ARGV[2])
return 'activated'
