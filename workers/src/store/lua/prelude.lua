local function sparse(v)
  local st, upd, bids, elen, rest = string.match(v, '^(%a)|(%d*)|([^|]*)|(%d+):(.*)$')
  return st, upd, bids, tonumber(elen), rest
end
local function sjoin(st, upd, bids, elen, rest)
  return st .. '|' .. upd .. '|' .. bids .. '|' .. elen .. ':' .. rest
end
local names = {p = 'pending', a = 'active', n = 'ending', x = 'ended'}
