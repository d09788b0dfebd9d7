-- include/ratelimitlog: what a rate limit log may hold, in one place for ratelimit_consume
-- (which refuses anything else before it writes) and ratelimit_peek (which reports it).

-- A day in microseconds: how far ahead of Redis's clock an entry may be (a clock stepped back).
local LOG_AHEAD_US = 86400000000

-- Whether `score` (a ZRANGE WITHSCORES string, nil for no entry) is one ratelimit_consume
-- writes: whole microseconds of TIME, at most a day ahead of `now`.
local function logScore(score, now)
  return score == nil
    or (string.match(score, '^%d+$') ~= nil and #score <= 17 and tonumber(score) <= now + LOG_AHEAD_US)
end

-- Whether `member` (nil for no entry) is one ratelimit_consume writes: a call id, decimal.
-- A sorted set of other members (a lock's waiter queue, ...) is another store's.
local function logMember(member)
  return member == nil or string.match(member, '^%d+$') ~= nil
end

-- Whether `log` is a log at all: a sorted set, or absent.
local function logType(log)
  local kind = redis.call('TYPE', log).ok
  return kind == 'zset' or kind == 'none'
end
