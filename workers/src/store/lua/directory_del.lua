redis.call('ZREM', KEYS[1], ARGV[1])
fix(KEYS[1], KEYS[2])
return 1
