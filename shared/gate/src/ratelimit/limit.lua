-- The per-IP rate limit, atomic: one key per limited subject. KEYS[1]: the subject's key.
-- ARGV: interval_ms (the sustained rate's spacing), burst (how many requests may arrive at
-- once). State is one number: the theoretical arrival time (TAT; lua/gcra.lua is prepended).
-- Returns { allowed (1|0), remaining, retry_after_ms, reset_ms }.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local new_tat, wait = gcra(tat, now, interval, burst)
if not new_tat then
  return { 0, 0, wait, math.max(tat, now) - now }
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return { 1, math.floor((interval * burst - (new_tat - now)) / interval), 0, new_tat - now }
