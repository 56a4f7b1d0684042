-- Record that the store reached schema `version` (never moves the version back, so two
-- instances migrating at once agree). ARGV[1]: JSON {p, version}. Returns the version held.
local a = cjson.decode(ARGV[1])
local key = a.p..'schema'
local current = tonumber(redis.call('GET', key) or '0')
if current < a.version then
  redis.call('SET', key, a.version)
  return a.version
end
return current
