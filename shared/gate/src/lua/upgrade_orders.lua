-- One-off (issue 20): an order written before `r` existed (ADR 32) kept what it is for as
-- fields of its own: `fp`, `hold_expires_at` and `amount`, or older still `tt`, `qty` and
-- `email`. This rewrites each of ARGV's orders of the event that is in such a layout as `r`, so
-- that every script and reader knows one layout; its TTL and other fields stay. Returns how many
-- it rewrote. `ops gate-upgrade` runs it over every event; delete it, and the command, once every
-- environment has run it.
local n = 0
for i = 1, #ARGV do
  local ok = p .. 'order:' .. ARGV[i]
  local o = redis.call('HMGET', ok, 'r', 'status', 'fp', 'hold_expires_at', 'amount', 'tt', 'qty', 'email')
  if not o[1] and o[2] then
    local fp = o[3] or ((o[6] or '') .. '\n' .. (o[7] or '') .. '\n' .. (o[8] or ''))
    redis.call('HSET', ok, 'r', (o[4] or '') .. '\t' .. (o[5] or '') .. '\t' .. fp)
    redis.call('HDEL', ok, 'fp', 'hold_expires_at', 'amount', 'tt', 'qty', 'email')
    n = n + 1
  end
end
return n
