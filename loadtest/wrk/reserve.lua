-- wrk: every request a new fan (fresh Idempotency-Key and e-mail) reserving one VIP 3-Day or
-- one VIP Camping pass, in turn (two million tickets: scripts/bench's rounds never sell out).
-- Keys carry a nonce per run and thread: without it, wrk's unseeded random numbers made the
-- measured run repeat the warm-up's keys, and a repeated key is a cheap replay, not a fan.
local counter = 0
local thread_id = 0
local nonce = ""
local types = { "vip-3-day", "vip-camping" }
setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
init = function()
  nonce = string.format("%x-%x-%x", os.time(), math.floor(os.clock() * 1e6), tid or 0)
end
request = function()
  counter = counter + 1
  local id = nonce .. "-" .. counter
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "bench-" .. id,
  }, '{"ticket_type":"' .. types[counter % 2 + 1] .. '","quantity":1,"email":"fan' .. id .. '@bench.example"}')
end
