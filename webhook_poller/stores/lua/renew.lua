-- Extend a job's lease if `owner` still holds it. ARGV[1]: JSON {p, id, owner, until}.
-- Returns 1 when renewed, 0 when the lease is someone else's (or gone).
local a = cjson.decode(ARGV[1])
local p = a.p
local jk = p..'job:'..a.id
if redis.call('HGET', jk, 'lease_owner') ~= a.owner then return 0 end
redis.call('HSET', jk, 'lease_expires_at', a['until'])
redis.call('ZADD', p..'leased', 'XX', a['until'], a.id)
return 1
