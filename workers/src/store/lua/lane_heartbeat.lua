local inst, now, lease, lanes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[2], inst)
else
  redis.call('ZADD', KEYS[2], now + lease, inst)
end
local live = math.max(redis.call('ZCARD', KEYS[2]), 1)
local share = math.ceil(lanes / live)
if ARGV[5] == '1' then share = 0 end
local held, free = {}, {}
for lane = 0, lanes - 1 do
  local v = redis.call('HGET', KEYS[1], 'o:' .. lane)
  if v then
    local sep = string.find(v, '|', 1, true)
    local exp = tonumber(string.sub(v, sep + 1))
    if string.sub(v, 1, sep - 1) == inst then
      table.insert(held, lane)
    elseif exp <= now then
      table.insert(free, {lane, exp})
    end
  else
    table.insert(free, {lane, 0})
  end
end
local out = {}
local until_ = inst .. '|' .. (now + lease)
for _, lane in ipairs(held) do
  redis.call('HSET', KEYS[1], 'o:' .. lane, until_)
  table.insert(out, lane)
  table.insert(out, -1)
end
local owned = #held
for _, f in ipairs(free) do
  if owned >= share then break end
  redis.call('HSET', KEYS[1], 'o:' .. f[1], until_)
  table.insert(out, f[1])
  table.insert(out, f[2])
  owned = owned + 1
end
return {share, out}
