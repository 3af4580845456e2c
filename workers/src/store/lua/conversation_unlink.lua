local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local keep, found = {}, 0
for id in string.gmatch(v, '[^,]+') do
  if id == ARGV[2] then found = 1 else keep[#keep + 1] = id end
end
if #keep == 0 then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], table.concat(keep, ',')) end
return found
