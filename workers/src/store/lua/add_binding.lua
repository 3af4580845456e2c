local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -1 end
local f = '\31' .. ARGV[2]
if redis.call('HSETNX', KEYS[1], f, ARGV[3]) == 0 then return 0 end
local st, upd, bids, elen, rest = sparse(v)
local cutoff = tonumber(ARGV[4]) - tonumber(ARGV[5])
local keep = {}
for id in string.gmatch(bids, '[^,]+') do
  local b = '\31' .. id
  local bv = redis.call('HGET', KEYS[1], b)
  local drop = not bv
  if bv and string.sub(bv, 1, 1) == 'x' then
    local ended = redis.call('HGET', KEYS[1], b .. ':end')
    if (tonumber(ended) or 0) < cutoff then
      redis.call('HDEL', KEYS[1], b, b .. ':why', b .. ':by', b .. ':end')
      drop = true
    end
  end
  if not drop and id ~= ARGV[2] then keep[#keep + 1] = id end
end
keep[#keep + 1] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], sjoin(st, upd, table.concat(keep, ','), elen, rest))
return 1
