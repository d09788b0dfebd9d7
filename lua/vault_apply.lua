-- vault_apply: compare-and-apply one vault diff, fenced on the version, and log it.
-- The diff commits only if no other writer committed since the snapshot it was computed
-- on; the version then moves by exactly one and the change log gets one entry
-- "<version> <commit id> <JSON array of changed token ids>" so replica caches can catch
-- up without reading the whole vault. A call writes everything or nothing: a key of the
-- wrong type fails the GET or the first HSET before any write, and `log`, written last,
-- is checked first.
-- KEYS[1] version  KEYS[2] tokens (hash)  KEYS[3] log (list)  KEYS[4] the store's lock
-- ARGV[1] expected version ('' = never mutated)
-- ARGV[2] commit id   ARGV[3] JSON array of changed token ids   ARGV[4] log bound
-- ARGV[5] '1' when this is a lock-free attempt that must yield to a lock holder, else ''
-- ARGV[6] n, the number of sets; ARGV[7 .. 6+2n] token, record JSON pairs;
-- ARGV[7+2n ..] tokens to delete
-- Reply: {1, new version}      committed ({1, version} unchanged when the diff is empty)
--        {2, current version}  this commit id is already logged (a re-sent call): done
--        {0, current version|nil}  fence conflict, nothing written
--        {3, key}              `log` holds the wrong Redis type; nothing written
--        {4, current version|nil}  another writer holds the lock and ARGV[5] asked to yield
local t = redis.call('TYPE', KEYS[3]).ok
if t ~= 'none' and t ~= 'list' then return {3, KEYS[3]} end
local cur = redis.call('GET', KEYS[1])
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then return {4, cur} end
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  local n = tonumber(ARGV[6])
  if n == 0 and #ARGV == 6 then
    return {1, cur}
  end
  for i = 7, 6 + 2 * n, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
  for i = 7 + 2 * n, #ARGV do
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
  local nv = (tonumber(cur) or 0) + 1
  redis.call('SET', KEYS[1], nv)
  redis.call('RPUSH', KEYS[3], nv .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
  return {1, tostring(nv)}
end
local since, now = tonumber(ARGV[1]) or 0, tonumber(cur)
if now and now > since then
  for _, e in ipairs(redis.call('LRANGE', KEYS[3], since - now, -1)) do
    if string.match(e, '^%d+ (%S+)') == ARGV[2] then
      return {2, cur}
    end
  end
end
return {0, cur}
