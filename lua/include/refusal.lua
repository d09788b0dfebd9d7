-- include/refusal: a key of the wrong type refused before anything is written, in one place
-- for the scripts that check their keys (audit_append, vault_apply, and their include/claim;
-- vault_changes, which reads only; lock_acquire and audit_turn, through include/waiters'
-- wrongTypeRefusal): the reply names the key, {3, key} (WrongType, in the fenced scripts'
-- replies) or a WRONGTYPE error, or is Redis's own error.

-- Whether `reply` is an error reply (of redis.pcall).
local function isError(reply)
  return type(reply) == 'table' and reply.err ~= nil
end

-- The reply for a refusal of a command on `key`: WrongType {3, key}, or Redis's own error
-- (READONLY on a replica, OOM: not the key's).
local function refusalOn(key, reply)
  if string.find(reply.err, 'WRONGTYPE', 1, true) == 1 then return {3, key} end
  return reply
end

-- Whether `key` is absent or of one of the given types.
local function typeIs(key, ...)
  local t = redis.call('TYPE', key).ok
  for _, want in ipairs({'none', ...}) do
    if t == want then return true end
  end
  return false
end
