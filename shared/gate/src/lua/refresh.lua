-- The "expire" transition plus a consistent read of the event for the availability snapshot.
local now = now_ms()
reap(now, 500)
local m = redis.call('HMGET', KEYS[1], 'opens_at', 'catalog', 'tt_ids', 'paused')
if not m[1] then return nil end
-- `paused`: being rebuilt after Redis lost its state (restore.lua), reservations refused.
local out = { m[1], m[2], tostring(now), m[4] and '1' or '0' }
for id in string.gmatch(m[3], '[^,]+') do
  local c = redis.call('HMGET', p .. 'tt:' .. id, 'capacity', 'available', 'held', 'confirming', 'sold')
  table.insert(out, id)
  for i = 1, 5 do table.insert(out, c[i] or '0') end
end
return out
