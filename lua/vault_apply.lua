-- vault_apply: compare-and-apply one vault diff, fenced on the version, and log it.
-- The diff commits only if no other writer committed since the snapshot it was computed
-- on, and only if Redis still holds that snapshot's history: the same token count, and
-- the commit the snapshot saw still logged at its version (a version restored from an
-- older snapshot and climbed back by other writers carries another commit). The version
-- then moves by exactly one and the change log gets one entry
-- "<version> <commit id> <unix seconds> <JSON array of changed token ids>" so replica
-- caches can catch up without reading the whole vault, and a call ioredis re-sends after
-- a reconnect finds its first send's commit: the log keeps the last ARGV[4] entries and
-- any younger than ARGV[12] seconds (the oldest dropped a few at a time: amortised O(1)).
-- A call writes everything or nothing: a key of the wrong type fails the GET or the first
-- HSET before any write, and `log`, written last, is checked first. A lock-free attempt may
-- also take, queue for or hand on the store's lock here, so the adaptive policy's turns
-- cost no round trip of their own.
-- KEYS[1] version  KEYS[2] tokens (hash)  KEYS[3] log (list)  KEYS[4] the store's lock
-- KEYS[5] the lock's fence counter  KEYS[6] the lock's waiters
-- KEYS[7] log:mark ("0" once the log exists; "<unix seconds>" when it was found lost then
--         and restarted; see include/vaultlog's missCode)
-- ARGV[1] expected version ('' = never mutated)
-- ARGV[2] commit id   ARGV[3] JSON array of changed token ids   ARGV[4] log bound
-- ARGV[5] the commit id the snapshot saw logged at ARGV[1] ('' = none: never mutated, or
--         a version written without a log entry, which must then still have none)
-- ARGV[6] the snapshot's token count
-- ARGV[7] '1': a lock-free attempt, which yields to any other lock holder; '' ignores the lock
-- ARGV[8] the attempt's claim token ('' = none): while the lock holds it, the attempt does
--         not yield, and committing hands it on to the next waiter or frees it (PUBLISH on
--         ARGV[10] either way)
-- ARGV[9] a TTL in ms: take the lock with ARGV[8] should the fence reject, or hold it that
--         long once handed it ('' = neither)
-- ARGV[10] the lock's release channel
-- ARGV[11] queue for a hand-off this long (ms) when yielding ('' = do not)
-- ARGV[12] how many seconds a log entry is kept at least (0: the last ARGV[4] only)
-- ARGV[13] n, the number of sets; ARGV[14 .. 13+2n] token, record JSON pairs;
-- ARGV[14+2n ..] tokens to delete
-- Reply (VaultApplyReply in src/internal/replyCodes.ts), by code:
--   1 Committed         {1, new version}: committed ({1, version} unchanged when the diff is empty)
--   2 AlreadyCommitted  {2, current version}: this commit id is already logged (a re-sent call): done,
--                       whoever holds the lock now (asked before any yield)
--   0 Conflict          {0, current version|nil, took, unproven}: fence conflict, nothing written
--                       but the lock: took = 1 when the lock is now ARGV[8]'s; unproven = 1 when
--                       the log no longer reaches back to version ARGV[1] + 1, so that this call
--                       (if a re-send) did not commit before cannot be told; 2 when Redis lost
--                       the log (now, or within the keep): no call's age makes a miss proof then
--   5 Rewound           {5, current version|nil, took, 0}: the version matches but Redis no
--                       longer holds the snapshot's history (rewound); otherwise as Conflict
--   3 WrongType         {3, key}: `log`, `log:mark`, the lock a lock-free attempt reads, or the waiters or
--                       fence counter a commit's lock release would leave, hand on to or count
--                       up, holds the wrong Redis type; nothing written
--   4 LockHeld          {4, current version|nil}: another writer holds the lock and ARGV[7]
--                       asked to yield (nothing written but the waiter entry ARGV[11] asked for)
local versionKey, tokensKey, logKey = KEYS[1], KEYS[2], KEYS[3]
local lockKey, fenceKey, waitersKey, markKey = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local expected, commitId, changedJson, logBound = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local seen, size = ARGV[5], tonumber(ARGV[6])
local lockFree, keepTtl = ARGV[7] ~= '', nil
local claimToken, claimTtl, releaseChannel, queueMs = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local keptSeconds, setCount = tonumber(ARGV[12]), tonumber(ARGV[13])
local firstSet, firstDelete = 14, 14 + 2 * setCount -- ARGV[firstSet ..] pairs, ARGV[firstDelete ..] deletes
local SCAN_MOST = 4096

--- @include "include/refusal"
--- @include "include/waiters"
--- @include "include/claim"
--- @include "include/vaultlog"

if not typeIs(logKey, 'list') then return {3, logKey} end
-- (MGET reads a key of another type as absent: the version's type is checked then, and
-- named as itself, and the mark checked, before anything is written.)
local heads = redis.call('MGET', versionKey, markKey)
local cur, mark = heads[1], heads[2]
if cur == false and not typeIs(versionKey, 'string') then return {3, versionKey} end
if mark == false and not typeIs(markKey, 'string') then return {3, markKey} end
-- Whether this commit id is logged after the expected version (a re-sent call whose first
-- send committed, its reply lost), and whether a miss proves it is not (include/vaultlog).
-- Asked before yielding, since the lock may have moved to another writer since then, and
-- a yield would have the commit made again.
local function loggedAlready()
  local now = tonumber(cur)
  if now then return loggedAfter(tonumber(expected) or 0, now, commitId) end
  -- No version (lost, or never written): the log may hold the commit all the same. Its
  -- last SCAN_MOST entries are searched (a rare path); a miss there proves nothing.
  if cur == false then
    for _, entry in ipairs(redis.call('LRANGE', logKey, -SCAN_MOST, -1)) do
      if string.match(entry, '^%d+ (%S+)') == commitId then return true, true end
    end
  end
  return false, false
end
-- Every 8th length (not version: other writers bump it unlogged), drops the oldest of the
-- entries beyond the bound that are older than keptSeconds, up to 16, in one LRANGE and
-- one LTRIM: amortised O(1), and nothing read at the other commits.
local function trimLog(length, nowSeconds)
  if length % 8 ~= 0 or length <= logBound then return end
  local old = 0
  for _, e in ipairs(redis.call('LRANGE', logKey, 0, math.min(length - logBound, 16) - 1)) do
    local at = tonumber(string.match(e, '^%d+ %S+ (%d+) ')) or 0
    -- (Stamped far in the future, by a hostile writer or a clock stepped back: old, not kept for good.)
    if nowSeconds - at < keptSeconds and at - nowSeconds <= keptSeconds then break end
    old = old + 1
  end
  if old > 0 then redis.call('LTRIM', logKey, old, -1) end
end
local lockedOutNow, lockRefusal = lockedOut()
if lockRefusal then return lockRefusal end
local logged, proven = loggedAlready()
if logged then
  release('', false)
  return {2, cur}
end
if lockedOutNow then
  queueIfAsked()
  return {4, cur}
end
-- Whether the vault at the expected version is the one the snapshot was read from.
-- (`lastLogged`: the version of the log's last entry, for the commit below.)
local lastLogged = nil
local function continues()
  if redis.call('HLEN', tokensKey) ~= size then return false end
  local v, commit = string.match(redis.call('LINDEX', logKey, -1) or '', '^(%d+) (%S+)')
  lastLogged = tonumber(v)
  if expected == '' then return true end
  if seen == '' then return v ~= expected end
  return v == expected and commit == seen
end
local status = 0
if (cur == false and expected == '') or cur == expected then
  if continues() then
    if setCount == 0 and #ARGV < firstDelete then
      release('', false)
      return {1, cur}
    end
    local releaseKey = releaseWrongType()
    if releaseKey then return {3, releaseKey} end
    for i = firstSet, firstDelete - 1, 2 do
      redis.call('HSET', tokensKey, ARGV[i], ARGV[i + 1])
    end
    for i = firstDelete, #ARGV do
      redis.call('HDEL', tokensKey, ARGV[i])
    end
    local nv = (tonumber(cur) or 0) + 1
    redis.call('SET', versionKey, nv)
    local nowSeconds = tonumber(redis.call('TIME')[1])
    -- A log that goes up to this version or past it tells of a history Redis no longer holds
    -- (the version key lost, restarted by other writers): dropped, so versions in the log
    -- only rise and include/vaultlog's search holds.
    local restarted = lastLogged and lastLogged >= nv
    if restarted then redis.call('DEL', logKey) end
    local length = redis.call('RPUSH', logKey, nv .. ' ' .. commitId .. ' ' .. nowSeconds .. ' ' .. changedJson)
    -- The mark: the time where a marked log was lost, else "0" with the log's first entry
    -- (and in place of an unreadable one). A log dropped above with the version lost is no
    -- loss of ours to stamp: stamping it would fail every replica's stale write closed for
    -- the keep, and a re-send then finds no version it was built on (unproven, the age rule).
    if mark and length == 1 and not restarted then
      redis.call('SET', markKey, tostring(nowSeconds))
    elseif not (mark and string.match(mark, '^%d+$')) then
      redis.call('SET', markKey, '0')
    end
    trimLog(length, nowSeconds)
    release('', false)
    return {1, tostring(nv)}
  end
  status = 5
end
return {status, cur, claim(), status == 0 and missCode(proven, mark) or 0}
