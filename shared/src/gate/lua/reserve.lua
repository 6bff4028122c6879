-- ARGV: order_id, ticket_type, quantity, email, idempotency_key, then the per-e-mail rate
-- limit: interval_ms, burst (interval 0: no limit).
local oid, tt, qty, email, ikey = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local now = now_ms()

local ik = p .. 'idem:' .. ikey
local fp = redis.sha1hex(tt .. '\n' .. qty .. '\n' .. email)
local prev = redis.call('GET', ik)
if prev then
  local sep = string.find(prev, '|', 1, true)
  if string.sub(prev, 1, sep - 1) ~= fp then return { 'idem_conflict' } end
  local poid = string.sub(prev, sep + 1)
  local first = redis.call('HGET', p .. 'order:' .. poid, 'hold_expires_at')
  return { 'replay', poid, first or '0' }
end

local m = redis.call('HMGET', KEYS[1], 'opens_at', 'paused')
if not m[1] then return { 'unknown_event' } end
-- Being rebuilt after Redis lost its state (restore.lua): no holds until the books settle.
if m[2] then return { 'paused' } end
local opens = tonumber(m[1])
if now < opens then return { 'too_early', tostring(opens - now) } end

local tk = p .. 'tt:' .. tt
local t = redis.call('HMGET', tk, 'limit', 'hold_ms', 'price')
if not t[1] then return { 'unknown_ticket_type' } end

-- The per-e-mail limit (GCRA, as ratelimit/gcra.lua) in the event's slot, so a reservation is
-- one script. Only attempts that could take tickets count: a replay, an unknown event or
-- ticket type, a paused or not yet open sale spend nothing, and a refusal consumes nothing.
local interval, burst = tonumber(ARGV[6] or '0'), tonumber(ARGV[7] or '1')
if interval > 0 then
  local rk = p .. 'rl:' .. email
  local tat = math.max(tonumber(redis.call('GET', rk) or '0'), now)
  local new_tat, tau = tat + interval, interval * burst
  if new_tat - now > tau then return { 'rate_limited', tostring(new_tat - now - tau) } end
  redis.call('SET', rk, new_tat, 'PX', new_tat - now)
end

reap(now, 25)
local avail = tonumber(redis.call('HGET', tk, 'available'))
if avail <= 0 then return { 'sold_out' } end
local limit = tonumber(t[1])
local ck = p .. 'cust:' .. tt .. ':' .. email
local have = tonumber(redis.call('GET', ck) or '0')
if have + qty > limit then
  return { 'limit', tostring(limit), tostring(math.max(limit - have, 0)) }
end
if avail < qty then return { 'not_enough', tostring(avail) } end

local deadline = now + tonumber(t[2])
redis.call('HINCRBY', tk, 'available', -qty)
redis.call('HINCRBY', tk, 'held', qty)
redis.call('INCRBY', ck, qty)
redis.call('HSET', p .. 'order:' .. oid, 'status', 'reserved', 'tt', tt, 'qty', qty, 'email', email,
  'hold_expires_at', deadline, 'created_at', now, 'amount', qty * tonumber(t[3]))
redis.call('ZADD', p .. 'holds', deadline, oid)
redis.call('SET', ik, fp .. '|' .. oid, 'PX', 86400000)
redis.call('INCR', p .. 'version')
return { 'reserved', oid, tostring(deadline) }
