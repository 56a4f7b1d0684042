-- Give back every job and delivery lease `owner` holds (a clean shutdown), deliveries due
-- `now`. ARGV[1]: JSON {p, owner, now}. Returns the number of jobs released.
local a = cjson.decode(ARGV[1])
local p = a.p
local owner = a.owner
local count = 0
for _, id in ipairs(redis.call('ZRANGE', p..'leased', 0, -1)) do
  local jk = p..'job:'..id
  if redis.call('HGET', jk, 'lease_owner') == owner then
    redis.call('HSET', jk, 'lease_owner', '', 'lease_expires_at', '')
    redis.call('ZREM', p..'leased', id)
    redis.call('ZADD', p..'due', redis.call('HGET', jk, 'due_at'), id)
    count = count + 1
  end
end
for _, m in ipairs(redis.call('ZRANGE', p..'dl:leased', 0, -1)) do
  if redis.call('HGET', p..'dl:owner', m) == owner then
    redis.call('ZREM', p..'dl:leased', m)
    redis.call('HDEL', p..'dl:owner', m)
    redis.call('ZADD', p..'dl:due', a.now, m)
  end
end
return count
