-- vault_scan: one page of a full vault read, with the version it was read at, so a
-- paged reload never blocks Redis for long and can prove which version it saw.
-- KEYS[1] version  KEYS[2] tokens (hash)
-- ARGV[1] HSCAN cursor  ARGV[2] page size hint
-- Reply: {version|nil, next cursor, {token, record JSON, ...}}
local page = redis.call('HSCAN', KEYS[2], ARGV[1], 'COUNT', ARGV[2])
return {redis.call('GET', KEYS[1]), page[1], page[2]}
