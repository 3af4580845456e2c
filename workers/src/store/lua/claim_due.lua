local limit = tonumber(ARGV[3])
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
local out = {}
local buckets = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit)
for _, bucket in ipairs(buckets) do
  if #out >= limit then break end
  local due = redis.call('ZRANGEBYSCORE', bucket, '-inf', ARGV[1], 'LIMIT', 0, limit - #out)
  for _, member in ipairs(due) do
    redis.call('ZADD', bucket, until_, member)
    out[#out + 1] = member
  end
  fix(bucket, KEYS[1])
end
return out
