local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 'gone' end
local st, upd, bids = sparse(v)
if st == 'a' then return 'active' end
local due = (tonumber(upd) or 0) + tonumber(ARGV[3])
if due > tonumber(ARGV[2]) then return tostring(due) end
for id in string.gmatch(bids, '[^,]+') do
  local b = '\31' .. id
  redis.call('HDEL', KEYS[1], b, b .. ':why', b .. ':by', b .. ':end')
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 'deleted'
