-- ARGV: writer, known, epoch, then groups of 8, one per order of a batch: order_id, outcome (confirmed
-- | rejected), tickets (JSON), ticket_type, quantity, email, first (1: the database persisted it
-- just now, or a repair counts it; 0: a redelivery of an order it already held), amount_cents.
-- The database decided; mirror it in the gate once per order (redeliveries find it done).
-- Returns one word per order: applied, missing, behind (Redis had it in an older state) or
-- already; then the writer's mark and the event's epoch.
--
-- The mark (ADR 56): every call counts up its writer's field in `marks` (a consume-order process;
-- Redis applies calls in order, so the field only grows). `known` is the highest mark the writer
-- was answered. A Redis that went back in time (a failover to a replica that lagged, a restored
-- snapshot) keeps a prefix of its writes: if it lost any call of this writer, it lost the last
-- one too, and the field is below `known`. Then, if the event is live, nothing is applied and
-- the answer is {'went_back', field}: the caller repairs the event from the books first.
-- `known` = 'repair' (the repair's own calls) skips the check. Marks count within one epoch of
-- the event, its order-id salt (`epoch`: the one the writer last saw): a seed, a restore after
-- Redis came back empty and a rebuild draw a new one, and the marks start again from nothing
-- there without anything having gone back in time.

-- Set below, before any order is finalized: whether the event is live (seeded, not being
-- restored), and the writer's known mark (or 'repair').
local live, known

-- Count an order's tickets as sold, taken from `from` (confirming, held or available).
local function sell(oid, o, from, tickets)
  local tk = p .. 'tt:' .. o.tt
  redis.call('HINCRBY', tk, from, -o.qty)
  redis.call('HINCRBY', tk, 'sold', o.qty)
  local ok = p .. 'order:' .. oid
  redis.call('HSET', ok, 'tickets', tickets)
  set_status(ok, 'confirmed')
end

local function finalize(oid, outcome, tickets, tt, qty, email, first, amount)
  local ok = p .. 'order:' .. oid
  redis.call('ZREM', p .. 'outbox', oid)
  local o = load(oid)
  if not o then
    -- The gate lost this order (Redis restarted empty): keep the read model answering, and if
    -- the event is back (restore.lua) count the database's sale in its stock, once: the order
    -- hash written here makes a redelivery find it 'already'. An order the database already
    -- held is in the books the restore counted: only a first persist adds to the stock (and a
    -- repair, ADR 56, which mirrors every decided order of an event that went back in time).
    -- Its hold is long gone: `r` (see prelude.lua) carries no deadline.
    redis.call('HSET', ok,
      'r', '\t' .. amount .. '\t' .. tt .. '\n' .. qty .. '\n' .. email,
      'tickets', tickets)
    set_status(ok, outcome)
    local tk = p .. 'tt:' .. tt
    if outcome == 'confirmed' and first == '1' and redis.call('EXISTS', tk) == 1 then
      local n = tonumber(qty)
      redis.call('HINCRBY', tk, 'available', -n)
      redis.call('HINCRBY', tk, 'sold', n)
      count_customer(email, tt, n)
    elseif outcome == 'confirmed' and live then
      -- A redelivery of an order a live event lost: whether its stock counts it cannot be told
      -- here (a rollback took it; a restore would have counted it and written the order). It
      -- is marked, and a repair from the books counts it (a restore unmarks what it writes).
      redis.call('HSET', ok, 'uncounted', 1)
    end
    return 'missing'
  end
  if o.status == 'confirmed' and outcome == 'confirmed' and known == 'repair'
      and redis.call('HDEL', ok, 'uncounted') == 1 then
    local tk = p .. 'tt:' .. o.tt
    redis.call('HINCRBY', tk, 'available', -o.qty)
    redis.call('HINCRBY', tk, 'sold', o.qty)
    count_customer(o.email, o.tt, o.qty)
    return 'behind'
  end
  if o.status == 'confirmed' or o.status == 'rejected' then return 'already' end
  if o.status == 'confirming' then
    if outcome == 'confirmed' then sell(oid, o, 'confirming', tickets)
    else release(oid, o, 'confirming', 'rejected') end
    return 'applied'
  end
  -- Redis holds an older state of this paid order than the books: it was rolled back (a
  -- failover to a replica that lagged, a restore from a snapshot). The books decided: mirror
  -- their decision from wherever Redis left the order, so that a confirmed order is never
  -- expired, cancelled or resold by Redis.
  if o.status == 'reserved' then
    redis.call('ZREM', p .. 'holds', oid)
    if outcome == 'confirmed' then sell(oid, o, 'held', tickets)
    else release(oid, o, 'held', 'rejected') end
  elseif outcome == 'confirmed' then
    -- expired or cancelled: its tickets went back on sale here, and the books sold them. If
    -- Redis sold them again meanwhile, `available` goes below zero until the books reject
    -- those orders and their release brings it back.
    sell(oid, o, 'available', tickets)
    count_customer(o.email, o.tt, o.qty)
  else
    set_status(ok, 'rejected')
  end
  return 'behind'
end

local marks, writer, epoch = p .. 'marks', ARGV[1], ARGV[3]
known = ARGV[2]
local mark = tonumber(redis.call('HGET', marks, writer) or '0')
local now_epoch = redis.call('HGET', KEYS[1], 'oid_salt') or ''
live = redis.call('HEXISTS', KEYS[1], 'catalog') == 1 and redis.call('HEXISTS', KEYS[1], 'restoring') == 0
if known == 'repair' then
  -- An event Redis lost, or one being rebuilt, is the restore's to mirror (it counts the books'
  -- sales itself): a repair would count them twice.
  if redis.call('HEXISTS', KEYS[1], 'catalog') == 0 or redis.call('HEXISTS', KEYS[1], 'restoring') == 1 then
    return { 'restoring' }
  end
elseif known ~= '' and epoch == now_epoch and mark < tonumber(known)
    and redis.call('HEXISTS', KEYS[1], 'catalog') == 1
    and redis.call('HEXISTS', KEYS[1], 'restoring') == 0 then
  -- (A lost or restoring event is the restore's: finalize mirrors what it can, as before.)
  return { 'went_back', tostring(mark) }
end
local out, ids = {}, {}
for i = 4, #ARGV, 8 do
  out[#out + 1] = finalize(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
    ARGV[i + 5], ARGV[i + 6], ARGV[i + 7])
  ids[#ids + 1] = ARGV[i]
end
out[#out + 1] = tostring(redis.call('HINCRBY', marks, writer, 1))
out[#out + 1] = now_epoch
-- Wakes the payments waiting for these outcomes (buy, ADR 35).
redis.call('PUBLISH', p .. 'finalized', table.concat(ids, ' '))
return out
