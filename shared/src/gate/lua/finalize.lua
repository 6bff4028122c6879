-- ARGV: order_id, outcome (confirmed | rejected), tickets (JSON), ticket_type, quantity, email,
-- first (1: the database persisted it just now; 0: a redelivery of an order it already held),
-- amount_cents.
-- The database decided; mirror it in the gate once (redeliveries find it done).
local oid, outcome = ARGV[1], ARGV[2]
local ok = p .. 'order:' .. oid
redis.call('ZREM', p .. 'outbox', oid)
local o = load(oid)
if not o then
  -- The gate lost this order (Redis restarted empty): keep the read model answering, and if
  -- the event is back (restore.lua) count the database's sale in its stock, once: the order
  -- hash written here makes a redelivery find it 'already'. An order the database already
  -- held is in the books the restore counted: only a first persist adds to the stock.
  -- Its hold is long gone: `r` (see prelude.lua) carries no deadline.
  redis.call('HSET', ok, 'status', outcome,
    'r', '\t' .. ARGV[8] .. '\t' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. ARGV[6],
    'tickets', ARGV[3])
  local tk = p .. 'tt:' .. ARGV[4]
  if outcome == 'confirmed' and ARGV[7] == '1' and redis.call('EXISTS', tk) == 1 then
    local qty = tonumber(ARGV[5])
    redis.call('HINCRBY', tk, 'available', -qty)
    redis.call('HINCRBY', tk, 'sold', qty)
    redis.call('HINCRBY', p .. 'cust:' .. ARGV[6], ARGV[4], qty)
    redis.call('INCR', p .. 'version')
  end
  return { 'missing' }
end
if o.status ~= 'confirming' then return { 'already', o.status } end
if outcome == 'confirmed' then
  local tk = p .. 'tt:' .. o.tt
  redis.call('HINCRBY', tk, 'confirming', -o.qty)
  redis.call('HINCRBY', tk, 'sold', o.qty)
  redis.call('HSET', ok, 'status', 'confirmed', 'tickets', ARGV[3])
  redis.call('INCR', p .. 'version')
else
  release(oid, o, 'confirming', 'rejected')
end
return { 'applied' }
