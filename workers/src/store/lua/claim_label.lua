local holder = redis.call('HGET', KEYS[1], ARGV[1])
if (not holder) or holder == ARGV[2] or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 'ok'
end
return holder
