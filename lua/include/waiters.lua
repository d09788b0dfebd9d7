-- include/waiters: the lock's waiter queue, in one place for every script that takes,
-- queues for or hands on a lock (lock_acquire, lock_release, audit_turn, and the fenced
-- scripts' include/claim). The queue is a sorted set, member "<token> <ttl ms>", score =
-- the waiter's deadline in server ms; a release hands the lock to its first live member.
-- Uses the including script's locals: lockKey, waitersKey (and fenceKey for handOnOrFree).

local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The error a script that may take the lock refuses with before its first write, when one
-- of `keys` (the waiter queue, or the fence counter the taking counts up, ...) holds the
-- wrong type, or nil: found afterwards, the lock would stay taken until its TTL for nothing.
-- `types` names each key's type. Needs include/refusal (typeIs).
local function wrongTypeRefusal(keys, types)
  for i, key in ipairs(keys) do
    if not typeIs(key, types[i]) then
      return redis.error_reply('WRONGTYPE ' .. key .. ' holds the wrong type: nothing written')
    end
  end
  return nil
end

-- Whether the fence counter can be counted up (INCR): absent, or a non-negative integer
-- as INCR writes it (no sign, no leading zero, which INCR refuses) of at most 15 digits,
-- so the next fence is a safe integer for the client. A negative one would hand out fences
-- of 0 or less, which read as refusals, and make a refusal's negated counter read as a
-- fence. Checked before a script's first write where it will INCR it (needs include/refusal).
-- Second: the counter as read (false when absent), so a caller need not read it again.
local function fenceCountable()
  if not typeIs(fenceKey, 'string') then return false, false end
  local value = redis.call('GET', fenceKey)
  return value == false or value == '0' or (string.match(value, '^[1-9]%d*$') ~= nil and #value <= 15), value
end

-- Takes the lock for `token` if it is free, or renews it if it is `token`'s already (a
-- re-sent call, or a waiter whose hand-off message went missing); leaves the queue then.
local function takeIfFree(token, ttlMs)
  if redis.call('SET', lockKey, token, 'NX', 'PX', ttlMs) or redis.call('GET', lockKey) == token then
    redis.call('PEXPIRE', lockKey, ttlMs)
    redis.call('ZREM', waitersKey, token .. ' ' .. ttlMs)
    return true
  end
  return false
end

-- Queues `token` (its place kept if it has one: NX) until `waitMs` from now; the queue
-- outlives its longest-waiting member (then it is only stale entries).
local function queueWaiter(token, ttlMs, waitMs)
  redis.call('ZADD', waitersKey, 'NX', nowMs() + tonumber(waitMs), token .. ' ' .. ttlMs)
  local keep = tonumber(waitMs) + tonumber(ttlMs)
  if redis.call('PTTL', waitersKey) < keep then redis.call('PEXPIRE', waitersKey, keep) end
end

-- Hands the lock to the first live waiter, with a fresh fence, and publishes
-- "<its token> <fence>[ <payload>]" on `channel` (true); with no one waiting, deletes the
-- lock and publishes '' (false). A waiter past its deadline gave up and is skipped.
local function handOnOrFree(channel, payload)
  redis.call('ZREMRANGEBYSCORE', waitersKey, '-inf', nowMs())
  local next = redis.call('ZRANGE', waitersKey, 0, 0)[1]
  if next then
    redis.call('ZREM', waitersKey, next)
    local nextToken, nextTtl = string.match(next, '^(%S+) (%d+)$')
    redis.call('SET', lockKey, nextToken, 'PX', nextTtl)
    local message = nextToken .. ' ' .. redis.call('INCR', fenceKey)
    if payload ~= '' then message = message .. ' ' .. payload end
    redis.call('PUBLISH', channel, message)
    return true
  end
  redis.call('DEL', lockKey)
  redis.call('PUBLISH', channel, '')
  return false
end
