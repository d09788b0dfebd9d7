-- audit_append: compare-and-append one record to the audit chain, fenced on the head.
-- The record commits only if the head is still the one it was built on, the head keys
-- agree with the list, the record is the head's successor, and the chain still holds
-- what the caller last saw: so the chain cannot fork, restart on a non-empty list, or
-- be built on after a rewind. A call writes everything or nothing: a key of the wrong
-- type is refused by a read before any write, and `commits` by its own HSET, the
-- first write, where the record commits (checked with TYPE before any other reply).
-- Nothing is ever repaired here: inconsistent keys are reported as found.
-- Fast path: the lock, the head keys and the commit ids' floor (one MGET) and LLEN, then
-- an HGET or EXISTS of commits (the kept ids not lost), TIME, HSET, RPUSH, MSET (and now and then the trim
-- of old commit ids); the list's elements
-- are read only where the fence says "empty" or disagrees (or the caller last saw a head
-- other than the one the record was built on).
-- A lock-free attempt may also take, queue for or hand on the store's lock here, so the
-- adaptive policy's turns cost no round trip of their own (the lock only decides who goes next).
-- KEYS[1] head:hash  (the last record's eventHash; absent = empty chain)
-- KEYS[2] chain      (list of record JSON, one per element, in sequence order)
-- KEYS[3] head       (the last record's auditIntegrity JSON)
-- KEYS[4] commits    (hash: sequence -> "<commit id> <unix seconds>" of our appends, kept while
--                     among the last 1000 records or younger than ARGV[14])
-- KEYS[5] lock       (the store's lock key)   KEYS[6] its fence counter   KEYS[7] its waiters
-- KEYS[8] commits:floor ("<lowest sequence kept in commits> <its id's stamp>[ <when the ids
--                     were found lost>]"; below it a miss proves nothing)
-- ARGV[1] expected head hash: the record's previousHash ('' = empty chain)
-- ARGV[2] record JSON   ARGV[3] its auditIntegrity JSON   ARGV[4] its eventHash
-- ARGV[5] its sequence  ARGV[6] the commit id, unique to this call (a re-send repeats it)
-- ARGV[7] '1': a lock-free attempt, which yields to any other lock holder; 'keep <ms>': the
--         same, and its commit keeps a lock it holds, for <ms>, instead of handing it on;
--         '' ignores the lock
-- ARGV[8] the attempt's claim token ('' = none): while the lock holds it, the attempt does
--         not yield, and committing hands it on to the next waiter with the new head
--         (its auditIntegrity JSON) or frees it (PUBLISH on ARGV[10] either way)
-- ARGV[9] a TTL in ms: take the lock with ARGV[8] should the fence reject, or hold it that
--         long once handed it ('' = neither)
-- ARGV[10] the lock's release channel
-- ARGV[11] queue for a hand-off this long (ms) when yielding ('' = do not)
-- ARGV[12] the sequence of the head the caller last saw, ARGV[13] its eventHash
--          ('' or absent = none): the chain must still hold that record
-- ARGV[14] how many seconds a commit id is kept at least (absent = 0: the last 1000 only)
-- ARGV[15] the sequence of the caller's own last commit, ARGV[16] its commit id ('' or
--          absent = none): `commits` missing it where it is kept is a loss (see `idsLost`)
-- Reply (AuditAppendReply in src/internal/replyCodes.ts), by code:
--   1 Committed         {1, kept}: committed; kept = 1 when the attempt keeps the lock (ARGV[7] 'keep')
--   2 AlreadyCommitted  {2}: this call already committed (a re-sent call whose reply was
--                       lost): do not append again, whoever holds the lock now
--   0 Conflict          {0, head JSON | nil, took, unproven}: fence conflict on a head that
--                       continues the chain the record was built on; the current head, so the
--                       retry needs no read; took = 1 when the lock is now ARGV[8]'s;
--                       unproven = 1 when ARGV[5] is below the floor (KEYS[8]), so that this call
--                       (if a re-send) did not commit before cannot be told; 2 when the kept
--                       ids were lost (see `idsLost`): no call's age makes a miss proof then
--   3 WrongType         {3, key}: `key` (head:hash, head, chain, commits, commits:floor when a
--                       commit would move it, the lock a lock-free
--                       attempt reads, or the waiters or fence counter an attempt that asked
--                       or holds the lock would leave, hand on to or count up) holds the
--                       wrong Redis type; nothing written
--   4 LockHeld          {4}: another writer holds the lock and ARGV[7] asked to yield: nothing
--                       written but the waiter entry ARGV[11] asked for (liveness only; the
--                       fence alone keeps the chain whole)
--   5 HeadDisagrees     {5, what, LLEN, head sequence | nil}: the head keys disagree with the
--                       list; nothing written. what: 'hash_missing' (head:hash absent, chain
--                       or head present), 'head_missing', 'head_unreadable', 'hash_mismatch'
--                       (head's eventHash is not head:hash), 'length_mismatch' (head's
--                       sequence is not LLEN), 'last_mismatch' (the last element is not the
--                       head's record)
--   6 Rewound           {6, head JSON | nil}: the chain no longer holds the head ARGV[12..13]
--                       (rewound); nothing written
--   7 NotSuccessor      {7, head JSON | nil}: the record's parent (sequence ARGV[5] - 1, hash
--                       ARGV[1]) is not a record of the chain: it skips ahead, or names no
--                       record; nothing written
local headHashKey, chainKey, headKey, commitsKey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local lockKey, fenceKey, waitersKey, floorKey = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local expected, recordJson, integrityJson, eventHash = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local sequenceArg, commitId = ARGV[5], ARGV[6]
local sequence = tonumber(sequenceArg)
local lockFree, keepTtl = ARGV[7] ~= '', string.match(ARGV[7], '^keep (%d+)$')
local claimToken, claimTtl, releaseChannel, queueMs = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local seenSeq, seenHash = tonumber(ARGV[12] or ''), ARGV[13] or ''
local keptSeconds = tonumber(ARGV[14] or '') or 0
local witnessArg, witnessId = ARGV[15] or '', ARGV[16] or ''
local witnessSeq = tonumber(witnessArg)

--- @include "include/refusal"
--- @include "include/waiters"
--- @include "include/claim"

-- Keeps the commit ids of our appends while among the last COMMITS_KEPT records
-- (src/internal/keys.ts; a test holds them equal) or younger than ARGV[14] seconds, so a
-- call ioredis re-sends after a reconnect finds its first send's commit however fast the
-- chain grew meanwhile. KEYS[8] is "<sequence> <seconds>": the lowest sequence whose id
-- is kept, and that id's stamp (0: not read yet); below it a miss proves nothing. A
-- commit reads it with the head keys (one MGET) and, once that id is a second past its keep,
-- drops the ids from there up that are old and beyond the last COMMITS_KEPT, walking
-- over the sequences other writers appended (haechi-store-redis keeps no ids), up to
-- TRIM_MOST sequences in HMGETs of 64 and one HDEL: amortised O(1).
local COMMITS_KEPT, TRIM_MOST = 1000, 512
-- An id's stamp is old once its keep has passed; one far in the future (hostile, or a clock
-- stepped back by more than the keep) counts as old, so it cannot stall the trim for good.
local function isOld(stamp, nowSeconds, slack)
  return nowSeconds - stamp >= keptSeconds + slack or stamp - nowSeconds > keptSeconds
end
local function stampOf(entry)
  return tonumber(string.match(entry, ' (%d+)$')) or 0
end
-- The stored floor, its id's stamp and when the ids were found lost (0: never); nil for
-- none, for anything but "<n>[ <n>[ <n>]]", n >= 1, and for a floor past the end of a chain
-- `length` long (no commit writes one: hostile, or left by a rewind), which would stall the trim.
local function floorOf(stored, length)
  local floor, stamp, lostAt = string.match(stored or '', '^(%d+) ?(%d*) ?(%d*)$')
  floor = tonumber(floor)
  if floor == nil or floor < 1 or floor > length + 1 then return nil, 0, 0 end
  return floor, tonumber(stamp) or 0, tonumber(lostAt) or 0
end
-- Whether `entry` (of `commits`: "<id> <seconds>", or an older bare "<id>") is commit `id`'s.
local function isCommitOf(entry, id)
  return entry == id or (entry and string.sub(entry, 1, #id + 1) == id .. ' ')
end
-- Whether the kept ids are gone while the chain says they should be there: each of our
-- commits writes `commits` and the floor together and the trim never drops the newest id,
-- so a floor with no `commits` is a loss (eviction, DEL). Both lost together look like a
-- chain only haechi-store-redis wrote so far (neither key), and another replica's commit
-- may have written a new floor since: the caller's own last commit tells. At or above the
-- floor (if any) and among the last COMMITS_KEPT records of a chain `length` long, the
-- trim keeps its id, so a miss there is a loss. One read either way (the witness's HGET
-- also misses where `commits` is gone).
local function idsLost(floor, length)
  local witnessKept = witnessSeq ~= nil and witnessId ~= '' and witnessSeq <= length
    and witnessSeq > length - COMMITS_KEPT and (floor == nil or witnessSeq >= floor)
  if witnessKept then
    local entry = redis.pcall('HGET', commitsKey, witnessArg)
    return not isError(entry) and not isCommitOf(entry, witnessId)
  end
  return floor ~= nil and redis.call('EXISTS', commitsKey) == 0
end
-- Where the floor may jump after TRIM_MOST sequences of other writers' records: the lowest
-- sequence `commits` keeps at `at` or above (no further than last + 1). Read only while
-- `commits` is small (which it is when our appends are that sparse), else `at`.
local function nextKept(at, last)
  if redis.call('HLEN', commitsKey) > 2 * TRIM_MOST then return at end
  local lowest = last + 1
  for _, field in ipairs(redis.call('HKEYS', commitsKey)) do
    local kept = tonumber(field)
    if kept and kept >= at and kept < lowest then lowest = kept end
  end
  return lowest
end
-- The sequences whose ids this commit drops (holes included) from `floor` up, and the new
-- floor with its id's stamp (0 where the walk stopped at a bound); nil when `commits` holds
-- the wrong type.
local function droppable(floor, nowSeconds)
  local last, drop, at = sequence - COMMITS_KEPT, {}, floor
  while at <= last and at < floor + TRIM_MOST do
    local fields = {}
    for s = at, math.min(last, at + 63) do fields[#fields + 1] = s end
    local entries = redis.pcall('HMGET', commitsKey, unpack(fields))
    if isError(entries) then return nil end -- (`commits` of the wrong type: refused by the caller)
    for i, entry in ipairs(entries) do
      if entry and not isOld(stampOf(entry), nowSeconds, 0) then return drop, fields[i], stampOf(entry) end
      drop[#drop + 1] = fields[i]
    end
    at = at + #fields
  end
  -- (Stopped by TRIM_MOST, not by the last COMMITS_KEPT or a young id: other writers' records.)
  if at <= last then at = nextKept(at, last) end
  return drop, at, 0
end
-- What a miss at `sequence` proves: 0 that the call did not commit; 1 nothing, below the
-- floor (none: below the last COMMITS_KEPT); 2 nothing whatever the call's age, the ids
-- lost now or within the keep (a restarted floor, below it).
local function unprovenCode(stored, length)
  local floor, _, lostAt = floorOf(stored, length)
  if idsLost(floor, length) then return 2 end
  if sequence >= (floor or length - COMMITS_KEPT + 1) then return 0 end
  if lostAt > 0 and not isOld(lostAt, tonumber(redis.call('TIME')[1]), 1) then return 2 end
  return 1
end
-- Whether a `commits` entry is this call's commit id.
local function isThisCommit(entry)
  return isCommitOf(entry, commitId)
end

local function commitsWrongType()
  return not typeIs(commitsKey, 'hash')
end

-- A decoded JSON object, or nil (not JSON, not an object, or beyond cjson).
local function decoded(json)
  local ok, value = pcall(cjson.decode, json)
  if ok and type(value) == 'table' then return value end
  return nil
end
-- The auditIntegrity of a stored record, or nil.
local function integrityOf(json)
  local record = json and decoded(json)
  if record and type(record.auditIntegrity) == 'table' then return record.auditIntegrity end
  return nil
end

-- The head keys in one read. MGET reads a key of another type as absent, so an absent one
-- is read again with GET, which refuses it (nothing written).
local heads = redis.call('MGET', headHashKey, headKey, floorKey)
local cur, headJson, storedFloor = heads[1], heads[2], heads[3]
if cur == false then cur = redis.pcall('GET', headHashKey) end
if isError(cur) then return refusalOn(headHashKey, cur) end
if headJson == false then headJson = redis.pcall('GET', headKey) end
if isError(headJson) then return refusalOn(headKey, headJson) end
local len = redis.pcall('LLEN', chainKey)
if isError(len) then return refusalOn(chainKey, len) end
local straight = (cur == false and expected == '') or cur == expected

-- Any reply but a commit first refuses a `commits` of the wrong type (the commit's own HSET does).
local function refused(reply)
  if commitsWrongType() then return {3, commitsKey} end
  return reply
end
local yielding, lockRefusal = lockedOut()
if lockRefusal then return lockRefusal end
-- A re-sent call whose first send committed (its reply lost) is done, whoever holds the
-- lock now: asked before yielding, as a yield would have the record built and appended again.
local kept = nil
if not straight then
  if commitsWrongType() then return {3, commitsKey} end
  kept = redis.call('HGET', commitsKey, sequenceArg)
  if isThisCommit(kept) then
    release(headJson or '', false)
    return {2}
  end
end
if yielding then
  if commitsWrongType() then return {3, commitsKey} end
  queueIfAsked()
  return {4}
end

-- The head keys against the list: nil when they agree, else the reply naming what does not.
local head, last = nil, nil
local function disagreement(readLast)
  if cur == false then
    if len > 0 or headJson then return 'hash_missing' end
    return nil
  end
  if not headJson then return 'head_missing' end
  head = decoded(headJson)
  if head == nil or type(head.sequence) ~= 'number' or type(head.eventHash) ~= 'string' then
    head = nil
    return 'head_unreadable'
  end
  if head.eventHash ~= cur then return 'hash_mismatch' end
  if head.sequence ~= len then return 'length_mismatch' end
  if readLast then
    last = integrityOf(redis.call('LINDEX', chainKey, -1))
    if last == nil or last.eventHash ~= cur then return 'last_mismatch' end
  end
  return nil
end

-- Whether the chain holds the record `hash` at sequence `seq` (0 and '' = the empty chain).
local function holds(seq, hash)
  if seq == 0 then return hash == '' end
  if seq == nil or seq < 0 or seq > len or hash == '' then return false end
  if seq == len then return hash == cur end
  if seq == len - 1 and last ~= nil then return last.previousHash == hash end
  local at = integrityOf(redis.call('LINDEX', chainKey, seq - 1))
  return at ~= nil and at.eventHash == hash
end

local function broken(what)
  return {5, what, len, head and head.sequence or false}
end

if straight then
  local what = disagreement(false)
  if what then return refused(broken(what)) end
  local headSeq = head and head.sequence or 0
  if sequence ~= headSeq + 1 then return refused({7, headJson}) end
  if seenHash ~= '' and seenHash ~= expected and not holds(seenSeq, seenHash) then return refused({6, headJson}) end
  local releaseKey = releaseWrongType()
  if releaseKey then return refused({3, releaseKey}) end
  local nowSeconds = tonumber(redis.call('TIME')[1])
  local entry, drop = commitId .. ' ' .. nowSeconds, {}
  local headWrites = {headKey, integrityJson, headHashKey, eventHash}
  local floor, stamp = floorOf(storedFloor, len)
  if idsLost(floor, len) then
    -- The floor restarts here: below it, within the keep, no miss is proof.
    if storedFloor == false and not typeIs(floorKey, 'string') then return refused({3, floorKey}) end
    headWrites[5], headWrites[6] = floorKey, sequence .. ' ' .. nowSeconds .. ' ' .. nowSeconds
  -- (No floor, or an unreadable one: walk from the start, which also rewrites it.)
  elseif floor == nil or (floor <= sequence - COMMITS_KEPT and isOld(stamp, nowSeconds, keptSeconds > 0 and 1 or 0)) then
    local to, toStamp
    drop, to, toStamp = droppable(floor or 1, nowSeconds)
    if drop == nil then return {3, commitsKey} end
    if to ~= floor or toStamp ~= stamp then
      -- (MGET reads a floor of another type as absent: refused here, before the first write.)
      if storedFloor == false and not typeIs(floorKey, 'string') then return refused({3, floorKey}) end
      headWrites[5], headWrites[6] = floorKey, to .. ' ' .. toStamp
    end
  end
  -- Only WRONGTYPE is the key's; any other refusal (READONLY on a replica, OOM) is Redis's own.
  local set = redis.pcall('HSET', commitsKey, sequenceArg, entry)
  if isError(set) then return refusalOn(commitsKey, set) end
  redis.call('RPUSH', chainKey, recordJson)
  redis.call('MSET', unpack(headWrites))
  if #drop > 0 then redis.call('HDEL', commitsKey, unpack(drop)) end
  return {1, release(integrityJson, true)}
end
local what = disagreement(true)
if what then return broken(what) end
if seenHash ~= '' and not holds(seenSeq, seenHash) then return {6, headJson} end
if not holds(sequence - 1, expected) then return {7, headJson} end
return {0, headJson, claim(), unprovenCode(storedFloor, len)}
