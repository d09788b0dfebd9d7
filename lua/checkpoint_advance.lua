-- checkpoint_advance: compare-and-set of the last checkpointed size, so two checkpointers
-- never sign two different heads for one size and sizes only grow. A checkpoint is
-- recorded only if the chain, read here atomically, holds it (the record at its sequence
-- carries its hash), and holds the checkpoint recorded before it and the caller's own
-- newest one: a chain rewritten, cut or replaced under a checkpoint is never signed past.
-- KEYS[1] chain       (list of record JSON, in sequence order)
-- KEYS[2] checkpoint  (string "<size> <eventHash>": the last checkpointed point)
-- ARGV[1] candidate size   ARGV[2] candidate eventHash (a head the caller verified)
-- ARGV[3] the caller's newest checkpoint size ('0' = none)   ARGV[4] its eventHash
-- Reply (CheckpointAdvanceReply in src/internal/replyCodes.ts), by code:
--   1 Advanced          {1, size, hash}: recorded: the candidate may be signed
--   2 AtOrPast          {2, size, hash}: not recorded: the last checkpoint (size, hash) is at
--                       or past it
--   3 MissesCheckpoint  {3, size, hash, found}: the chain does not hold checkpoint (size, hash);
--                       found is the eventHash at that sequence ('' = not a record of that
--                       sequence, false = the chain is shorter)
--   4 WrongType         {4, key}: KEYS[2] holds something else than a checkpoint: nothing written
local chain, fence = KEYS[1], KEYS[2]
local sizeArg, hash = ARGV[1], ARGV[2]
local size = tonumber(sizeArg)
local ownSize, ownHash = tonumber(ARGV[3]), ARGV[4]

local function found(n)
  local text = redis.call('LINDEX', chain, n - 1)
  if not text then return false end
  local ok, record = pcall(cjson.decode, text)
  if not ok or type(record) ~= 'table' or type(record.auditIntegrity) ~= 'table' then return '' end
  local integrity = record.auditIntegrity
  if integrity.sequence ~= n or type(integrity.eventHash) ~= 'string' then return '' end
  return integrity.eventHash
end

local t = redis.call('TYPE', fence).ok
if t ~= 'none' and t ~= 'string' then return {4, fence} end
local lastSize, lastHash = 0, ''
local stored = redis.call('GET', fence)
if stored then
  local s, h = string.match(stored, '^(%d+) (%S+)$')
  -- (More than 15 digits is no size a chain has, and would reach LINDEX as 1e+17.)
  if not s or #s > 15 then return {4, fence} end
  lastSize, lastHash = tonumber(s), h
end

local points = {{lastSize, lastHash}, {ownSize, ownHash}, {size, hash}}
for _, point in ipairs(points) do
  if point[1] > 0 then
    local at = found(point[1])
    if at ~= point[2] then return {3, point[1], point[2], at} end
  end
end
if lastSize >= size then return {2, lastSize, lastHash} end
redis.call('SET', fence, sizeArg .. ' ' .. hash)
return {1, size, hash}
