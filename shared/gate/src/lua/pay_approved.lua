-- ARGV: order_id, attempt, payment_ref, paid_at (RFC 3339). Records the approved charge of the
-- current attempt (again: the same answer); the order stays in the outbox until published.
-- Answers what its message carries (reference, time, ticket type, quantity, e-mail, amount),
-- so the caller publishes it without reading the order again. Anything else is a stale
-- approval: the caller hands its charge to the books, which keep or refund it (ADR 53).
local oid = ARGV[1]
local ok = p .. 'order:' .. oid
local o = load(oid)
if not o then return { 'stale', 'missing' } end
local s = redis.call('HMGET', ok, 'pay_state', 'pay_attempt', 'payment_ref', 'paid_at')
if o.status == 'confirming' and s[1] == 'pending' and s[2] == ARGV[2] then
  redis.call('HSET', ok, 'pay_state', 'approved', 'payment_ref', ARGV[3], 'paid_at', ARGV[4])
  redis.call('HDEL', ok, 'pay_token')
  return { 'approved', ARGV[3], ARGV[4], o.tt, o.qty, o.email, o.amount }
end
if s[1] == 'approved' and s[3] == ARGV[3] then
  return { 'approved', s[3], s[4], o.tt, o.qty, o.email, o.amount }
end
return { 'stale', o.status }
