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
--        -(the fence counter)      held by someone else (0 when nothing was counted yet);
--                                  queued when ARGV[3] asked. A hand-off message whose
--                                  fence is at or below that counter was made before this
--                                  refusal, and so was already over: stale.
-- A fence counter or waiter queue of the wrong type fails the call (WRONGTYPE, naming the
-- key) before anything is written, so the lock is not left taken for nobody.
local lockKey, fenceKey, waitersKey = KEYS[1], KEYS[2], KEYS[3]
local token, ttlMs, waitMs = ARGV[1], ARGV[2], ARGV[3]

--- @include "include/refusal"
--- @include "include/waiters"

local refusal = wrongTypeRefusal({fenceKey, waitersKey}, {'string', 'zset'})
if refusal then return refusal end
local countable, counter = fenceCountable()
if not countable then
  return redis.error_reply('WRONGTYPE ' .. fenceKey .. ' holds the wrong type: nothing written (no integer)')
end
if takeIfFree(token, ttlMs) then return redis.call('INCR', fenceKey) end
if waitMs ~= '' then queueWaiter(token, ttlMs, waitMs) end
return -(tonumber(counter) or 0)
