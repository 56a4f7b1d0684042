-- Take due jobs: expired leases go back to the due set first (counting a reclaim), then up
-- to `limit` due jobs move to the leased set with `owner`, lease `until` and a new version.
-- ARGV[1]: JSON {p, now, until, limit, owner}. Returns each claimed job's HGETALL.
local a = cjson.decode(ARGV[1])
local p = a.p
local now = tonumber(a.now)
local expired = redis.call('ZRANGEBYSCORE', p..'leased', '-inf', now, 'LIMIT', 0, 500)
for _, id in ipairs(expired) do
  local jk = p..'job:'..id
  redis.call('ZREM', p..'leased', id)
  local due = redis.call('HGET', jk, 'due_at')
  if due then
    redis.call('HSET', jk, 'lease_owner', '', 'lease_expires_at', '')
    redis.call('HINCRBY', jk, 'reclaims', 1)
    redis.call('ZADD', p..'due', due, id)
  end
end
local ids = redis.call('ZRANGEBYSCORE', p..'due', '-inf', now, 'LIMIT', 0, tonumber(a.limit))
local out = {}
for _, id in ipairs(ids) do
  local jk = p..'job:'..id
  redis.call('ZREM', p..'due', id)
  if redis.call('EXISTS', jk) == 1 then
    redis.call('ZADD', p..'leased', a['until'], id)
    redis.call('HSET', jk, 'lease_owner', a.owner, 'lease_expires_at', a['until'])
    redis.call('HINCRBY', jk, 'version', 1)
    table.insert(out, redis.call('HGETALL', jk))
  end
end
return out
