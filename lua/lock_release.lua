-- lock_release: compare-and-delete, or hand the lock straight to the next waiter.
-- Acts only while the lock still holds OUR token, so a holder whose TTL lapsed never
-- frees a later holder's lock (the same check as haechi-store-redis's release, which
-- therefore also works on our locks). A waiter past its deadline gave up and is skipped.
-- The next waiter gets the lock with its own TTL and a fresh fence, and the message
-- "<its token> <fence>" tells it so without a round trip; with no one waiting the lock
-- is deleted and the message is empty (anyone may try now). Also called by a waiter
-- that gives up: it leaves the queue, and hands the lock on if it was just given it.
-- KEYS[1] the lock key   KEYS[2] its fence counter   KEYS[3] its waiters (as in lock_acquire)
-- ARGV[1] our token   ARGV[2] the release channel ("<lock key>:released")
-- ARGV[3] our waiter entry ("<token> <ttl ms>", '' = none)
-- Reply (LockReleaseReply in src/internal/replyCodes.ts), by code:
--   2 HandedOn  handed to the next waiter (and published)
--   1 Released  released (and published)
--   0 NotOurs   not ours (expired or taken): nothing changed but our leaving the queue
-- A key of the wrong type fails the call (WRONGTYPE) before anything is written: a fence
-- counter's, checked while the lock is ours, would otherwise fail the hand-off's INCR
-- after the lock was already handed on, and its waiter would never be told.
local lockKey, fenceKey, waitersKey = KEYS[1], KEYS[2], KEYS[3]
local token, releaseChannel, ownEntry = ARGV[1], ARGV[2], ARGV[3]

--- @include "include/refusal"
--- @include "include/waiters"

local ours = redis.call('GET', lockKey) == token
if ours and not fenceCountable() then
  return redis.error_reply('WRONGTYPE ' .. fenceKey .. ' (the fence counter) holds the wrong type or no integer: nothing released')
end
if ownEntry ~= '' then redis.call('ZREM', waitersKey, ownEntry) end
if not ours then return 0 end
if handOnOrFree(releaseChannel, '') then return 2 end
return 1
