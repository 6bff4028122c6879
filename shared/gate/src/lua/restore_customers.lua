-- ARGV: customer triples: ticket type, e-mail, confirmed quantity. Writes per-customer counters
-- of an event being rebuilt (restore.lua), a bounded chunk per call so that no call holds Redis
-- for long; a live event is never written.
if redis.call('HEXISTS', KEYS[1], 'restoring') == 0 then return 'live' end
local i = 1
while ARGV[i] do
  local ck = p .. 'cust:' .. ARGV[i + 1]
  redis.call('HSET', ck, ARGV[i], ARGV[i + 2])
  redis.call('PERSIST', ck)
  i = i + 3
end
return 'restoring'
