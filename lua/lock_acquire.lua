-- lock_acquire: take the lock if it is free and hand out the next fencing number.
-- The lock key's value is the holder's random token set with SET NX PX, exactly like
-- haechi-store-redis, so holders of either library exclude each other. The fence
-- counter moves only when the lock is taken, atomically with it, so fence numbers of
-- successive holders of one key strictly increase (the counter never expires).
-- A call that finds its own token (a re-sent call whose first reply was lost) gets the
-- lock as well, with a fresh TTL and a fresh fence, instead of waiting on itself.
-- KEYS[1] the lock key   KEYS[2] its fence counter (same hash slot)
-- ARGV[1] our random token   ARGV[2] ttl in milliseconds
-- Reply: the fence number (>= 1)   acquired
--        0                         held by someone else, nothing written
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return redis.call('INCR', KEYS[2])
end
return 0
