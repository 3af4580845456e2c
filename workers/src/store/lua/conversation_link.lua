local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.find(',' .. v .. ',', ',' .. ARGV[2] .. ',', 1, true) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], v and (v .. ',' .. ARGV[2]) or ARGV[2])
return 1
