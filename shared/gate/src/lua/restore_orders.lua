-- ARGV: groups of 7, one per order the books decided: order_id, status (confirmed | rejected),
-- amount_cents, ticket_type, quantity, email, tickets (JSON). Writes the read model of an event
-- being rebuilt (restore.lua) from the books, a bounded chunk per call: a fan whose order Redis
-- lost (restarted empty) reads it again, and one Redis holds in an older state (rolled back:
-- reserved, confirming, expired) reads what the books decided. Its hold and outbox entries go:
-- the books decided it, nothing is left to reap or relay. One Redis still counted as held or
-- confirming leaves that count (the next restore.lua pass reckons the stock from what is
-- left), and one the books rejected leaves its customer's count. A live event is never
-- written.
if redis.call('HEXISTS', KEYS[1], 'restoring') == 0 then return 'live' end
for i = 1, #ARGV, 7 do
  local oid = ARGV[i]
  local ok = p .. 'order:' .. oid
  local o = load(oid)
  if o and (o.status == 'reserved' or o.status == 'confirming') then
    local from = o.status == 'reserved' and 'held' or 'confirming'
    if ARGV[i + 1] == 'confirmed' then
      redis.call('HINCRBY', p .. 'tt:' .. o.tt, from, -o.qty)
    else
      release(oid, o, from, 'rejected')
    end
  end
  -- `r` without a deadline (see prelude.lua): the hold is long gone.
  redis.call('HSET', ok,
    'r', '\t' .. ARGV[i + 2] .. '\t' .. ARGV[i + 3] .. '\n' .. ARGV[i + 4] .. '\n' .. ARGV[i + 5],
    'tickets', ARGV[i + 6])
  -- The restore counts the books' sales itself (restore.lua): nothing is left to count.
  redis.call('HDEL', ok, 'uncounted')
  set_status(ok, ARGV[i + 1])
  redis.call('ZREM', p .. 'holds', oid)
  redis.call('ZREM', p .. 'outbox', oid)
end
return 'restoring'
