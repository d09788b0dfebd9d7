-- include/claim: the adaptive lock policy's claim inside a fenced script (spliced into
-- audit_append and vault_apply by scripts/gen-lua.mjs; see src/internal/lock/policy.ts).
-- A lock-free attempt yields to any other holder of the store's lock; while the lock
-- holds the attempt's claim token it does not yield, and committing gives the lock back;
-- a rejected attempt that asked takes the lock with its token, so its next attempt goes first.
-- Uses the including script's locals: lockKey; lockFree (the attempt is lock-free),
-- claimToken ('' = none), claimTtl (ms; '' = do not take the lock), releaseChannel.
local claimed = false -- the lock holds claimToken: give it back on commit

-- Whether another writer holds the lock and this attempt must yield (nothing written).
local function yields()
  if not lockFree then return false end
  local holder = redis.call('GET', lockKey)
  if holder and holder ~= claimToken then return true end
  claimed = holder ~= false
  return false
end

-- After a commit: gives back a lock the attempt held by its claim (DEL, and PUBLISH for waiters).
local function release()
  if claimed then
    redis.call('DEL', lockKey)
    redis.call('PUBLISH', releaseChannel, '')
  end
end

-- After a rejection: takes the lock with claimToken if the attempt asked. 1 = taken (`took`), else 0.
local function claim()
  if lockFree and claimTtl ~= '' then
    redis.call('SET', lockKey, claimToken, 'PX', claimTtl)
    return 1
  end
  return 0
end
