// Admin work on the throwaway Redis, done the same way for both implementations: flushing,
// pre-loading a vault with a direct HSET pipeline, reading the chain for verification, and
// accounting (INFO commandstats deltas, and SLOWLOG with a zero threshold to tell the
// commands a client sent from the ones a Lua script ran).
import { makeRecord, newToken, verifyChain } from "./core.mjs"
import { AUDIT_PREFIX, VAULT_PREFIX } from "./impls.mjs"
import { median } from "./stats.mjs"

export const flush = (admin) => admin.flushall()

let pool = []
/** `n` valid token records (real AES-GCM envelopes), generated once and reused across cases. */
export const preloadRecords = async (n) => {
  while (pool.length < n) {
    const token = newToken("email")
    pool.push([token, JSON.stringify(await makeRecord(token, "email"))])
  }
  return pool.slice(0, n)
}

/**
 * Writes `n` records straight into the vault hash (1000 fields per HSET, pipelined) and sets
 * the version, the same keys both implementations read. Returns `{ tokens, jsonBytes }`.
 */
export const preloadVault = async (admin, n) => {
  const entries = await preloadRecords(n)
  let jsonBytes = 0
  for (let i = 0; i < entries.length; i += 1000) {
    const pipeline = admin.pipeline()
    const args = []
    for (const [token, json] of entries.slice(i, i + 1000)) {
      args.push(token, json)
      jsonBytes += Buffer.byteLength(token) + Buffer.byteLength(json)
    }
    pipeline.hset(`${VAULT_PREFIX}tokens`, ...args)
    await pipeline.exec()
  }
  if (n > 0) await admin.set(`${VAULT_PREFIX}version`, "1")
  return { tokens: entries.map(([token]) => token), jsonBytes }
}

/** Reads the chain in pages and runs the verifier over it. */
export const verifyStoredChain = async (admin) => {
  const key = `${AUDIT_PREFIX}chain`
  const length = await admin.llen(key)
  const records = []
  for (let start = 0; start < length; start += 1000) {
    for (const json of await admin.lrange(key, start, start + 999)) records.push(JSON.parse(json))
  }
  const result = verifyChain(records)
  const head = await admin.get(`${AUDIT_PREFIX}head:hash`)
  if (result.valid && head !== result.headHash) return { ...result, valid: false, reason: "head:hash is not the last record's eventHash" }
  return result
}

const ADMIN_COMMANDS = /^(info|slowlog|config|flushall|flushdb|client|hello|select|ping|dbsize|memory|command)(\||$)/

/** `INFO commandstats` as `{ name: { calls, usec } }`. */
export const commandStats = async (admin) => {
  const text = await admin.info("commandstats")
  const stats = {}
  for (const line of text.split("\n")) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line.trim())
    if (m) stats[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) }
  }
  return stats
}

/** The difference of two snapshots, without the admin connection's own commands. */
export const statsDelta = (before, after) => {
  const delta = {}
  let calls = 0
  let usec = 0
  for (const [name, s] of Object.entries(after)) {
    if (ADMIN_COMMANDS.test(name)) continue
    const b = before[name] ?? { calls: 0, usec: 0 }
    if (s.calls === b.calls) continue
    delta[name] = { calls: s.calls - b.calls, usec: s.usec - b.usec }
    calls += s.calls - b.calls
    usec += s.usec - b.usec
  }
  return { calls, usec, byCommand: delta }
}

/** Starts logging every command to the slowlog (a clean one). */
export const slowlogStart = async (admin) => {
  await admin.config("SET", "slowlog-max-len", "200000")
  await admin.config("SET", "slowlog-log-slower-than", "0")
  await admin.slowlog("RESET")
}

/**
 * Stops logging and splits what was logged: commands sent by clients (round trips; their
 * duration includes any script they ran) versus commands run inside Lua scripts (the
 * slowlog names their client "?:0"). The admin connection's own commands are left out.
 */
export const slowlogStop = async (admin) => {
  await admin.config("SET", "slowlog-log-slower-than", "-1")
  const entries = await admin.slowlog("GET", "-1")
  await admin.slowlog("RESET")
  await admin.config("SET", "slowlog-log-slower-than", "10000")
  await admin.config("SET", "slowlog-max-len", "128")
  const own = String(await admin.client("INFO")).match(/addr=(\S+)/)?.[1]
  let sent = 0
  let sentUsec = 0
  let scripted = 0
  const byCommand = {}
  const durations = {}
  for (const [, , usec, args, addr] of entries) {
    const name = String(args[0]).toLowerCase()
    if (addr === own || ADMIN_COMMANDS.test(name)) continue
    if (addr === "?:0") {
      scripted += 1
      continue
    }
    sent += 1
    sentUsec += Number(usec)
    byCommand[name] = (byCommand[name] ?? 0) + 1
    // A script is told apart by its SHA (EVALSHA) or its text (EVAL).
    ;(durations[`${name} ${String(args[1]).slice(0, 40)}`] ??= []).push(Number(usec))
  }
  // Robust to a descheduled server: each kind of command at its median duration.
  let sentUsecMedian = 0
  for (const list of Object.values(durations)) sentUsecMedian += list.length * median(list)
  return { sent, sentUsec, sentUsecMedian, scripted, byCommand }
}
