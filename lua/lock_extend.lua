-- lock_extend: compare-and-extend. Resets the lock's TTL only while it still holds OUR
-- token; a lock that lapsed is never re-taken here (someone may have held it since).
-- KEYS[1] the lock key
-- ARGV[1] our token   ARGV[2] the new ttl in milliseconds
-- Reply (LockExtendReply in src/internal/replyCodes.ts), by code:
--    1 Extended  extended
--    0 Expired   the key is gone (our lease expired)
--   -1 Taken     another holder's token is there (our lease expired and was taken)
local lockKey = KEYS[1]
local token, ttlMs = ARGV[1], ARGV[2]

local cur = redis.call('GET', lockKey)
if cur == token then
  redis.call('PEXPIRE', lockKey, ttlMs)
  return 1
end
if cur == false then
  return 0
end
return -1
