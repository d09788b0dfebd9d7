-- audit_append: compare-and-append one record to the audit chain, fenced on the head.
-- The record commits only if the head is still the one it was built on, so the chain
-- cannot fork. All writes follow the fence check: a rejected call writes nothing.
-- KEYS[1] head:hash  (the last record's eventHash; absent = empty chain)
-- KEYS[2] chain      (list of record JSON, one per element, in sequence order)
-- KEYS[3] head       (the last record's auditIntegrity JSON)
-- ARGV[1] expected head hash ('' = empty chain)
-- ARGV[2] record JSON   ARGV[3] its auditIntegrity JSON
-- ARGV[4] its eventHash ARGV[5] its sequence
-- Reply: {1, chain length}   committed
--        {2}                 this very record is already in the chain (a re-sent or
--                            retried call whose first reply was lost): do not append again
--        {0, head JSON|nil}  fence conflict; the current head, so the caller needs no read
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  local len = redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[3])
  redis.call('SET', KEYS[1], ARGV[4])
  return {1, len}
end
if cur == ARGV[4] then
  return {2}
end
local at = redis.call('LINDEX', KEYS[2], tonumber(ARGV[5]) - 1)
if at and string.find(at, '"eventHash":"' .. ARGV[4] .. '"', 1, true) then
  return {2}
end
return {0, redis.call('GET', KEYS[3])}
