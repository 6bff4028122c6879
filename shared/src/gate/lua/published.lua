-- ARGV: order_id. Its message is in Pub/Sub: the relay need not publish it again.
local ok = p .. 'order:' .. ARGV[1]
redis.call('ZREM', p .. 'outbox', ARGV[1])
if redis.call('EXISTS', ok) == 1 then redis.call('HSET', ok, 'published', '1') end
return 1
