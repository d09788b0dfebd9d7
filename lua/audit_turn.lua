-- audit_turn: ask for a turn at the audit chain without a record yet (a writer that just
-- met contention): take the store's lock if it is free (or already ours) and return the
-- head to build on, else join the lock's waiter queue, whose turn arrives as a hand-off
-- message carrying the head (see include/claim). Writes nothing of the chain. The head
-- returned is only what to build on: the append proves it continues what the caller saw.
-- KEYS[1] head (the last record's auditIntegrity JSON)
-- KEYS[2] the store's lock   KEYS[3] its waiters
-- ARGV[1] the claim token   ARGV[2] the lock's TTL in ms   ARGV[3] how long to queue, in ms
-- Reply (AuditTurnReply in src/internal/replyCodes.ts), by code:
--   1 Granted  {1, head JSON | nil}: the lock holds ARGV[1] now; build on this head
--   0 Queued   {0}: another writer holds the lock; ARGV[1] waits in the queue (its place kept)
-- A head or waiter queue of the wrong type fails the call (WRONGTYPE, naming the key)
-- before anything is written, so the lock is not left taken for nobody.
local headKey, lockKey, waitersKey = KEYS[1], KEYS[2], KEYS[3]
local token, ttlMs, queueMs = ARGV[1], ARGV[2], ARGV[3]

--- @include "include/refusal"
--- @include "include/waiters"

local refusal = wrongTypeRefusal({headKey, waitersKey}, {'string', 'zset'})
if refusal then return refusal end
if takeIfFree(token, ttlMs) then return {1, redis.call('GET', headKey)} end
queueWaiter(token, ttlMs, queueMs)
return {0}
