-- ARGV: order_id, payment_token, give_up_ms (0: never), attempt (a fresh random id, used only
-- if this call starts one). reserved -> confirming (held -> confirming) before charging, so the
-- hold cannot expire or be cancelled while the provider decides. Each start is a new attempt;
-- only that attempt may later approve or abort it. Attempts are drawn by the caller, never
-- counted here: a Redis that went back in time would count an attempt again, and the provider,
-- idempotent per attempt, would answer with the charge it already made (ADR 52).
local oid = ARGV[1]
local give_up = tonumber(ARGV[3] or '0')
local now = now_ms()
local ok = p .. 'order:' .. oid
local o = load(oid)
if not o then return { 'not_found' } end
-- An empty token (the relay) never starts a payment, it only finishes one.
if o.status == 'reserved' and ARGV[2] ~= '' then
  if o.deadline <= now then
    expire_one(oid, now)
    return { 'expired' }
  end
  local tk = p .. 'tt:' .. o.tt
  redis.call('HINCRBY', tk, 'held', -o.qty)
  redis.call('HINCRBY', tk, 'confirming', o.qty)
  redis.call('ZREM', p .. 'holds', oid)
  local attempt = ARGV[4]
  redis.call('HSET', ok, 'status', 'confirming', 'pay_state', 'pending', 'pay_token', ARGV[2],
    'pay_started_at', now, 'pay_attempt', attempt)
  -- The outbox lists paid-or-paying orders not yet known to be published: the relay's work list.
  redis.call('ZADD', p .. 'outbox', now, oid)
  return { 'charge', o.amount, ARGV[2], attempt }
end
if o.status == 'confirming' then
  local s = redis.call('HMGET', ok, 'pay_state', 'pay_token', 'published', 'pay_attempt', 'pay_started_at')
  if s[1] == 'pending' then
    if give_up > 0 and now - tonumber(s[5]) > give_up then return { 'stuck', s[4] } end
    return { 'charge', o.amount, s[2], s[4] }
  end
  return { 'paid', s[3] or '0' }
end
return { o.status }
