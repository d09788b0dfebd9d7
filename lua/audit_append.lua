-- audit_append: compare-and-append one record to the audit chain, fenced on the head.
-- The record commits only if the head is still the one it was built on, so the chain
-- cannot fork. A call writes everything or nothing: a key of the wrong type fails the
-- GET or the RPUSH before any write, and `commits`, written last, is checked first.
-- A lock-free attempt may also take or give back the store's lock here, so the adaptive
-- policy's lock costs no round trip of its own (the lock only decides who goes next).
-- KEYS[1] head:hash  (the last record's eventHash; absent = empty chain)
-- KEYS[2] chain      (list of record JSON, one per element, in sequence order)
-- KEYS[3] head       (the last record's auditIntegrity JSON)
-- KEYS[4] commits    (hash: sequence -> commit id of our appends, the last 1000 kept)
-- KEYS[5] lock       (the store's lock key)
-- ARGV[1] expected head hash ('' = empty chain)
-- ARGV[2] record JSON   ARGV[3] its auditIntegrity JSON   ARGV[4] its eventHash
-- ARGV[5] its sequence  ARGV[6] the commit id, unique to this call (a re-send repeats it)
-- ARGV[7] '1': a lock-free attempt, which yields to any other lock holder; '' ignores the lock
-- ARGV[8] the attempt's claim token ('' = none): while the lock holds it, the attempt does
--         not yield, and committing releases it (DEL and PUBLISH on ARGV[10])
-- ARGV[9] a TTL in ms: take the lock with ARGV[8] should the fence reject ('' = do not)
-- ARGV[10] the lock's release channel
-- Reply: {1}                  committed
--        {2}                  this call already committed (a re-sent call whose reply was
--                             lost): do not append again
--        {0, head JSON | nil, took}  fence conflict; the current head, so the retry needs no
--                             read; took = 1 when the lock is now ARGV[8]'s
--        {3, key}             `commits` holds the wrong Redis type; nothing written
--        {4}                  another writer holds the lock and ARGV[7] asked to yield: nothing
--                             written (liveness only; the fence alone keeps the chain whole)
local t = redis.call('TYPE', KEYS[4]).ok
if t ~= 'none' and t ~= 'hash' then return {3, KEYS[4]} end
local lock = false
if ARGV[7] == '1' then
  lock = redis.call('GET', KEYS[5])
  if lock and lock ~= ARGV[8] then return {4} end
end
local function release()
  if lock then
    redis.call('DEL', KEYS[5])
    redis.call('PUBLISH', ARGV[10], '')
  end
end
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[3])
  redis.call('SET', KEYS[1], ARGV[4])
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[6])
  redis.call('HDEL', KEYS[4], tonumber(ARGV[5]) - 1000)
  release()
  return {1}
end
if redis.call('HGET', KEYS[4], ARGV[5]) == ARGV[6] then
  release()
  return {2}
end
local took = 0
if ARGV[7] == '1' and ARGV[9] ~= '' then
  redis.call('SET', KEYS[5], ARGV[8], 'PX', ARGV[9])
  took = 1
end
return {0, redis.call('GET', KEYS[3]), took}
