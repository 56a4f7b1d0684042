-- take.lua for up to n waiters of one process in one call: the same GCRA bucket on Redis's
-- clock, but it takes up to n requests' worth whose send time lies at most `ahead` µs
-- from now, each at its own slot `step` µs after the one before, so the spacing and the
-- per-window bound stay those of n calls of take.lua in a row. ARGV[1]: JSON {p, section,
-- step, burst, n, ahead}. Returns {wait, d1, d2, ...}: the µs each taken request waits
-- before it goes; with none taken, `wait` is the µs to wait before asking again (a 429
-- pause, or until the next request conforms).
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local pause = tonumber(redis.call('GET', a.p..'rl:pause:'..a.section) or '0')
if pause > now then return {math.ceil(pause - now)} end
local tk = a.p..'rl:tat:'..a.section
local tat = tonumber(redis.call('GET', tk) or '0')
if tat < now then tat = now end
local step = tonumber(a.step)
local burst = tonumber(a.burst)
local out = {0}
for _ = 1, tonumber(a.n) do
  local wait = tat - burst - now
  if wait < 0 then wait = 0 end
  if wait > tonumber(a.ahead) then
    if #out == 1 then out[1] = math.ceil(wait) end
    break
  end
  out[#out + 1] = math.ceil(wait)
  if now + wait > tat then tat = now + wait end
  tat = tat + step
end
if #out > 1 then
  redis.call('SET', tk, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
return out
