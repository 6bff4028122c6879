-- The waiting room of an event (issue "A fair waiting room"). One script for its three calls,
-- so that every call first brings the room up to now the same way:
--   ARGV[1] = 'join',   ARGV[2] = a fresh random salt, ARGV[3] = identity, ARGV[4] = a new
--             queue id (kept only if the identity has none);
--   ARGV[1] = 'status', ARGV[2] = salt, ARGV[3] = queue id;
--   ARGV[1] = 'peek',   ARGV[2] = salt (the room as a snapshot shows it).
-- Keys (all under the event's hash tag): `room` (hash: on, rate, cap, window_ms, paused; pre,
-- joined, shuffled, upto, credit, at), `room:who` (identity → queue id), `room:pre` (the queue
-- ids that joined before the opening, in arrival order), `room:place` (queue id → place),
-- `room:admitted` (sorted set: each admitted place, scored by the end of its shopping window).
--
-- Before the opening, a fan who joins gets a queue id and no place yet. The first call at or
-- after the opening shuffles the pre-queue once: places 1..pre in the order of SHA-1(salt ‖ id),
-- the salt drawn by that caller at that moment, so the order is decided after the last
-- pre-queue join and nobody could know it before. A fan who joins later gets the next place.
-- Admission moves `upto` forward: `rate` places a second (at most one second of credit), never
-- past the last place, never more fans shopping at once (admitted, window not over) than `cap`,
-- nor than the tickets not sold (available + held: a hold may expire). An admitted fan counts
-- as shopping until its window ends. Paused, nothing moves.
-- Sold out: nothing available now (holds may still expire and bring tickets back).
-- Returns {status, place, upto, joined, active, available+held, sold_out, queue id}; status is
-- off | before | pending (joined before the opening, place not drawn yet) | waiting |
-- admitted | missed (admitted, window over) | unknown (no such queue id).

local room = p .. 'room'
local now = now_ms()

local function stock()
  local ids = redis.call('HGET', KEYS[1], 'tt_ids') or ''
  local free, avail = 0, 0
  for tt in string.gmatch(ids, '[^,]+') do
    local c = redis.call('HMGET', p .. 'tt:' .. tt, 'available', 'held')
    avail = avail + math.max(tonumber(c[1] or '0'), 0)
    free = free + math.max(tonumber(c[1] or '0'), 0) + math.max(tonumber(c[2] or '0'), 0)
  end
  return free, avail
end

local function shuffle(salt)
  local ids = redis.call('LRANGE', room .. ':pre', 0, -1)
  local keyed = {}
  for i, id in ipairs(ids) do keyed[i] = { redis.sha1hex(salt .. id), id } end
  table.sort(keyed, function(a, b) return a[1] < b[1] end)
  for i, k in ipairs(keyed) do redis.call('HSET', room .. ':place', k[2], i) end
  redis.call('HSET', room, 'shuffled', 1, 'pre', #ids, 'at', now)
end

-- Brings the room up to now; returns whether the sale is open.
local function advance(salt)
  local r = redis.call('HMGET', room, 'on', 'rate', 'cap', 'window_ms', 'paused', 'joined',
    'shuffled', 'upto', 'credit', 'at')
  if r[1] ~= '1' then return false end
  local opens = tonumber(redis.call('HGET', KEYS[1], 'opens_at') or '0')
  if now < opens then return false end
  if r[7] ~= '1' then shuffle(salt) end
  local rate, cap, window = tonumber(r[2] or '0'), tonumber(r[3] or '0'), tonumber(r[4] or '0')
  local joined, upto = tonumber(r[6] or '0'), tonumber(r[8] or '0')
  -- Credit accrues from the opening on the first call after it.
  local credit, at = tonumber(r[9] or '0'), tonumber(r[10] or tostring(opens))
  redis.call('ZREMRANGEBYSCORE', room .. ':admitted', '-inf', now)
  if r[5] == '1' then
    redis.call('HSET', room, 'at', now, 'credit', 0)
    return true
  end
  -- Credit in thousandths of a fan, at most one second's worth.
  credit = math.min(credit + rate * math.max(now - at, 0), rate * 1000)
  local active = redis.call('ZCARD', room .. ':admitted')
  local free = stock()
  local n = math.floor(credit / 1000)
  n = math.min(n, joined - upto, cap - active, free - active)
  if n > 0 then
    for place = upto + 1, upto + n do
      redis.call('ZADD', room .. ':admitted', now + window, place)
    end
    upto = upto + n
    credit = credit - n * 1000
  end
  redis.call('HSET', room, 'upto', upto, 'credit', credit, 'at', now)
  return true
end

local function answer(status, place, id)
  local r = redis.call('HMGET', room, 'upto', 'joined')
  local free, avail = stock()
  return { status, place or 0, tonumber(r[1] or '0'), tonumber(r[2] or '0'),
    redis.call('ZCARD', room .. ':admitted'), free, avail == 0 and 1 or 0, id or '' }
end

local function status_of(id, open)
  local place = tonumber(redis.call('HGET', room .. ':place', id) or '0')
  if place == 0 then
    if not open then return answer('before', 0, id) end
    return answer('unknown', 0, id)
  end
  local upto = tonumber(redis.call('HGET', room, 'upto') or '0')
  if place > upto then return answer('waiting', place, id) end
  if redis.call('ZSCORE', room .. ':admitted', place) then return answer('admitted', place, id) end
  return answer('missed', place, id)
end

local op, salt = ARGV[1], ARGV[2]
-- Off, or on for an event not seeded yet (its opening unknown): the shop is open to all.
if redis.call('HGET', room, 'on') ~= '1' or not redis.call('HGET', KEYS[1], 'opens_at') then
  return { 'off', 0, 0, 0, 0, 0, 0, '' }
end
local open = advance(salt)
if op == 'peek' then return answer(open and 'open' or 'before', 0, '') end
if op == 'status' then return status_of(ARGV[3], open) end

-- join: one place per identity; joining again answers the same one.
local id = redis.call('HGET', room .. ':who', ARGV[3])
if not id then
  id = ARGV[4]
  redis.call('HSET', room .. ':who', ARGV[3], id)
  local joined = redis.call('HINCRBY', room, 'joined', 1)
  if open then
    redis.call('HSET', room .. ':place', id, joined)
  else
    redis.call('RPUSH', room .. ':pre', id)
  end
end
if not open then return answer('pending', 0, id) end
return status_of(id, open)
