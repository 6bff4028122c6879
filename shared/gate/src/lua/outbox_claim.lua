-- ARGV: older_than_ms, limit, lease_ms. Claims up to `limit` orders due in the outbox more than
-- older_than_ms ago by Redis' clock: each is pushed lease_ms ahead, so the relay of every other
-- buy instance passes over it until then (one instance, one order). The claimer moves it on
-- itself (published.lua) or, if it fails or dies, it is due again once the lease runs out.
local now = now_ms()
local key = p .. 'outbox'
local due = redis.call('ZRANGE', key, '-inf', now - tonumber(ARGV[1]), 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[2]))
for _, oid in ipairs(due) do
  redis.call('ZADD', key, 'XX', now + tonumber(ARGV[3]), oid)
end
return due
