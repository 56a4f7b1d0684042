-- Compare-and-set each job of a batch on its version, move it between the state, due and
-- leased sets, and insert its new outbox rows once; one call for the batch, in order.
-- ARGV[1]: JSON {p, items: [{id, expected_version, body, state, due_at, lease_owner,
-- lease_expires_at, reclaims, active, deliveries: [{field, body, status, next_attempt_at}]}]}.
-- Returns per item 1 when saved, 0 when the version moved on (lease lost).
local batch = cjson.decode(ARGV[1])
local p = batch.p
local function save(a)
  local id = a.id
  local jk = p..'job:'..id
  local v = redis.call('HGET', jk, 'version')
  if (not v) or tonumber(v) ~= tonumber(a.expected_version) then return 0 end
  local old = redis.call('HGET', jk, 'state')
  local seq = redis.call('HGET', jk, 'seq')
  redis.call('HSET', jk, 'body', a.body, 'state', a.state, 'due_at', a.due_at,
    'lease_owner', a.lease_owner, 'lease_expires_at', a.lease_expires_at, 'reclaims', a.reclaims,
    'version', tonumber(a.expected_version) + 1)
  if old ~= a.state then
    redis.call('ZREM', p..'st:'..old, id)
    redis.call('ZADD', p..'st:'..a.state, seq, id)
  end
  if a.active then
    if a.lease_owner == '' then
      redis.call('ZREM', p..'leased', id)
      redis.call('ZADD', p..'due', a.due_at, id)
    else
      redis.call('ZREM', p..'due', id)
      redis.call('ZADD', p..'leased', a.lease_expires_at, id)
    end
  else
    redis.call('ZREM', p..'due', id)
    redis.call('ZREM', p..'leased', id)
  end
  for _, d in ipairs(a.deliveries) do
    if redis.call('HSETNX', p..'dl:'..id, d.field, d.body) == 1 and d.status == 'pending' then
      redis.call('ZADD', p..'dl:due', d.next_attempt_at, id..'|'..d.field)
    end
  end
  return 1
end
local out = {}
for i, a in ipairs(batch.items) do out[i] = save(a) end
return out
