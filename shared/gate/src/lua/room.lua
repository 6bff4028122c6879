-- The waiting room of an event (issue "A fair waiting room", ADR 59). One script for its three
-- calls, so that every call first brings the room up to now the same way:
--   ARGV[1] = 'join',   ARGV[2] = a fresh random salt, ARGV[3] = identity, ARGV[4] = a new
--             queue id (kept only if the identity has none);
--   ARGV[1] = 'status', ARGV[2] = salt, ARGV[3] = queue id;
--   ARGV[1] = 'peek',   ARGV[2] = salt (the room as a snapshot shows it).
-- Keys (all under the event's hash tag): `room` (hash: on, rate, cap, window_ms, claim_ms, paused; pre,
-- drawn, salt, shuffled, joined, upto, credit, at), `room:who` (identity → queue id),
-- `room:pre` (the queue ids that joined before the opening, in arrival order), `room:draw`
-- (sorted set: the pre-queue in its drawn order), `room:place` (a later joiner's queue id →
-- place), `room:admitted` (sorted set: each admitted place, scored by the end of its window, or
-- before its claim by the end of the time to claim), `room:claimed` (places whose fan came).
--
-- Before the opening, a fan who joins gets a queue id and no place yet. From the first call at
-- or after the opening, the pre-queue is drawn: places 1..pre in the order of SHA-1(salt ‖ id),
-- the salt drawn by that first caller at that moment, so the order is decided after the last
-- pre-queue join and nobody could know it before; the draw goes a chunk at a time (see draw).
-- A fan who joins later gets the next place.
-- Admission moves `upto` forward: `rate` places a second (at most one second of credit), never
-- past the last place, never more fans shopping at once (admitted, window not over) than `cap`,
-- nor than the tickets available (a hold that expires makes its tickets available again). An admitted fan counts
-- as shopping until its window ends or it holds tickets (reserve.lua). Paused, nothing moves.
-- Sold out: nothing available now (holds may still expire and bring tickets back).
-- Returns {status, place, upto, joined, active, available+held, sold_out, queue id, rate,
-- the end of an admitted fan's window in ms (0: none), paused, and once drawn: the pre-queue's
-- size, the draw's salt and the key of the last admitted pre-queue place (see drawn_so_far)}; status is off | before (a peek before
-- the opening) | open (a peek after the draw) | pending (no place yet: before the opening or
-- the draw's end; a peek while drawing) | waiting | admitted | missed (admitted, window over;
-- joining again queues at the back) | unknown (no such queue id).

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

-- The draw's pace: a chunk of CHUNK pre-queue fans per DRAW_EVERY_MS since the last chunk, up
-- to MAX_CHUNKS in one call. The draw of 50,000 in one call blocked Redis for about half a
-- second at the opening, and 500 drawn by every call still made the opening's calls wait in
-- line behind each other (the spike's join p95 was 0.3 s). A chunk of 250 holds Redis about
-- 1 ms: while calls come often, the draw takes a fifth of Redis (40,000 fans: about 0.8 s) and
-- a call waits 1 ms at most; when they are few (only the snapshots' peeks, 4 a second per
-- instance), each draws up to 2,000 (8 ms), so a quiet opening is drawn within seconds too.
local CHUNK = 250
local DRAW_EVERY_MS = 5
local MAX_CHUNKS = 8

-- The draw: the first call at or after the opening fixes the pre-queue and the salt; each call
-- then keys the next chunk by SHA-1(salt ‖ id) into `room:draw` (a sorted set: a pre-queue
-- fan's place is its rank there). Its score is the hash's first 52 bits, exact in a double;
-- on a tie, the set orders by id. Until the last chunk the order is not known, and nobody is
-- admitted. Returns whether the draw is done.
local function draw(salt, r_pre, r_drawn, r_salt, r_drawn_at)
  if not r_salt then
    r_pre, r_drawn, r_salt = redis.call('LLEN', room .. ':pre'), 0, salt
    redis.call('HSET', room, 'salt', salt, 'pre', r_pre, 'drawn', 0, 'at', now)
  end
  local chunks = MAX_CHUNKS
  if r_drawn_at then
    chunks = math.min(math.floor((now - tonumber(r_drawn_at)) / DRAW_EVERY_MS), MAX_CHUNKS)
    if chunks < 1 then return false end
  end
  local pre, drawn = tonumber(r_pre), tonumber(r_drawn)
  -- Never past the pre-queue fixed at the opening (a clock that stepped back could let a join
  -- into the list after it).
  local last = math.min(drawn + chunks * CHUNK, pre) - 1
  local ids = last >= drawn and redis.call('LRANGE', room .. ':pre', drawn, last) or {}
  if #ids > 0 then
    local add = { 'ZADD', room .. ':draw' }
    for _, id in ipairs(ids) do
      add[#add + 1] = tonumber(string.sub(redis.sha1hex(r_salt .. id), 1, 13), 16)
      add[#add + 1] = id
    end
    redis.call(unpack(add))
    drawn = drawn + #ids
  end
  local done = drawn >= pre
  redis.call('HSET', room, 'drawn', drawn, 'shuffled', done and 1 or 0, 'drawn_at', now)
  return done
end

-- Brings the room up to now; returns whether the sale is open.
local function advance(salt)
  local r = redis.call('HMGET', room, 'on', 'rate', 'cap', 'window_ms', 'paused', 'joined',
    'shuffled', 'upto', 'credit', 'at', 'pre', 'drawn', 'salt', 'claim_ms', 'drawn_at')
  if r[1] ~= '1' then return false end
  local opens = tonumber(redis.call('HGET', KEYS[1], 'opens_at') or '0')
  if now < opens then return false end
  if r[7] ~= '1' and not draw(salt, r[11], r[12], r[13], r[15]) then
    -- Drawing: credit accrues (at most a second's worth), nobody is admitted yet.
    return true
  end
  local rate, cap, window = tonumber(r[2] or '0'), tonumber(r[3] or '0'), tonumber(r[4] or '0')
  -- An admitted fan first has `claim_ms` to come for its token (a fan who left the queue must
  -- not hold a place among the shopping for a whole window); its window starts at the claim.
  local claim = math.min(tonumber(r[14] or tostring(window)), window)
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
  -- Against the tickets available: held ones belong to fans who hold them (if their holds
  -- expire, the tickets are available again and admission resumes), and with none available
  -- every waiting fan is told sold out.
  local _, avail = stock()
  local n = math.floor(credit / 1000)
  n = math.min(n, joined - upto, cap - active, avail - active)
  if n > 0 then
    for place = upto + 1, upto + n do
      redis.call('ZADD', room .. ':admitted', now + claim, place)
    end
    upto = upto + n
    credit = credit - n * 1000
  end
  redis.call('HSET', room, 'upto', upto, 'credit', credit, 'at', now)
  return true
end

-- Once drawn, the draw's salt and the key of the last admitted pre-queue place are public: the
-- order is decided, and a pre-queue fan's page can then tell its own turn (and roughly its
-- place) from the snapshot alone, SHA-1(salt ‖ its queue id) against that key, instead of
-- 40,000 pages asking buy for their places in the same second.
-- (`shuffled`, `pre`, `salt`: the room hash's fields, as `answer` read them.)
local function drawn_so_far(upto, shuffled, r_pre, salt)
  if shuffled ~= '1' then return 0, '', 0 end
  local pre = tonumber(r_pre or '0')
  local key = 0
  if upto > 0 and pre > 0 then
    local last = redis.call('ZRANGE', room .. ':draw', math.min(upto, pre) - 1, math.min(upto, pre) - 1, 'WITHSCORES')
    key = tonumber(last[2] or '0')
  end
  return pre, salt or '', key
end

local function answer(status, place, id, until_ms)
  local r = redis.call('HMGET', room, 'upto', 'joined', 'rate', 'paused', 'shuffled', 'pre', 'salt')
  local free, avail = stock()
  local upto = tonumber(r[1] or '0')
  local pre, salt, key = drawn_so_far(upto, r[5], r[6], r[7])
  return { status, place or 0, upto, tonumber(r[2] or '0'),
    redis.call('ZCARD', room .. ':admitted'), free, avail == 0 and 1 or 0, id or '',
    tonumber(r[3] or '0'), until_ms or 0, r[4] == '1' and 1 or 0, pre, salt, key }
end

-- A fan's place: the next one on joining after the opening (`room:place`), or its rank in the
-- draw once the draw is done (a rank among the fans drawn so far is no place); nil before
-- (or for no such fan).
local function place_of(id)
  local place = redis.call('HGET', room .. ':place', id)
  if place then return tonumber(place) end
  if redis.call('HGET', room, 'shuffled') ~= '1' then return nil end
  local rank = redis.call('ZRANK', room .. ':draw', id)
  return rank and rank + 1
end

local function status_of(id, open)
  local place = place_of(id)
  if not place then
    -- Before the opening or while drawing, a fan of the pre-queue has no place yet (an id
    -- nobody was given reads the same until the draw is done: telling them apart would need
    -- a set of the pre-queue's ids, for no fan's good).
    if not open or redis.call('HGET', room, 'shuffled') ~= '1' then
      return answer('pending', 0, id)
    end
    return answer('unknown', 0, id)
  end
  local upto = tonumber(redis.call('HGET', room, 'upto') or '0')
  if place > upto then return answer('waiting', place, id) end
  local ends = redis.call('ZSCORE', room .. ':admitted', place)
  if ends then return answer('admitted', place, id, tonumber(ends)) end
  return answer('missed', place, id)
end

local op, salt = ARGV[1], ARGV[2]
-- Off, or on for an event not seeded yet (its opening unknown): the shop is open to all.
if redis.call('HGET', room, 'on') ~= '1' or not redis.call('HGET', KEYS[1], 'opens_at') then
  return { 'off', 0, 0, 0, 0, 0, 0, '', 0, 0, 0, 0, '', 0 }
end
local open = advance(salt)
if op == 'peek' then
  if not open then return answer('before', 0, '') end
  -- Open, and the pre-queue not drawn yet: the room as a whole has no order yet.
  return answer(redis.call('HGET', room, 'shuffled') == '1' and 'open' or 'pending', 0, '')
end
if op == 'status' then return status_of(ARGV[3], open) end

-- join: one place per identity; joining again answers the same one, except to a fan whose
-- window ended unused (`missed`): it queues again, at the back.
local id = redis.call('HGET', room .. ':who', ARGV[3])
if not id then
  id = ARGV[4]
  redis.call('HSET', room .. ':who', ARGV[3], id)
  local joined = redis.call('HINCRBY', room, 'joined', 1)
  if open then
    redis.call('HSET', room .. ':place', id, joined)
    -- Admission may have stopped only for want of fans: this one may go in at once.
    advance(salt)
  else
    redis.call('RPUSH', room .. ':pre', id)
  end
end
-- Before the opening a join needs only its queue id back: the room's numbers are in the
-- snapshot, and 50,000 of these may come within seconds.
if not open then
  return { 'pending', 0, 0, tonumber(redis.call('HGET', room, 'joined') or '0'), 0, 0, 0, id, 0, 0, 0, 0, '', 0 }
end
local now_at = status_of(id, open)
if now_at[1] == 'missed' then
  redis.call('HSET', room .. ':place', id, redis.call('HINCRBY', room, 'joined', 1))
  advance(salt)
  now_at = status_of(id, open)
end
-- The claim: an admitted fan's first join since its admission starts its window.
if now_at[1] == 'admitted' and redis.call('HSETNX', room .. ':claimed', now_at[2], 1) == 1 then
  redis.call('ZADD', room .. ':admitted', now + tonumber(redis.call('HGET', room, 'window_ms') or '0'), now_at[2])
  return status_of(id, open)
end
return now_at
