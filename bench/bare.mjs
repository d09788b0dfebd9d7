// The floor: a bare-ioredis audit store doing the same fenced one-round-trip append as
// ours (compare the head hash, append, move the head, all in one script), with none of the
// library's checks (no JSON checks, no continuity fence, no commit ids, no deadline, no
// spans or metrics). It satisfies haechi's store contract, so the same core drives it.
// A lost race re-runs `fn` on the head the script returned: no read, no backoff.

const APPEND = `
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('SET', KEYS[3], ARGV[3])
  redis.call('SET', KEYS[1], ARGV[4])
  return {1}
end
return {0, redis.call('GET', KEYS[3])}
`

class Conflict extends Error {}

/** A bare audit store on `client` under `prefix`: `{ transaction(fn), ready() }`. */
export const bareAuditStore = (client, prefix) => {
  if (typeof client.bareAppend !== "function") client.defineCommand("bareAppend", { numberOfKeys: 3, lua: APPEND })
  const keys = [`${prefix}head:hash`, `${prefix}chain`, `${prefix}head`]
  // undefined: not known yet (read it); null: the empty chain.
  let head
  const readLastIntegrity = async () => {
    if (head === undefined) {
      const json = await client.get(keys[2])
      head = json === null ? null : JSON.parse(json)
    }
    return head
  }
  const persist = async (record) => {
    const integrity = record.auditIntegrity
    const reply = await client.bareAppend(
      ...keys,
      integrity.previousHash ?? "",
      JSON.stringify(record),
      JSON.stringify(integrity),
      integrity.eventHash
    )
    if (reply[0] === 1) {
      head = integrity
      return
    }
    head = reply[1] === null ? null : JSON.parse(reply[1])
    throw new Conflict("fence conflict")
  }
  const tx = { readLastIntegrity, persist }
  return {
    transaction: async (fn) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await fn(tx)
        } catch (error) {
          if (!(error instanceof Conflict) || attempt >= 1000) throw error
        }
      }
    },
    ready: async () => {
      await client.ping()
    }
  }
}
