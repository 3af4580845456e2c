local v = redis.call('HGET', KEYS[1], 'o:' .. ARGV[1])
if not v then return 0 end
local sep = string.find(v, '|', 1, true)
if string.sub(v, 1, sep - 1) ~= ARGV[2] or tonumber(string.sub(v, sep + 1)) <= tonumber(ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[2], ARGV[4])
return 1
