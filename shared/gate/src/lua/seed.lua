-- ARGV: opens_at_ms, catalog_json, tt_ids (comma-separated), a fresh order-id salt (ADR 30),
-- then per ticket type: id, capacity, limit, hold_ms, price. Initialises the event once; re-running is a no-op,
-- and a different catalog for a live event is refused (counters are never overwritten).
local existing = redis.call('HGET', KEYS[1], 'catalog')
if existing then
  if existing == ARGV[2] and redis.call('HGET', KEYS[1], 'opens_at') == ARGV[1] then return 'unchanged' end
  return 'conflict'
end
-- A new event gets a new salt: keys used before a reset never derive its orders' ids.
redis.call('HSET', KEYS[1], 'opens_at', ARGV[1], 'catalog', ARGV[2], 'tt_ids', ARGV[3],
  'oid_salt', ARGV[4])
local i = 5
while ARGV[i] do
  redis.call('HSET', p .. 'tt:' .. ARGV[i], 'capacity', ARGV[i + 1], 'available', ARGV[i + 1], 'held', 0,
    'confirming', 0, 'sold', 0, 'limit', ARGV[i + 2], 'hold_ms', ARGV[i + 3], 'price', ARGV[i + 4])
  i = i + 5
end
return 'seeded'
