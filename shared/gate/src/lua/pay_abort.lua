-- ARGV: order_id, attempt. That attempt's charge was declined (or never resolved): back to
-- reserved with the original deadline, or to expired (and stock) if the deadline passed.
-- A stale attempt (a later one has started) changes nothing.
local oid = ARGV[1]
local now = now_ms()
local ok = p .. 'order:' .. oid
local o = load(oid)
if not o or o.status ~= 'confirming' then return { 'ignored' } end
local s = redis.call('HMGET', ok, 'pay_state', 'pay_attempt')
if s[1] ~= 'pending' or s[2] ~= ARGV[2] then return { 'ignored' } end
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
return { 'reserved' }
