-- include/claim: the adaptive lock policy's turns inside a fenced script (spliced into
-- audit_append and vault_apply by scripts/luaSource.mjs; see src/internal/lock/policy.ts).
-- A lock-free attempt yields to any other holder of the store's lock, and joins the
-- lock's waiter queue when it asks (the queue RedisLock uses: member "<token> <ttl ms>",
-- score = the waiter's deadline in server ms). While the lock holds the attempt's claim
-- token it does not yield, and committing hands the lock to the first live waiter with
-- "<its token> <fence> <payload>" (the payload: what the next writer builds on), or
-- frees it; a rejected attempt that asked takes the lock, so its next attempt goes first.
-- A commit may instead keep the lock it holds for `keepTtl` ms (nil = never): the writer's
-- next operation, already under way, goes on with it (bounded by the writer; see
-- lock/claimState.ts), and a writer that stops there holds everyone up that long at most.
-- The queue itself is include/waiters, and the refusals of a key of the wrong type
-- include/refusal (both included first by the including script).
-- Uses the including script's locals: lockKey, fenceKey, waitersKey; lockFree (the
-- attempt is lock-free), keepTtl, claimToken ('' = none), claimTtl (ms; '' = neither
-- take the lock nor queue), releaseChannel, queueMs (ms; '' = do not queue).
local claimed = false -- the lock holds claimToken: hand it on (or free it) on commit

-- Whether another writer holds the lock, so this attempt must yield (a read only); or,
-- second, the reply refusing a lock key of the wrong type (the caller returns it).
local function lockedOut()
  if not lockFree then return false end
  local holder = redis.pcall('GET', lockKey)
  if isError(holder) then return false, refusalOn(lockKey, holder) end
  claimed = holder == claimToken
  return holder ~= false and not claimed
end

-- A yielding attempt that asks takes its place in the queue (kept if it had one: ZADD NX).
local function queueIfAsked()
  if queueMs ~= '' and claimTtl ~= '' then queueWaiter(claimToken, claimTtl, queueMs) end
end

-- The key of the wrong type release() would meet after a commit's writes (its waiter queue,
-- or the fence counter a hand-off INCRs), or nil: checked before the commit's first write
-- (only for an attempt that asked or holds the lock).
local function releaseWrongType()
  if claimTtl == '' and (not claimed or keepTtl) then return nil end
  if not typeIs(waitersKey, 'zset') then return waitersKey end
  if claimed and not keepTtl and not fenceCountable() then return fenceKey end
  return nil
end

-- After a commit: leaves the queue, and hands a lock the attempt held by its claim to the
-- next live waiter (their turn, with `payload`), or frees it (DEL, and PUBLISH ''), or
-- with `mayKeep` and keepTtl keeps it. 1 = kept, else 0.
local function release(payload, mayKeep)
  if claimTtl ~= '' then redis.call('ZREM', waitersKey, claimToken .. ' ' .. claimTtl) end
  if not claimed then return 0 end
  if mayKeep and keepTtl then
    redis.call('PEXPIRE', lockKey, keepTtl)
    return 1
  end
  handOnOrFree(releaseChannel, payload)
  return 0
end

-- After a rejection: takes the lock with claimToken if the attempt asked. 1 = taken (`took`), else 0.
local function claim()
  if lockFree and claimTtl ~= '' then
    redis.call('SET', lockKey, claimToken, 'PX', claimTtl)
    return 1
  end
  return 0
end
