-- ratelimit_consume: take one request from a key's sliding log, on Redis's clock.
-- Exact: the key holds the times of the requests it allowed within the last window, and
-- a request is allowed iff fewer than `limit` of them are newer than now - window, so no
-- window (t - W, t] ever holds more than `limit` allowed requests, whatever clocks the
-- callers have. Denied requests are not logged. The key expires once its newest entry
-- has left the window (an idle key is gone, and its whole limit is back).
-- KEYS[1] log      (sorted set: member = the call's id, score = microseconds of TIME)
-- ARGV[1] limit    (integer >= 1)
-- ARGV[2] window   (milliseconds, integer >= 1)
-- ARGV[3] call id  (unique per call: a re-send of a call the log already took takes nothing)
-- Reply (RateLimitConsumeReply in src/internal/replyCodes.ts), by code:
--   1 Allowed   {1, count, now, pivot, newest}: taken (or taken already by this call)
--   0 Denied    {0, count, now, pivot, newest}: nothing taken
--  -1 Corrupt   {-1}: the key holds another type or a first or last member that is no
--               call id (left as it is), or a first or last score this script cannot
--               have written (not whole microseconds, or more than a day ahead of now;
--               the log is then set to expire within one window): nothing taken
--   count = entries in the window (this request included if allowed); now = Redis's time
--   in us; pivot = score of the entry that must leave the window before another request
--   is allowed ('' when one would be allowed now); newest = the newest entry's score (''
--   when the log is empty). Times are decimal strings.
local log = KEYS[1]
local limit, windowMs, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]

local time = redis.call('TIME')
local stamp = time[1] .. string.format('%06d', tonumber(time[2]))
local now = tonumber(stamp)
local window = windowMs * 1000

--- @include "include/ratelimitlog"

-- A log this script cannot have written is refused before anything is written. Only a
-- sorted set of call ids is set to expire: a key of another type, or of other members, is
-- no log of ours, and may be another store's data under a prefix that reaches it.
local function corrupt(ours)
  if ours then
    local ttl = redis.call('PTTL', log)
    if ttl < 0 or ttl > windowMs then redis.call('PEXPIRE', log, windowMs) end
  end
  return {-1}
end

if not logType(log) then return corrupt(false) end
-- (The first and the last entry, O(1), before anything is written: one in the middle is
-- found when it becomes the pivot.)
local first = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
if not logMember(first[1]) or not logMember(last[1]) then return corrupt(false) end
if not logScore(first[2], now) or not logScore(last[2], now) then return corrupt(true) end
redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%.0f', now - window))
local count = redis.call('ZCARD', log)
local allowed = 0
if redis.call('ZSCORE', log, id) then
  -- ioredis re-sent a call whose reply was lost: its first run took the request already
  allowed = 1
elseif count < limit then
  redis.call('ZADD', log, stamp, id)
  allowed = 1
  count = count + 1
end
local pivot = ''
if count >= limit then
  pivot = redis.call('ZRANGE', log, count - limit, count - limit, 'WITHSCORES')[2]
end
local newest = ''
if count > 0 then
  newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')[2]
  -- >= 1 ms: the newest entry is inside the window (ahead of now if Redis's clock stepped back)
  redis.call('PEXPIRE', log, math.ceil((tonumber(newest) + window - now) / 1000))
end
return {allowed, count, stamp, pivot, newest}
