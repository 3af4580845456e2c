local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local _, _, bids, elen, rest = sparse(v)
redis.call('HSET', KEYS[1], ARGV[1], sjoin(ARGV[2], ARGV[3], bids, elen, rest))
return 1
