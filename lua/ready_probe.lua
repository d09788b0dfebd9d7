-- ready_probe: prove this connection may write (an ACL-limited user, a read-only
-- replica or a full OOM Redis answers reads but fails here).
-- KEYS[1] the store's probe key (self-expiring, never accumulates)
-- ARGV    none
-- Reply:  1
local probeKey = KEYS[1]

redis.call('SET', probeKey, '1', 'PX', 2000)
return 1
