-- The per-key request budget shared by every instance: GCRA (a token bucket kept as the
-- theoretical arrival time of the next request), on Redis's own clock so instances on hosts
-- with skewed clocks agree. ARGV[1]: JSON {p, section, step (µs per request), burst (burst
-- tolerance in µs)}. Takes one request's worth and returns 0, or takes nothing and returns
-- the µs to wait before asking again (until the section's 429 pause ends, or until the next
-- request conforms).
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', a.p..'rl:pause:'..a.section) or '0')
if pause > now then return math.ceil(pause - now) end
local tk = a.p..'rl:tat:'..a.section
local tat = tonumber(redis.call('GET', tk) or '0')
if tat < now then tat = now end
local wait = tat - tonumber(a.burst) - now
if wait > 0 then return math.ceil(wait) end
local nxt = tat + tonumber(a.step)
redis.call('SET', tk, string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
return 0
