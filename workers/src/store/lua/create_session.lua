local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  local _, _, _, elen, rest = sparse(existing)
  if elen and string.sub(rest, 1, elen) == ARGV[2] then return 'replay' end
  return 'exists'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 'created'
