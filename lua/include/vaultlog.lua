-- include/vaultlog: where a commit id stands in the vault's change log, in one place for
-- vault_apply (a re-sent call) and vault_changes (a lost reply looked up). Entries are
-- "<version> <commit id> <seconds> <ids JSON>" in version order; haechi-store-redis bumps
-- the version without logging, so versions may skip. Uses the including script's logKey,
-- markKey (the log's mark, "<seconds>": see `missCode`) and keptSeconds.

-- The version and commit id of the log entry at `index`, or nil for none or an unreadable one.
local function logEntryAt(index)
  local v, commit = string.match(redis.call('LINDEX', logKey, index) or '', '^(%d+) (%S+)')
  return tonumber(v), commit
end

-- Whether `commitId` committed the version after `since` (the current version `now`), and
-- whether a miss proves it did not: a first send that committed logged exactly version
-- since + 1, found by a binary search among the last now - since entries (its first probe
-- is where it sits when no version went unlogged since). Unproven when that entry is gone
-- (trimmed, or an entry on the way does not read): the oldest entry kept is later.
local function loggedAfter(since, now, commitId)
  -- (A version below the one the call was built on: the history it saw is gone, no proof.)
  if now <= since then return false, now == since end
  local want = since + 1
  local lo, hi = -(now - since), -1
  local length = redis.call('LLEN', logKey)
  if -lo > length then lo = -length end
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    if lo == -(now - since) then mid = lo end
    local v, commit = logEntryAt(mid)
    if v == nil then return false, false end
    if v == want then return commit == commitId, true end
    if v < want then lo = mid + 1 else hi = mid - 1 end
  end
  local oldest = length > 0 and logEntryAt(0) or nil
  return false, oldest ~= nil and oldest <= want
end

-- What a miss found by `loggedAfter` proves (`proven` its answer): 0 that the call did not
-- commit; 1 nothing (the log no longer reaches back that far); 2 nothing whatever the
-- call's age, as Redis lost the log: the mark (written with the log's first entry, "0", or
-- "<seconds>" when the log was found lost and restarted then; any value at all counts)
-- is there and the log is not, or the log restarted within the keep. (The mark lost with
-- the log is not told apart from a vault only haechi-store-redis wrote: it logs nothing.)
local function missCode(proven, mark)
  if mark and redis.call('EXISTS', logKey) == 0 then return 2 end
  if proven then return 0 end
  local lostAt = tonumber(string.match(mark or '', '^(%d+)$'))
  if lostAt == nil or lostAt == 0 then return 1 end
  local nowSeconds = tonumber(redis.call('TIME')[1])
  if nowSeconds - lostAt < keptSeconds + 1 and lostAt - nowSeconds <= keptSeconds then return 2 end
  return 1
end
