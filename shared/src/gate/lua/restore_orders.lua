-- ARGV: groups of 7, one per order the books decided: order_id, status (confirmed | rejected),
-- amount_cents, ticket_type, quantity, email, tickets (JSON). Writes the read model of an event
-- being rebuilt (restore.lua) from the books, a bounded chunk per call: a fan whose order Redis
-- lost (restarted empty) reads it again, and one Redis holds in an older state (rolled back:
-- reserved, confirming, expired) reads what the books decided. Its hold and outbox entries go:
-- the books decided it, nothing is left to reap or relay. The stock is not touched here (each
-- restore pass writes it from the books). A live event is never written.
if redis.call('HEXISTS', KEYS[1], 'restoring') == 0 then return 'live' end
for i = 1, #ARGV, 7 do
  local oid = ARGV[i]
  -- `r` without a deadline (see prelude.lua): the hold is long gone.
  local ok = p .. 'order:' .. oid
  redis.call('HSET', ok,
    'r', '\t' .. ARGV[i + 2] .. '\t' .. ARGV[i + 3] .. '\n' .. ARGV[i + 4] .. '\n' .. ARGV[i + 5],
    'tickets', ARGV[i + 6])
  set_status(ok, ARGV[i + 1])
  redis.call('ZREM', p .. 'holds', oid)
  redis.call('ZREM', p .. 'outbox', oid)
end
return 'restoring'
