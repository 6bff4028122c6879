-- ARGV: a fresh order-id salt. Turns a live event whose Redis state is behind the books (rolled
-- back to an older snapshot, see recovery.rs) into one being restored: paused, so restore.lua
-- and its companions rebuild it from the books as if Redis had lost it. A new salt, as there: a
-- key retried from the lost time would derive the id of an order the books may hold (ADR 30).
-- Answers 'absent' (nothing to rebuild: the watcher's restore handles that) or 'restoring'.
if redis.call('EXISTS', KEYS[1]) == 0 then return 'absent' end
if redis.call('HEXISTS', KEYS[1], 'restoring') == 0 then
  redis.call('HSET', KEYS[1], 'paused', 1, 'restoring', 1, 'oid_salt', ARGV[1])
end
return 'restoring'
