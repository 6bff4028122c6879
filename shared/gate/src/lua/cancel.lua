-- ARGV: order_id, client (the cancelling request's address; '': unknown). reserved ->
-- cancelled, stock back exactly once.
local oid, client = ARGV[1], ARGV[2] or ''
local now = now_ms()
local o = load(oid)
if not o then return { 'not_found' } end
if o.status == 'reserved' then
  redis.call('ZREM', p .. 'holds', oid)
  if o.deadline <= now then
    release(oid, o, 'held', 'expired')
    return { 'released', 'expired' }
  end
  -- A cancelled hold no longer counts against its client's cap (ADR 38): fans behind one
  -- carrier NAT who change their minds do not lock each other out. Only the client that took
  -- it frees it (its ledger is keyed by address); from another address it ends with its
  -- deadline, as before.
  if client ~= '' then redis.call('ZREM', p .. 'client:' .. client, oid) end
  release(oid, o, 'held', 'cancelled')
  return { 'released', 'cancelled' }
end
return { 'unchanged', o.status }
