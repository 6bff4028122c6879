-- ARGV: order_id, payment_ref, paid_at (RFC 3339). Records the approved charge; the order
-- stays in the outbox until its message is published.
local oid = ARGV[1]
local ok = p .. 'order:' .. oid
local o = load(oid)
if not o or o.status ~= 'confirming' then return { 'ignored' } end
if redis.call('HGET', ok, 'pay_state') == 'pending' then
  redis.call('HSET', ok, 'pay_state', 'approved', 'payment_ref', ARGV[2], 'paid_at', ARGV[3])
  redis.call('HDEL', ok, 'pay_token')
end
local v = redis.call('HMGET', ok, 'payment_ref', 'paid_at')
return { 'approved', v[1], v[2] }
