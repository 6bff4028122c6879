-- ARGV: order_id. reserved -> cancelled, stock back exactly once.
local oid = ARGV[1]
local now = now_ms()
local o = load(oid)
if not o then return { 'not_found' } end
if o.status == 'reserved' then
  redis.call('ZREM', p .. 'holds', oid)
  if o.deadline <= now then
    release(oid, o, 'held', 'expired')
    return { 'released', 'expired' }
  end
  release(oid, o, 'held', 'cancelled')
  return { 'released', 'cancelled' }
end
return { 'unchanged', o.status }
