-- Create each job of a batch unless its provider task already has one (intake idempotency);
-- the batch is one call, in order, so a task twice in one batch makes one job.
-- ARGV[1]: JSON {p, jobs: [{id, dedupe_key, body, version, state, due_at, lease_owner,
--   lease_expires_at, reclaims, session_id, model, created_at, active}]}.
-- Returns one {1, id} per job created, {0, id of the job holding the task} per job not.
local batch = cjson.decode(ARGV[1])
local p = batch.p
local function create(a)
  local existing = redis.call('GET', p..'dedupe:'..a.dedupe_key)
  if existing then return {0, existing} end
  local seq = redis.call('INCR', p..'seq')
  local id = a.id
  local jk = p..'job:'..id
  redis.call('HSET', jk, 'body', a.body, 'version', a.version, 'state', a.state,
    'due_at', a.due_at, 'lease_owner', a.lease_owner, 'lease_expires_at', a.lease_expires_at,
    'reclaims', a.reclaims, 'seq', seq, 'session_id', a.session_id, 'model', a.model,
    'created_at', a.created_at, 'dedupe_key', a.dedupe_key)
  redis.call('SET', p..'dedupe:'..a.dedupe_key, id)
  redis.call('ZADD', p..'all', seq, id)
  redis.call('ZADD', p..'st:'..a.state, seq, id)
  redis.call('ZADD', p..'sess:'..a.session_id, seq, id)
  if a.active then
    if a.lease_owner == '' then redis.call('ZADD', p..'due', a.due_at, id)
    else redis.call('ZADD', p..'leased', a.lease_expires_at, id) end
  end
  return {1, id}
end
local out = {}
for i, a in ipairs(batch.jobs) do out[i] = create(a) end
return out
