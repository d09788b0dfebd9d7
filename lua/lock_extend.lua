-- lock_extend: compare-and-extend. Resets the lock's TTL only while it still holds OUR
-- token; a lock that lapsed is never re-taken here (someone may have held it since).
-- KEYS[1] the lock key
-- ARGV[1] our token   ARGV[2] the new ttl in milliseconds
-- Reply:  1  extended
--         0  the key is gone (our lease expired)
--        -1  another holder's token is there (our lease expired and was taken)
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur == false then
  return 0
end
return -1
