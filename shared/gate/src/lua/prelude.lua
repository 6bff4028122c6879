-- Shared by every gate script (prepended at load). All keys of one event share the hash tag
-- in KEYS[1] ("{ev:EVENT}:meta"), so each script touches a single Redis Cluster slot.
local p = string.sub(KEYS[1], 1, #KEYS[1] - 4)

-- Redis' own clock: one clock for every instance of every function.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- An order's hash. A reservation writes one field, `r`: the hold's deadline, the amount, and
-- what the order is for (ticket type, quantity and e-mail, separated by newlines: the string
-- the Idempotency-Key is checked against), tab-separated; with HSETNX, so the write is also the
-- check that the key is new (ADR 32). Until a transition writes `status`, the order is
-- `reserved`. (Orders written before `r` existed are rewritten by `ops gate-upgrade`.)
--
-- `r` as hold, amount and `fp`; `fp` as ticket type, quantity and e-mail.
local function parse_r(r)
  return string.match(r, '^([^\t]*)\t([^\t]*)\t(.*)$')
end
local function split_fp(fp)
  return string.match(fp or '', '^([^\n]*)\n([^\n]*)\n(.*)$')
end

local function load(oid)
  local ok = p .. 'order:' .. oid
  local v = redis.call('HMGET', ok, 'status', 'r')
  if not v[2] then return nil end
  local hold, amount, fp = parse_r(v[2])
  local tt, qty, email = split_fp(fp)
  return { status = v[1] or 'reserved', tt = tt, qty = tonumber(qty), email = email,
           deadline = tonumber(hold) or 0, amount = amount }
end

-- Redis' memory is bounded (noeviction: a full Redis refuses every write, ADR 41). What grows
-- with the sale is bounded by it (confirmed orders and their customers: at most one per ticket;
-- holds: reaped), and what grows with attempts lives only so long: an order that ended stays
-- readable a day when it expired (its fan may come back to see why), ten minutes when its fan
-- cancelled it (a cancel frees the client's cap, so reserve-and-cancel is bounded only by the
-- per-IP rate: what it leaves must be bounded by that rate over a short life, not pile up per
-- attempt for a day), a week when the books rejected it (its refund is on its way); GET order
-- answers 404 after that.
local ENDED_TTL_MS = { expired = 86400000, cancelled = 600000, rejected = 604800000 }

-- An order's status, with the life its status gives it (a confirmed order keeps no TTL).
local function set_status(ok, status)
  redis.call('HSET', ok, 'status', status)
  local ttl = ENDED_TTL_MS[status]
  if ttl then redis.call('PEXPIRE', ok, ttl) else redis.call('PERSIST', ok) end
end

-- `qty` tickets of ticket type `tt` join the count of the customer `email` (held or bought):
-- the customer's hash stays while it counts any.
local function count_customer(email, tt, qty)
  local ck = p .. 'cust:' .. email
  redis.call('HINCRBY', ck, tt, qty)
  redis.call('PERSIST', ck)
end

-- An order's tickets leave its customer's count. A hash that counts none any more keeps only
-- the per-e-mail rate limit's arrival time, which means nothing once it has passed (GCRA
-- treats a past arrival time as none): the hash ends then, so churn leaves no customer behind
-- for longer than the rate limit remembers it.
local function uncount_customer(o)
  local ck = p .. 'cust:' .. o.email
  if redis.call('HINCRBY', ck, o.tt, -o.qty) <= 0 then
    redis.call('HDEL', ck, o.tt)
    if redis.call('HLEN', ck) == 1 then
      local tat = tonumber(redis.call('HGET', ck, '~tat'))
      if tat then redis.call('PEXPIREAT', ck, math.max(tat, now_ms() + 1)) end
    end
  end
end

-- Return an order's tickets from `from` (held | confirming) to stock, once.
local function release(oid, o, from, status)
  local tk = p .. 'tt:' .. o.tt
  redis.call('HINCRBY', tk, from, -o.qty)
  redis.call('HINCRBY', tk, 'available', o.qty)
  uncount_customer(o)
  set_status(p .. 'order:' .. oid, status)
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
