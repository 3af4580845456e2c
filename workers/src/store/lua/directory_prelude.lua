local function fix(bucket, index)
  local m = redis.call('ZRANGE', bucket, 0, 0, 'WITHSCORES')
  if #m == 0 then redis.call('ZREM', index, bucket)
  else redis.call('ZADD', index, m[2], bucket) end
end
