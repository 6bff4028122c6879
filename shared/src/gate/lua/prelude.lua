-- Shared by every gate script (prepended at load). All keys of one event share the hash tag
-- in KEYS[1] ("{ev:EVENT}:meta"), so each script touches a single Redis Cluster slot.
local p = string.sub(KEYS[1], 1, #KEYS[1] - 4)

-- Redis' own clock: one clock for every instance of every function.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An order's hash keeps what it is for in one field, `fp` = ticket type, quantity and e-mail
-- separated by newlines (the same string the Idempotency-Key is checked against): three
-- fields fewer to write on the hot path.
local function load(oid)
  local v = redis.call('HMGET', p .. 'order:' .. oid, 'status', 'fp', 'hold_expires_at', 'amount')
  if not v[1] then return nil end
  local tt, qty, email = string.match(v[2] or '', '^([^\n]*)\n([^\n]*)\n(.*)$')
  if not v[2] then -- rebuilt by an older finalize.lua: the fields of their own
    local o = redis.call('HMGET', p .. 'order:' .. oid, 'tt', 'qty', 'email')
    tt, qty, email = o[1], o[2], o[3]
  end
  return { status = v[1], tt = tt, qty = tonumber(qty), email = email,
           deadline = tonumber(v[3] or '0'), amount = v[4] }
end

-- Return an order's tickets from `from` (held | confirming) to stock, once.
local function release(oid, o, from, status)
  local tk = p .. 'tt:' .. o.tt
  redis.call('HINCRBY', tk, from, -o.qty)
  redis.call('HINCRBY', tk, 'available', o.qty)
  local ck = p .. 'cust:' .. o.email
  if redis.call('HINCRBY', ck, o.tt, -o.qty) <= 0 then redis.call('HDEL', ck, o.tt) end
  redis.call('HSET', p .. 'order:' .. oid, 'status', status)
  redis.call('INCR', p .. 'version')
end

-- Expire one hold if it is due. Status `reserved` guards against doing it twice.
local function expire_one(oid, now)
  redis.call('ZREM', p .. 'holds', oid)
  local o = load(oid)
  if o and o.status == 'reserved' and o.deadline <= now then
    release(oid, o, 'held', 'expired')
    return true
  end
  return false
end

-- Expire up to `limit` due holds; bounded so no call is slow.
local function reap(now, limit)
  local due = redis.call('ZRANGEBYSCORE', p .. 'holds', '-inf', now, 'LIMIT', 0, limit)
  local n = 0
  for _, oid in ipairs(due) do
    if expire_one(oid, now) then n = n + 1 end
  end
  return n
end
