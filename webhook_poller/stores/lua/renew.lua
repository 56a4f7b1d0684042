-- Extend each job's lease if `owner` still holds it; one call for the batch, in order.
-- ARGV[1]: JSON {p, items: [{id, owner, until}]}.
-- Returns per item 1 when renewed, 0 when the lease is someone else's (or gone).
local batch = cjson.decode(ARGV[1])
local p = batch.p
local out = {}
for i, a in ipairs(batch.items) do
  local jk = p..'job:'..a.id
  if redis.call('HGET', jk, 'lease_owner') ~= a.owner then
    out[i] = 0
  else
    redis.call('HSET', jk, 'lease_expires_at', a['until'])
    redis.call('ZADD', p..'leased', 'XX', a['until'], a.id)
    out[i] = 1
  end
end
return out
