-- vault_apply: compare-and-apply one vault diff, fenced on the version, and log it.
-- The diff commits only if no other writer committed since the snapshot it was computed
-- on; the version then moves by exactly one and the change log gets one entry
-- "<version> <commit id> <JSON array of changed token ids>" so replica caches can catch
-- up without reading the whole vault. A call writes everything or nothing: a key of the
-- wrong type fails the GET or the first HSET before any write, and `log`, written last,
-- is checked first. A lock-free attempt may also take or give back the store's lock
-- here, so the adaptive policy's lock costs no round trip of its own.
-- KEYS[1] version  KEYS[2] tokens (hash)  KEYS[3] log (list)  KEYS[4] the store's lock
-- ARGV[1] expected version ('' = never mutated)
-- ARGV[2] commit id   ARGV[3] JSON array of changed token ids   ARGV[4] log bound
-- ARGV[5] '1': a lock-free attempt, which yields to any other lock holder; '' ignores the lock
-- ARGV[6] the attempt's claim token ('' = none): while the lock holds it, the attempt does
--         not yield, and committing releases it (DEL and PUBLISH on ARGV[8])
-- ARGV[7] a TTL in ms: take the lock with ARGV[6] should the fence reject ('' = do not)
-- ARGV[8] the lock's release channel
-- ARGV[9] n, the number of sets; ARGV[10 .. 9+2n] token, record JSON pairs;
-- ARGV[10+2n ..] tokens to delete
-- Reply: {1, new version}      committed ({1, version} unchanged when the diff is empty)
--        {2, current version}  this commit id is already logged (a re-sent call): done
--        {0, current version|nil, took}  fence conflict, nothing written but the lock:
--                              took = 1 when the lock is now ARGV[6]'s
--        {3, key}              `log` holds the wrong Redis type; nothing written
--        {4, current version|nil}  another writer holds the lock and ARGV[5] asked to yield
local t = redis.call('TYPE', KEYS[3]).ok
if t ~= 'none' and t ~= 'list' then return {3, KEYS[3]} end
local cur = redis.call('GET', KEYS[1])
local lock = false
if ARGV[5] == '1' then
  lock = redis.call('GET', KEYS[4])
  if lock and lock ~= ARGV[6] then return {4, cur} end
end
local function release()
  if lock then
    redis.call('DEL', KEYS[4])
    redis.call('PUBLISH', ARGV[8], '')
  end
end
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  local n = tonumber(ARGV[9])
  if n == 0 and #ARGV == 9 then
    release()
    return {1, cur}
  end
  for i = 10, 9 + 2 * n, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  for i = 10 + 2 * n, #ARGV do
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
  local nv = (tonumber(cur) or 0) + 1
  redis.call('SET', KEYS[1], nv)
  redis.call('RPUSH', KEYS[3], nv .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
  release()
  return {1, tostring(nv)}
end
local since, now = tonumber(ARGV[1]) or 0, tonumber(cur)
if now and now > since then
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], since - now, -1)) do
    if string.match(e, '^%d+ (%S+)') == ARGV[2] then
      release()
      return {2, cur}
    end
  end
end
local took = 0
if ARGV[5] == '1' and ARGV[7] ~= '' then
  redis.call('SET', KEYS[4], ARGV[6], 'PX', ARGV[7])
  took = 1
end
return {0, cur, took}
