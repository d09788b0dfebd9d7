-- vault_scan: one page of a full vault read, with the version it was read at and the
-- commit logged at that version, so a paged reload never blocks Redis for long and can
-- prove which version (and whose history) it saw.
-- KEYS[1] version  KEYS[2] tokens (hash)  KEYS[3] log (list)
-- ARGV[1] HSCAN cursor  ARGV[2] page size hint
-- Reply: {version|nil, next cursor, {token, record JSON, ...}, commit}
--   commit: the id logged at the version ('' = none: never mutated, or written without logging)
local versionKey, tokensKey, logKey = KEYS[1], KEYS[2], KEYS[3]
local cursor, pageSize = ARGV[1], ARGV[2]

--- @include "include/refusal"

-- A key of the wrong type is named as itself (the tokens hash is not the only one read).
for key, want in pairs({[versionKey] = 'string', [tokensKey] = 'hash', [logKey] = 'list'}) do
  if not typeIs(key, want) then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds the wrong type: nothing written')
  end
end

local page = redis.call('HSCAN', tokensKey, cursor, 'COUNT', pageSize)
local version = redis.call('GET', versionKey)
local v, commit = string.match(redis.call('LINDEX', logKey, -1) or '', '^(%d+) (%S+)')
return {version, page[1], page[2], (v ~= nil and v == version) and commit or ''}
