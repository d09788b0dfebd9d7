-- lock_release: compare-and-delete. Deletes the lock only while it still holds OUR
-- token, so a holder whose TTL lapsed never frees a later holder's lock (the same
-- check as haechi-store-redis's release, which therefore also works on our locks).
-- On a real release it publishes on the key's release channel to wake waiters at once.
-- KEYS[1] the lock key
-- ARGV[1] our token   ARGV[2] the release channel ("<lock key>:released")
-- Reply: 1  released (and published)
--        0  not ours any more (expired or taken): nothing deleted, nothing published
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return 1
end
return 0
