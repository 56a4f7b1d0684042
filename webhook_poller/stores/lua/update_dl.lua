-- Write each delivery's new state and drop its lease, unless another `owner` holds the
-- lease ('' : whoever holds it); one call for the batch, in order.
-- ARGV[1]: JSON {p, items: [{job_id, field, body, status, next_attempt_at, owner}]}.
-- Returns per item 1 when written, 0 when not.
local batch = cjson.decode(ARGV[1])
local p = batch.p
local function update(a)
  local m = a.job_id..'|'..a.field
  local current = redis.call('HGET', p..'dl:owner', m)
  if a.owner ~= '' and current and current ~= a.owner then return 0 end
  if redis.call('HEXISTS', p..'dl:'..a.job_id, a.field) == 0 then return 0 end
  redis.call('HSET', p..'dl:'..a.job_id, a.field, a.body)
  redis.call('ZREM', p..'dl:leased', m)
  redis.call('HDEL', p..'dl:owner', m)
  if a.status == 'pending' then redis.call('ZADD', p..'dl:due', a.next_attempt_at, m)
  else redis.call('ZREM', p..'dl:due', m) end
  return 1
end
local out = {}
for i, a in ipairs(batch.items) do out[i] = update(a) end
return out
