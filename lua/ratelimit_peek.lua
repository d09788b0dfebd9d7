-- ratelimit_peek: read a key's sliding log without taking from it (read-only).
-- KEYS[1] log      (sorted set written by ratelimit_consume)
-- ARGV[1] limit    (integer >= 1, or 0 when the caller has none: no pivot then)
-- ARGV[2] window   (milliseconds, integer >= 1)
-- Reply: {count, now, pivot, newest} as in ratelimit_consume (count = entries in the window),
--   or {-1} for a log ratelimit_consume refuses (its Corrupt).
local log = KEYS[1]
local limit, windowMs = tonumber(ARGV[1]), tonumber(ARGV[2])

local window = windowMs * 1000
local time = redis.call('TIME')
local stamp = time[1] .. string.format('%06d', tonumber(time[2]))
local now = tonumber(stamp)
local from = '(' .. string.format('%.0f', now - window)
--- @include "include/ratelimitlog"

-- The logs ratelimit_consume refuses ({-1}: another type, or a first or last entry it
-- cannot have written) are reported as such, read only.
if not logType(log) then return {-1} end
local first = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
local last = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
if not logMember(first[1]) or not logMember(last[1]) or not logScore(first[2], now) or not logScore(last[2], now) then
  return {-1}
end
local count = redis.call('ZCOUNT', log, from, '+inf')
local pivot = ''
if limit > 0 and count >= limit then
  pivot = redis.call('ZRANGEBYSCORE', log, from, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)[2]
end
local newest = ''
if count > 0 then newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')[2] end
return {count, stamp, pivot, newest}
