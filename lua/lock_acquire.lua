-- lock_acquire: take the lock if it is free and hand out the next fencing number, or
-- join the queue of waiters that the release hands the lock to, in deadline order.
-- The lock key's value is the holder's random token set with SET NX PX, exactly like
-- haechi-store-redis, so holders of either library exclude each other. The fence
-- counter moves only when the lock is taken, atomically with it, so fence numbers of
-- successive holders of one key strictly increase (the counter never expires).
-- A call that finds its own token (a re-sent call whose first reply was lost, or a
-- waiter the lock was handed to whose message went missing) gets the lock as well,
-- with a fresh TTL and a fresh fence, instead of waiting on itself.
-- KEYS[1] the lock key   KEYS[2] its fence counter   KEYS[3] its waiters (sorted set,
--         member "<token> <ttl ms>", score = the waiter's deadline in server ms)
--         (all three in one hash slot)
-- ARGV[1] our random token   ARGV[2] ttl in milliseconds
-- ARGV[3] how long we will wait, in ms, to join the queue ('' = do not queue)
-- Reply: the fence number (>= 1)   acquired
--        0                         held by someone else; queued when ARGV[3] asked
local member = ARGV[1] .. ' ' .. ARGV[2]
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[3], member)
  return redis.call('INCR', KEYS[2])
end
if ARGV[3] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[3], 'NX', now + tonumber(ARGV[3]), member)
  -- The queue outlives its longest-waiting member (then it is only stale entries).
  local keep = tonumber(ARGV[3]) + tonumber(ARGV[2])
  if redis.call('PTTL', KEYS[3]) < keep then redis.call('PEXPIRE', KEYS[3], keep) end
end
return 0
