-- vault_changes: what changed in the vault since a version, read atomically, with the
-- proof that Redis still continues the history a replica's cache saw.
-- A cache at version V that saw commit C logged at V becomes exactly the current vault by
-- taking, for every token the log names after V, its current value, but only while Redis
-- still carries C at V: the latest entry for V names C and the entries after it are
-- V+1 .. the current version, in order. Every entry pushed after C's is for a later
-- version, so while fewer than ARGV[4] commits followed it an unbroken history keeps it:
-- a lower version, no entry for V or another commit at V is a rewind (a failover to a
-- lagging replica, FLUSHALL, eviction, a restored snapshot). A gap (haechi-store-redis
-- bumps the version without logging), a trimmed log or an entry that does not decode
-- means 'reload'. `size` lets the replica check its token count against Redis's.
-- KEYS[1] version  KEYS[2] tokens (hash)  KEYS[3] log (list)  KEYS[4] log:mark (read only for ARGV[3])
-- ARGV[1] known version ('' = never mutated)
-- ARGV[2] the commit id the cache saw logged at ARGV[1] ('' = none: never mutated, or a
--         version written without a log entry)
-- ARGV[3] a commit id to look for among the entries after ARGV[1] ('' = none)
-- ARGV[4] most entries worth replaying before a reload is cheaper (the log's bound)
-- ARGV[5] how many seconds a log entry is kept at least (absent = 0)
-- Reply: {version|nil, status, size, detail, found, token, value|nil, token, value|nil, ...}
--   size: HLEN of tokens; found: 1 when ARGV[3] is logged after ARGV[1], else 0
-- status (VaultChangesReply in src/internal/replyCodes.ts), by code:
--   'same' Same        nothing changed: detail = the commit id logged at the current version ('' = none)
--   'delta' Delta      as 'same', then the changed tokens
--   'reload' Reload    detail = '' (a gap, a trimmed log) or the version of an entry that does not decode;
--                      with ARGV[3], a sixth element: 1 when a miss of ARGV[3] proves nothing,
--                      2 nothing at any age (the log lost: include/vaultlog's missCode);
--                      found is then looked up in the whole log
--   'rewound' Rewound  detail = the commit id now logged at ARGV[1] ('' = none)
--   'wrongtype' WrongType  detail = the key that holds the wrong Redis type (version nil, size 0)
local versionKey, tokensKey, logKey, markKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local known, seen, wanted, bound = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local keptSeconds = tonumber(ARGV[5] or '') or 0

--- @include "include/refusal"
--- @include "include/vaultlog"

-- A read refused: a key of the wrong type, named (its first read here; the HGETs below
-- cannot fail then), or Redis's own error.
local function refused(key, reply)
  if refusalOn(key, reply) == reply then return reply end
  return {false, 'wrongtype', 0, key, 0}
end

local cur = redis.pcall('GET', versionKey)
if isError(cur) then return refused(versionKey, cur) end
local size = redis.pcall('HLEN', tokensKey)
if isError(size) then return refused(tokensKey, size) end
local since, now = tonumber(known) or 0, tonumber(cur) or 0
-- A reload, and for a lost reply (ARGV[3]) whether its commit is logged all the same:
-- {.., found, unproven} (include/vaultlog: the whole log, not only what a replay reads).
local function reload(detail)
  if wanted == '' then return {cur, 'reload', size, detail, 0} end
  if cur ~= false and tonumber(cur) == nil then return {cur, 'reload', size, detail, 0, 1} end
  if not typeIs(logKey, 'list') then return {false, 'wrongtype', 0, logKey, 0} end
  local found, proven = loggedAfter(since, now, wanted)
  local mark = redis.pcall('GET', markKey)
  if isError(mark) then return refused(markKey, mark) end
  return {cur, 'reload', size, detail, found and 1 or 0, found and 0 or missCode(proven, mark)}
end
if cur ~= false and tonumber(cur) == nil then
  return reload('')
end
if now < since then
  return {cur, 'rewound', size, '', 0}
end
if now - since >= bound then
  return reload('')
end
local proving = seen ~= '' and since > 0
local count = now - since + (proving and 1 or 0)
local entries = count > 0 and redis.pcall('LRANGE', logKey, -count, -1) or {}
if isError(entries) then return refused(logKey, entries) end
-- "<version> <commit id> <seconds> <ids JSON>" (an older entry has no seconds).
local function parse(entry)
  local v, commit, rest = string.match(entry, '^(%d+) (%S+) (.*)$')
  return tonumber(v), commit, rest and (string.match(rest, '^%d+ (.*)$') or rest)
end
local start = 0
if proving then
  for i = #entries, 1, -1 do
    local v, commit = parse(entries[i])
    if v == since then
      if commit ~= seen then
        return {cur, 'rewound', size, commit, 0}
      end
      start = i
      break
    end
  end
  if start == 0 then
    return {cur, 'rewound', size, '', 0}
  end
end
if #entries - start ~= now - since then
  return reload('')
end
local reply, named, found = {cur, 'delta', size, proving and seen or '', 0}, {}, 0
for i = start + 1, #entries do
  local v, commit, ids = parse(entries[i])
  if v ~= since + i - start then
    return reload('')
  end
  if commit == wanted then
    found = 1
  end
  local decoded, list = pcall(cjson.decode, ids)
  -- (A JSON object decodes to a table too, and names no id to ipairs: only a non-empty
  -- list, as every commit logs, is taken.)
  local keys = 0
  if decoded and type(list) == 'table' then
    for _ in pairs(list) do keys = keys + 1 end
  end
  if keys == 0 or keys ~= #list then
    return reload(tostring(v))
  end
  for _, id in ipairs(list) do
    if type(id) ~= 'string' then
      return reload(tostring(v))
    end
    if not named[id] then
      named[id] = true
      reply[#reply + 1] = id
      reply[#reply + 1] = redis.call('HGET', tokensKey, id)
    end
  end
  reply[4] = commit
end
if now == since then
  reply[2] = 'same'
end
reply[5] = found
return reply
