-- ARGV: epoch, then pairs of writer, mark. After a repair from the books (ADR 56), each
-- process's field in `marks` is raised to the mark the books saved for it in this epoch: the
-- writes the rollback took are mirrored again, and must not be found missing a second time.
-- Nothing rises in another epoch. Returns how many fields rose.
if (redis.call('HGET', KEYS[1], 'oid_salt') or '') ~= ARGV[1] then return 0 end
local marks, n = p .. 'marks', 0
for i = 2, #ARGV, 2 do
  if tonumber(redis.call('HGET', marks, ARGV[i]) or '0') < tonumber(ARGV[i + 1]) then
    redis.call('HSET', marks, ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
