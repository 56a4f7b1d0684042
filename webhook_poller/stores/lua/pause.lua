-- Hold a section's requests on every instance. ARGV[1]: JSON {p, section, span (the pause
-- in µs; 0: only read)}. Returns the µs the pause still holds.
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pk = a.p..'rl:pause:'..a.section
local till = tonumber(redis.call('GET', pk) or '0')
local span = tonumber(a.span)
if span > 0 and now + span > till then
  till = now + span
  redis.call('SET', pk, string.format('%.0f', till), 'PX', math.ceil(span / 1000) + 1000)
end
if till <= now then return 0 end
return math.ceil(till - now)
