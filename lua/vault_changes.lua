-- vault_changes: what changed in the vault since a version, read atomically.
-- A replica's cache at version V becomes exactly the current vault by taking, for every
-- token the log names after V, its current value. The log proves it is complete only if
-- its entries after V are contiguous up to the current version; a writer that bumps the
-- version without logging (haechi-store-redis) or a trimmed log means 'reload'.
-- KEYS[1] version  KEYS[2] tokens (hash)  KEYS[3] log (list)
-- ARGV[1] known version ('' = never mutated)
-- ARGV[2] a commit id to look for among the entries after ARGV[1] ('' = none)
-- ARGV[3] most entries worth replaying before a reload is cheaper
-- Reply: {current version|nil, 'same'}
--        {current version|nil, 'reload'}
--        {current version, 'delta', found (1/0), token, value|nil, token, value|nil, ...}
local cur = redis.call('GET', KEYS[1])
local since, now = tonumber(ARGV[1]) or 0, tonumber(cur) or 0
if cur ~= false and tonumber(cur) == nil then
  return {cur, 'reload'}
end
if now == since then
  return {cur, 'same'}
end
if now < since or now - since > tonumber(ARGV[3]) then
  return {cur, 'reload'}
end
local entries = redis.call('LRANGE', KEYS[3], since - now, -1)
if #entries ~= now - since then
  return {cur, 'reload'}
end
local reply, seen, found = {cur, 'delta', 0}, {}, 0
for i, e in ipairs(entries) do
  local v, commit, ids = string.match(e, '^(%d+) (%S+) (.*)$')
  if tonumber(v) ~= since + i then
    return {cur, 'reload'}
  end
  if commit == ARGV[2] then
    found = 1
  end
  for _, id in ipairs(cjson.decode(ids)) do
    if not seen[id] then
      seen[id] = true
      reply[#reply + 1] = id
      reply[#reply + 1] = redis.call('HGET', KEYS[2], id)
    end
  end
end
reply[3] = found
return reply
