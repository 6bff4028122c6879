-- ARGV: order_id. The charge was declined or could not be made: back to reserved with the original deadline
-- (or straight to expired, and stock, if the deadline passed meanwhile).
local oid = ARGV[1]
local now = now_ms()
local ok = p .. 'order:' .. oid
local o = load(oid)
if not o or o.status ~= 'confirming' or redis.call('HGET', ok, 'pay_state') ~= 'pending' then
  return { 'ignored' }
end
redis.call('ZREM', p .. 'outbox', oid)
redis.call('HSET', ok, 'pay_state', 'aborted')
redis.call('HDEL', ok, 'pay_token')
if o.deadline <= now then
  release(oid, o, 'confirming', 'expired')
  return { 'expired' }
end
local tk = p .. 'tt:' .. o.tt
redis.call('HINCRBY', tk, 'confirming', -o.qty)
redis.call('HINCRBY', tk, 'held', o.qty)
redis.call('HSET', ok, 'status', 'reserved')
redis.call('ZADD', p .. 'holds', o.deadline, oid)
redis.call('INCR', p .. 'version')
return { 'reserved' }
