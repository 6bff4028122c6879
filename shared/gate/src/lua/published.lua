-- ARGV: order_id, redeliver_after_ms. Its message is in Pub/Sub. The order stays in the outbox,
-- due again after redeliver_after_ms: if it is still not persisted by then (finalize removes it)
-- the relay publishes it once more, so a message lost by the broker cannot lose a paid order.
local ok = p .. 'order:' .. ARGV[1]
if redis.call('EXISTS', ok) == 1 then
  redis.call('HSET', ok, 'published', '1')
  local o = load(ARGV[1])
  if o.status == 'confirming' then
    redis.call('ZADD', p .. 'outbox', 'XX', now_ms() + tonumber(ARGV[2]), ARGV[1])
    return 1
  end
end
redis.call('ZREM', p .. 'outbox', ARGV[1])
return 1
