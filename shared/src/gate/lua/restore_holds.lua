-- ARGV: limit. Ends up to `limit` holds of an event being rebuilt (restore.lua) that the books
-- do not know, after restore_orders.lua took out those they decided: holds Redis kept from an
-- older state (rolled back), whose fans reserve again. Each is expired and leaves the held
-- count and its customer's counter; the next restore.lua pass counts its tickets available.
-- Answers the holds left.
if redis.call('HEXISTS', KEYS[1], 'restoring') == 0 then return -1 end
local key = p .. 'holds'
for _, oid in ipairs(redis.call('ZRANGE', key, 0, tonumber(ARGV[1]) - 1)) do
  redis.call('ZREM', key, oid)
  local o = load(oid)
  if o and o.status == 'reserved' then
    redis.call('HINCRBY', p .. 'tt:' .. o.tt, 'held', -o.qty)
    local ck = p .. 'cust:' .. o.email
    if redis.call('HINCRBY', ck, o.tt, -o.qty) <= 0 then
      redis.call('HDEL', ck, o.tt)
      customer_emptied(ck)
    end
    set_status(p .. 'order:' .. oid, 'expired')
  end
end
return redis.call('ZCARD', key)
