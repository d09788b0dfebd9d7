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
local lockKey, fenceKey, waitersKey = KEYS[1], KEYS[2], KEYS[3]
local token, ttlMs, waitMs = ARGV[1], ARGV[2], ARGV[3]

local member = token .. ' ' .. ttlMs
if redis.call('SET', lockKey, token, 'NX', 'PX', ttlMs) or redis.call('GET', lockKey) == token then
  redis.call('PEXPIRE', lockKey, ttlMs)
  redis.call('ZREM', waitersKey, member)
  return redis.call('INCR', fenceKey)
end
if waitMs ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', waitersKey, 'NX', now + tonumber(waitMs), member)
  -- The queue outlives its longest-waiting member (then it is only stale entries).
  local keep = tonumber(waitMs) + tonumber(ttlMs)
  if redis.call('PTTL', waitersKey) < keep then redis.call('PEXPIRE', waitersKey, keep) end
end
return 0
