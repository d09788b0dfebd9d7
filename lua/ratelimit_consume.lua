-- ratelimit_consume: take one request from a key's sliding log, on Redis's clock.
-- Exact: the key holds the times of the requests it allowed within the last window, and
-- a request is allowed iff fewer than `limit` of them are newer than now - window, so no
-- window (t - W, t] ever holds more than `limit` allowed requests, whatever clocks the
-- callers have. Denied requests are not logged. The key expires once its newest entry
-- has left the window (an idle key is gone, and its whole limit is back).
-- KEYS[1] log      (sorted set: member unique per request, score = microseconds of TIME)
-- ARGV[1] limit    (integer >= 1)
-- ARGV[2] window   (milliseconds, integer >= 1)
-- Reply: {allowed, count, now, pivot, newest}
--   allowed 1 | 0; count = entries in the window (this request included if allowed);
--   now = Redis's time in us; pivot = score of the entry that must leave the window before
--   another request is allowed ('' when one would be allowed now); newest = the newest
--   entry's score ('' when the log is empty). Times are decimal strings.
local log = KEYS[1]
local limit, windowMs = tonumber(ARGV[1]), tonumber(ARGV[2])

local time = redis.call('TIME')
local stamp = time[1] .. string.format('%06d', tonumber(time[2]))
local now = tonumber(stamp)
local window = windowMs * 1000
redis.call('ZREMRANGEBYSCORE', log, '-inf', string.format('%.0f', now - window))
local count = redis.call('ZCARD', log)
local allowed = 0
if count < limit then
  -- A member is unique even if the clock repeats a microsecond or steps back.
  local member, n = stamp, 0
  while redis.call('ZADD', log, 'NX', stamp, member) == 0 do
    n = n + 1
    if n > 100 then return redis.error_reply('ERR ratelimit_consume: no unique member') end
    member = stamp .. '-' .. n
  end
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
