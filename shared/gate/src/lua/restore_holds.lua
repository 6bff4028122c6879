-- ARGV: limit. Ends up to `limit` holds of an event being rebuilt (restore.lua) that the books
-- do not know, after restore_orders.lua took out those they decided: holds Redis kept from an
-- older state (rolled back), whose fans reserve again. Each is expired as a reap would (its
-- tickets leave the held count and its customer's; the next restore.lua pass reckons what is
-- available anew). Answers the holds left.
if redis.call('HEXISTS', KEYS[1], 'restoring') == 0 then return -1 end
local key = p .. 'holds'
for _, oid in ipairs(redis.call('ZRANGE', key, 0, tonumber(ARGV[1]) - 1)) do
  redis.call('ZREM', key, oid)
  local o = load(oid)
  if o and o.status == 'reserved' then release(oid, o, 'held', 'expired') end
end
return redis.call('ZCARD', key)
