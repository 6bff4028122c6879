-- wrk: every request a new fan (fresh Idempotency-Key and e-mail) reserving one VIP 3-Day or
-- one VIP Camping pass, in turn (two million tickets: scripts/bench's rounds never sell out).
-- Keys carry a nonce per run and thread: without it, wrk's unseeded random numbers made the
-- measured run repeat the warm-up's keys, and a repeated key is a cheap replay, not a fan.
-- Requests are concatenated by hand: wrk.format (header tables, a metatable lowering every
-- name, string.format per line) cost wrk several µs a request more than the hello-world's static
-- request, CPU taken from the services on these shared cores.
local counter = 0
local thread_id = 0
local head, fan = "", ""
local types = { "vip-3-day", "vip-camping" }
setup = function(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end
init = function()
  local nonce = string.format("%x-%x-%x", os.time(), math.floor(os.clock() * 1e6), tid or 0)
  head = "POST " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"]
    .. "\r\nContent-Type: application/json\r\nIdempotency-Key: bench-" .. nonce .. "-"
  fan = '","quantity":1,"email":"fan' .. nonce .. "-"
end
request = function()
  counter = counter + 1
  local body = '{"ticket_type":"' .. types[counter % 2 + 1] .. fan .. counter .. '@bench.example"}'
  return head .. counter .. "\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body
end
