-- ARGV: opens_at_ms, catalog_json, tt_ids, resume (0 | 1), n_types, a fresh order-id salt,
-- then per ticket type:
-- id, capacity, limit, hold_ms, price, sold (the database's). The per-customer counters follow
-- in calls of their own (restore_customers.lua), between a pass that pauses and the one that
-- resumes.
-- Rebuilds an event the gate lost (Redis restarted empty) from the database's books. Only an
-- absent event or one still being restored is written: a live gate is never overwritten.
-- While restoring, the event is paused (reserve refuses), so no hold is taken against books
-- that in-flight orders may still change; each pass rewrites the stock from the database,
-- and the pass with resume = 1 reopens the sale.
local existing = redis.call('HGET', KEYS[1], 'catalog')
if existing and redis.call('HEXISTS', KEYS[1], 'restoring') == 0 then return 'live' end
redis.call('HSET', KEYS[1], 'opens_at', ARGV[1], 'catalog', ARGV[2], 'tt_ids', ARGV[3],
  'paused', 1, 'restoring', 1)
-- The orders went with Redis: a new salt (ADR 30), or a key retried from before the loss would
-- derive the id of an order the database may already hold.
if not existing then redis.call('HSET', KEYS[1], 'oid_salt', ARGV[6]) end
local n = tonumber(ARGV[5])
local i = 7
for _ = 1, n do
  local cap, sold = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 5])
  -- `sold` is the database's. What Redis still holds as held or confirming is counted as the
  -- orders it still has in those states (none after a loss; after a rollback the holds and
  -- payments it kept, which restore_orders.lua and restore_holds.lua take out as they end
  -- them, and every transition since moved): the rest is available. Below zero when Redis
  -- holds more than the books left (a rollback resold tickets): sold out until those end.
  local tk = p .. 'tt:' .. ARGV[i]
  local c = redis.call('HMGET', tk, 'held', 'confirming')
  local held, confirming = tonumber(c[1] or '0'), tonumber(c[2] or '0')
  redis.call('HSET', tk, 'capacity', cap, 'available', cap - sold - held - confirming,
    'held', held, 'confirming', confirming, 'sold', sold, 'limit', ARGV[i + 2],
    'hold_ms', ARGV[i + 3], 'price', ARGV[i + 4])
  i = i + 6
end
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[1], 'paused', 'restoring')
  redis.call('HSET', KEYS[1], 'restored_at', now_ms())
  return 'resumed'
end
return 'restoring'
