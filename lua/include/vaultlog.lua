-- include/vaultlog: where a commit id stands in the vault's change log, in one place for
-- vault_apply (a re-sent call) and vault_changes (a lost reply looked up). Entries are
-- "<version> <commit id> <seconds> <ids JSON>" in version order; haechi-store-redis bumps
-- the version without logging, so versions may skip. Uses the including script's logKey.

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
  if now <= since then return false, true end
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
