-- GCRA (generic cell rate algorithm), written once for the per-IP limiter
-- (ratelimit/limit.lua) and the per-e-mail limit in reserve.lua (both prepend this file):
-- one more request at `now` against the theoretical arrival time `tat` (nil or false: none
-- yet), requests `interval` ms apart sustained, `burst` at once. Returns the new TAT when the
-- request is allowed; else nil and how long to wait (ms). Nothing is stored here: a refusal
-- consumes nothing, so a client that waits that long gets through.
local function gcra(tat, now, interval, burst)
  local new_tat = math.max(tat or now, now) + interval
  local over = new_tat - now - interval * burst
  if over > 0 then return nil, over end
  return new_tat, 0
end
