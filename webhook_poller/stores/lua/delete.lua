-- Delete a job with its index entries and deliveries. ARGV[1]: JSON {p, id}.
-- Returns 1 when the job existed, else 0.
local a = cjson.decode(ARGV[1])
local p = a.p
local id = a.id
local jk = p..'job:'..id
if redis.call('EXISTS', jk) == 0 then return 0 end
local f = redis.call('HMGET', jk, 'state', 'session_id', 'dedupe_key')
redis.call('DEL', jk)
redis.call('DEL', p..'dedupe:'..f[3])
redis.call('ZREM', p..'due', id)
redis.call('ZREM', p..'leased', id)
redis.call('ZREM', p..'all', id)
redis.call('ZREM', p..'st:'..f[1], id)
redis.call('ZREM', p..'sess:'..f[2], id)
for _, field in ipairs(redis.call('HKEYS', p..'dl:'..id)) do
  local m = id..'|'..field
  redis.call('ZREM', p..'dl:due', m)
  redis.call('ZREM', p..'dl:leased', m)
  redis.call('HDEL', p..'dl:owner', m)
end
redis.call('DEL', p..'dl:'..id)
return 1
