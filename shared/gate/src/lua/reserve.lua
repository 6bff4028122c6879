-- ARGV: the per-e-mail rate limit (interval_ms, burst; interval 0: no limit), the event's salt
-- as buy knows it (a random one if it knows none yet), the per-client hold cap (0: none), then
-- per reservation: ticket_type, quantity, email, order_id, client (its address; '': unknown),
-- admitted (the place of the fan's admission token, verified by buy; '': none). Answers one
-- line per reservation, in order: its words separated
-- by tabs, the lines by newlines (one string is far cheaper to build here and to parse in buy
-- than nested arrays). Or, when buy's salt is not the event's, the single line `salt<TAB>S`.
-- The hot path of the on-sale spike. buy sends the reservations that arrive together as one
-- call (one event each), and they are decided here one after the other, exactly as if each
-- were its own call: the batch only shares the reads of the event and its ticket types and
-- writes their counters at the end (and before a reap). A refusal takes nothing.
local interval, burst, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local now = now_ms()
local tat_first
local function tat_s()
  tat_first = tat_first or tostring(now + interval)
  return tat_first
end
local m = redis.call('HMGET', KEYS[1], 'opens_at', 'paused', 'oid_salt')

-- An order's id is derived from its Idempotency-Key and the event's secret salt (buy computes
-- it, ADR 30): the key finds its order directly (no separate idempotency record), and nobody
-- without the salt can derive an id from a key. Seeding and restoring draw the salt (an event
-- seeded before salts existed gets one from the one-off `ops gate-upgrade`; until then it
-- answers paused). A buy that derived its ids from another salt is told the event's, and
-- nothing is written.
if m[1] then
  if not m[3] then
    local paused = {}
    for _ = 5, #ARGV, 6 do paused[#paused + 1] = 'paused' end
    return table.concat(paused, '\n')
  elseif m[3] ~= ARGV[3] then
    return 'salt\t' .. m[3]
  end
end

-- Ticket types read once per batch; `dirty` ones are written back before anything else
-- touches them (reap) and at the end.
local types = {}
local function type_of(tt)
  local t = types[tt]
  if t == nil then
    local v = redis.call('HMGET', p .. 'tt:' .. tt, 'limit', 'hold_ms', 'price', 'available', 'held')
    t = v[1] and { limit = tonumber(v[1]), hold = tonumber(v[2]), price = tonumber(v[3]),
                   price_s = v[3], avail = tonumber(v[4]), held = tonumber(v[5]) } or false
    -- Every hold of this batch on this type has the same deadline.
    if t then
      t.deadline = now + t.hold
      t.deadline_s = tostring(t.deadline)
      t.reply = 'reserved\t' .. t.deadline_s
    end
    types[tt] = t
  end
  return t
end
local function flush()
  for tt, t in pairs(types) do
    if t and t.dirty then
      redis.call('HSET', p .. 'tt:' .. tt, 'available', t.avail, 'held', t.held)
      t.dirty = false
    end
  end
end

local reaped = false
-- The hold ledger's new entries, added with one ZADD at the end (none of them is due before).
local holds = { 'ZADD', p .. 'holds' }

-- Lua turns a number into a string with sprintf("%.14g"): for a 13-digit millisecond time
-- that was a fifth of this script's whole cost. So times are made strings once per batch
-- (each type's `deadline_s`, the first `~tat`) and small counts once per value.
local strs = {}
local function str(n)
  local s = strs[n]
  if not s then
    s = tostring(n)
    strs[n] = s
  end
  return s
end

-- The same key with the same request answers the first answer again, whatever happened since;
-- the same key with another request is refused.
local function earlier(ok, tt, qty_s, email)
  -- What the key was first used for (ticket type, quantity and e-mail are all bounded); built
  -- only here: a new order writes it as part of `r`, one string fewer on the common path.
  local fp = tt .. '\n' .. qty_s .. '\n' .. email
  local r = redis.call('HGET', ok, 'r')
  if not r then return nil end
  local hold, _, first = parse_r(r)
  if first ~= fp then return 'idem_conflict' end
  return 'replay\t' .. ((hold and hold ~= '') and hold or '0')
end

-- Strings become numbers once per batch too: Lua's tonumber runs strtod twice per call, and
-- four calls per reservation were a twelfth of its cost (callgrind).
local opens = m[1] and tonumber(m[1])
-- The waiting room (room.lua, ADR 59): while it is on, only an admitted fan takes a hold. Buy
-- verified the token's signature, expiry, event and mailbox; the place it names is taken out
-- of the room's shopping count once the fan holds tickets (its hold counts in the stock the
-- room admits against from then on). Read once per batch.
local room = p .. 'room'
local room_on = m[1] and redis.call('HGET', room, 'on') == '1'
local qtys = {}
local function reserve(tt, qty_s, email, oid, client, admitted)
  if not m[1] then return 'unknown_event' end
  local qty = qtys[qty_s]
  if not qty then
    qty = tonumber(qty_s)
    qtys[qty_s] = qty
  end
  local ok = p .. 'order:' .. oid

  -- Every refusal first looks for an earlier answer under the key (a retry of a reservation
  -- that succeeded gets its order back even when the sale has sold out since).
  -- Being rebuilt after Redis lost its state (restore.lua): no holds until the books settle.
  if m[2] then return earlier(ok, tt, qty_s, email) or 'paused' end
  if now < opens then return earlier(ok, tt, qty_s, email) or ('too_early\t' .. str(opens - now)) end
  if room_on and admitted == '' then return earlier(ok, tt, qty_s, email) or 'not_admitted' end
  local t = type_of(tt)
  if not t then return earlier(ok, tt, qty_s, email) or 'unknown_ticket_type' end
  -- Sold out, and this batch already reaped what was due: the storm of refusals after a
  -- sell-out costs one read each (a fan also over the per-e-mail rate limit hears sold out).
  if t.avail <= 0 and reaped then return earlier(ok, tt, qty_s, email) or 'sold_out' end

  -- One hash per customer and event: tickets held or bought per ticket type, and the
  -- per-e-mail rate limit's theoretical arrival time ('~tat': no ticket type id has a '~').
  local ck = p .. 'cust:' .. email
  local c = redis.call('HMGET', ck, tt, '~tat')
  local have = 0
  if c[1] then have = tonumber(c[1]) end

  -- Expired holds go back to stock here rather than on a timer. Only a reservation they
  -- stand in the way of needs them, so the common path skips it (the availability refresh
  -- reaps too). Reaping can free this customer's own expired hold: read both again. Once
  -- a reap finds fewer due than it may take, nothing else in the batch is due.
  if (t.avail < qty or have + qty > t.limit) and not reaped then
    flush()
    reaped = reap(now, 25) < 25
    types = {}
    t = type_of(tt)
    have = tonumber(redis.call('HGET', ck, tt) or '0')
  end

  -- The per-e-mail limit (lua/gcra.lua): only a hold taken spends budget, so neither a replay
  -- nor any refusal consumes it.
  local new_tat
  if interval > 0 then
    local wait
    new_tat, wait = gcra(c[2] and tonumber(c[2]), now, interval, burst)
    if not new_tat then
      return earlier(ok, tt, qty_s, email) or ('rate_limited\t' .. str(wait))
    end
  end

  if t.avail <= 0 then return earlier(ok, tt, qty_s, email) or 'sold_out' end
  if have + qty > t.limit then
    return earlier(ok, tt, qty_s, email) or ('limit\t' .. str(t.limit) .. '\t' .. str(math.max(t.limit - have, 0)))
  end
  if t.avail < qty then return earlier(ok, tt, qty_s, email) or ('not_enough\t' .. str(t.avail)) end

  -- The per-client cap (ADR 38): at most `cap` holds taken from one address within a hold
  -- time, so one client cannot sit on the stock under many e-mail addresses. Its ledger is
  -- the holds' deadlines, and it expires with the last of them.
  local clk
  if cap > 0 and client ~= '' then
    clk = p .. 'client:' .. client
    redis.call('ZREMRANGEBYSCORE', clk, '-inf', now)
    if redis.call('ZCARD', clk) >= cap then
      local first = redis.call('ZRANGE', clk, 0, 0, 'WITHSCORES')[2]
      return earlier(ok, tt, qty_s, email) or ('client_holds\t' .. str(tonumber(first) - now) .. '\t' .. str(t.hold))
    end
  end

  -- The order, written only if its key is new (one call for the check and the write); a key
  -- already used gets its first answer, and nothing else is written.
  local deadline = t.deadline_s
  local amount = qty == 1 and t.price_s or str(qty * t.price)
  -- `r` with the key's fingerprint (see earlier), joined in one go.
  local r = deadline .. '\t' .. amount .. '\t' .. tt .. '\n' .. qty_s .. '\n' .. email
  if redis.call('HSETNX', ok, 'r', r) == 0 then
    return earlier(ok, tt, qty_s, email)
  end
  if clk then
    redis.call('ZADD', clk, deadline, oid)
    if redis.call('PEXPIRETIME', clk) < t.deadline then redis.call('PEXPIREAT', clk, deadline) end
  end
  if new_tat then
    -- One tat per batch and interval at most: a fan's first hold starts at `now`.
    redis.call('HSET', ck, tt, str(have + qty), '~tat', new_tat == now + interval and tat_s() or str(new_tat))
  else
    redis.call('HSET', ck, tt, str(have + qty))
  end
  -- It may be a hash that had only its '~tat' left, due to end (prelude.lua): it holds a ticket
  -- again.
  redis.call('PERSIST', ck)
  if room_on then redis.call('ZREM', room .. ':admitted', admitted) end
  holds[#holds + 1] = deadline
  holds[#holds + 1] = oid
  -- Counted only once the writes above went through (see the loop below).
  t.avail, t.held, t.dirty = t.avail - qty, t.held + qty, true
  return t.reply
end

local out = {}
-- Redis does not undo a script that fails halfway: one reservation's error (a key of an
-- unexpected type, say) must not leave the others' orders written and their stock uncounted.
-- It answers that reservation alone with the error; the rest of the batch goes on.
for i = 5, #ARGV, 6 do
  local ok, r = pcall(reserve, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5])
  if not ok then
    local msg = type(r) == 'table' and tostring(r.err) or tostring(r)
    r = 'error\t' .. string.gsub(msg, '[\t\n]', ' ')
  end
  out[#out + 1] = r
end
flush()
if #holds > 2 then redis.call(unpack(holds)) end
return table.concat(out, '\n')
