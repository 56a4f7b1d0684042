-- Take due deliveries: expired delivery leases become due `now`, then up to `limit` due ones
-- are leased to `owner` until `until`. ARGV[1]: JSON {p, now, until, limit, owner, jobs}.
-- Returns each claimed delivery's JSON body; with `jobs`, {body, the job's HGETALL} pairs
-- instead (an empty HGETALL: the job is gone), so the sender needs no read of its own.
local a = cjson.decode(ARGV[1])
local p = a.p
local now = tonumber(a.now)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', p..'dl:leased', '-inf', now, 'LIMIT', 0, 500)) do
  redis.call('ZREM', p..'dl:leased', m)
  redis.call('HDEL', p..'dl:owner', m)
  redis.call('ZADD', p..'dl:due', now, m)
end
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', p..'dl:due', '-inf', now, 'LIMIT', 0,
                              tonumber(a.limit))) do
  redis.call('ZREM', p..'dl:due', m)
  local sep = string.find(m, '|', 1, true)
  local job_id = string.sub(m, 1, sep - 1)
  local body = redis.call('HGET', p..'dl:'..job_id, string.sub(m, sep + 1))
  if body then
    redis.call('ZADD', p..'dl:leased', a['until'], m)
    redis.call('HSET', p..'dl:owner', m, a.owner)
    if a.jobs then
      table.insert(out, {body, redis.call('HGETALL', p..'job:'..job_id)})
    else
      table.insert(out, body)
    end
  end
end
return out
