-- wrk: every request a new fan (fresh Idempotency-Key and e-mail) reserving one VIP 3-Day.
local counter = 0
local thread_id = 0
setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
request = function()
  counter = counter + 1
  local id = string.format("%d-%d-%d", tid or 0, counter, math.random(1, 1e9))
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "bench-" .. id,
  }, '{"ticket_type":"vip-3-day","quantity":1,"email":"fan' .. id .. '@bench.example"}')
end
