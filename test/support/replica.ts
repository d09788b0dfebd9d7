/**
 * Replicas for the reliability and fault tests: writers that drive the stores the way
 * haechi's core does (./haechiCore.ts) and keep a ledger of what was acknowledged, the
 * independent checks of what Redis holds afterwards, and a writer in a child process that
 * can be killed with SIGKILL in the middle of a transaction (./replica-crash.mjs).
 *
 * Guarantees:
 * - `writer(...)` never throws: every operation is recorded in its ledger as acknowledged
 *   (the store's promise resolved) or failed (with the error's `_tag` or name);
 * - `checkAudit` / `checkVault` read Redis on the connection they are given, never
 *   through a store, and count losses (acknowledged but absent), duplicates (present more
 *   than once), forks (a chain link that does not follow its predecessor) and false
 *   failures (reported failed, yet present) without throwing;
 * - `spawnCrashingWriter` resolves only once the child holds the lock and has sent half of
 *   its write, and `kill9()` resolves once the child has exited.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { Cluster, Redis } from "ioredis"
import { createRedisAuditStore, createRedisTokenStore, type RedisStoreOptions } from "../../src/haechi.js"
import { LOG_BOUND } from "../../src/internal/vault/backing.js"
import { createAuditSink, createTokenVault, verifyAuditChain, type AuditStore as CoreAuditStore } from "./haechiCore.js"

export type Client = Redis | Cluster

/** What one or more writers did. */
export interface Ledger {
  /** Event ids whose `record()` resolved. */
  readonly ackedEvents: Array<string>
  /** Event ids whose `record()` rejected, with the error's tag. */
  readonly failedEvents: Array<{ readonly id: string; readonly error: string }>
  /** Tokens whose `tokenize()` resolved, with the value and whether it was reused. */
  readonly ackedTokens: Array<{ readonly token: string; readonly value: string; readonly reused: boolean }>
  /** Values whose `tokenize()` rejected. */
  readonly failedTokens: Array<{ readonly value: string; readonly error: string }>
}

export const emptyLedger = (): Ledger => ({ ackedEvents: [], failedEvents: [], ackedTokens: [], failedTokens: [] })

export const errorTag = (error: unknown): string =>
  typeof error === "object" && error !== null && "_tag" in error
    ? String((error as { _tag: unknown })._tag)
    : error instanceof Error
      ? error.name
      : String(error)

/** With DEBUG_FAULTS=1 in the environment, each failed call is printed with its message. */
const debugFailure = (what: string, error: unknown) => {
  if (process.env["DEBUG_FAULTS"]) console.log(`[debug] ${what} failed: ${String(error)}`)
}

/** One replica: haechi's audit sink and token vault over facade stores on `client`. */
export const replica = (
  name: string,
  client: Client,
  prefixes: { readonly audit: string; readonly vault: string },
  options: Omit<RedisStoreOptions, "client" | "keyPrefix"> = {},
  ledger: Ledger = emptyLedger()
) => {
  const auditStore = createRedisAuditStore({ ...options, client, keyPrefix: prefixes.audit })
  const vaultStore = createRedisTokenStore({ ...options, client, keyPrefix: prefixes.vault })
  const sink = createAuditSink({ store: auditStore as unknown as CoreAuditStore })
  const vault = createTokenVault({ store: vaultStore })
  let n = 0
  return {
    name,
    ledger,
    auditStore,
    vaultStore,
    sink,
    vault,
    /** Appends one event with a unique id; true when acknowledged. */
    record: async (): Promise<boolean> => {
      const id = `${name}-e${++n}`
      try {
        await sink.record({ type: "fault-test", id })
        ledger.ackedEvents.push(id)
        return true
      } catch (error) {
        debugFailure(id, error)
        ledger.failedEvents.push({ id, error: errorTag(error) })
        return false
      }
    },
    /** Tokenizes one unique value; true when acknowledged. */
    tokenize: async (): Promise<boolean> => {
      const value = `${name}-v${++n}`
      try {
        const { token, reused } = await vault.tokenize(value, { type: "email" })
        ledger.ackedTokens.push({ token, value, reused })
        return true
      } catch (error) {
        debugFailure(value, error)
        ledger.failedTokens.push({ value, error: errorTag(error) })
        return false
      }
    }
  }
}

export type Replica = ReturnType<typeof replica>

/**
 * Runs `replicas` each in its own loop (record, tokenize, record, ...) until `stop()` says
 * so. Each step yields to the event loop, and a failed call backs off `backoffMs` as a real
 * writer would: a client that fails at once while Redis is down would otherwise spin on
 * microtasks and starve every timer in the process.
 */
export const runLoops = async (
  replicas: ReadonlyArray<Replica>,
  stop: () => boolean,
  backoffMs = 20
): Promise<void> => {
  await Promise.all(
    replicas.map(async (r) => {
      for (let i = 0; !stop(); i++) {
        const ok = i % 2 === 0 ? await r.record() : await r.tokenize()
        await (ok ? new Promise((resolve) => setImmediate(resolve)) : sleep(backoffMs))
      }
    })
  )
}

export const merge = (ledgers: ReadonlyArray<Ledger>): Ledger => ({
  ackedEvents: ledgers.flatMap((l) => l.ackedEvents),
  failedEvents: ledgers.flatMap((l) => l.failedEvents),
  ackedTokens: ledgers.flatMap((l) => l.ackedTokens),
  failedTokens: ledgers.flatMap((l) => l.failedTokens)
})

export interface AuditCheck {
  readonly records: number
  readonly valid: boolean
  readonly reason?: string
  readonly forks: number
  readonly losses: number
  readonly duplicates: number
  readonly falseFailures: number
  /** Event ids in the chain, in order. */
  readonly ids: ReadonlyArray<string>
}

/** Reads the chain under `prefix` with LRANGE and checks it against the ledger. */
export const checkAudit = async (client: Client, prefix: string, ledger: Ledger): Promise<AuditCheck> => {
  const raw = await client.lrange(`${prefix}chain`, 0, -1)
  const records = raw.map((json) => JSON.parse(json) as Record<string, unknown> & { auditIntegrity: any })
  const verify = verifyAuditChain(records)
  let forks = 0
  for (let i = 0; i < records.length; i++) {
    const integrity = records[i]!.auditIntegrity
    const previous = i === 0 ? null : records[i - 1]!.auditIntegrity.eventHash
    if (integrity?.sequence !== i + 1 || integrity?.previousHash !== previous) forks++
  }
  const ids = records.map((r) => String(r.id))
  const counts = new Map<string, number>()
  for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1)
  return {
    records: records.length,
    valid: verify.valid,
    ...(verify.valid ? {} : { reason: verify.reason }),
    forks,
    losses: ledger.ackedEvents.filter((id) => !counts.has(id)).length,
    duplicates: [...counts.values()].filter((n) => n > 1).length,
    falseFailures: ledger.failedEvents.filter((f) => counts.has(f.id)).length,
    ids
  }
}

export interface VaultCheck {
  readonly tokens: number
  readonly version: number
  readonly logEntries: number
  readonly losses: number
  readonly duplicates: number
  readonly falseFailures: number
  /** Problems with the version / change log (must be empty). */
  readonly inconsistencies: ReadonlyArray<string>
  /** What the counts count, so a failure names it: acknowledged tokens lost, values with two tokens, tokens that came back reused. */
  readonly evidence: {
    readonly lost: ReadonlyArray<string>
    readonly twice: ReadonlyArray<string>
    readonly reused: ReadonlyArray<string>
  }
}

const plaintextOf = (json: string): string | undefined => {
  try {
    const record = JSON.parse(json) as { envelope?: { ciphertext?: string } }
    return Buffer.from(record.envelope?.ciphertext ?? "", "base64url").toString("utf8")
  } catch {
    return undefined
  }
}

/**
 * Reads the vault under `prefix` (HGETALL, GET version, LRANGE log) and checks it against
 * the ledger: every acknowledged token holds its value; no value has two tokens, no
 * acknowledged tokenize of a fresh value came back `reused` (a diff applied twice would);
 * the version moved by exactly one per logged commit and no commit id is logged twice.
 */
export const checkVault = async (client: Client, prefix: string, ledger: Ledger): Promise<VaultCheck> => {
  const [tokens, versionText, log] = await Promise.all([
    client.hgetall(`${prefix}tokens`),
    client.get(`${prefix}version`),
    client.lrange(`${prefix}log`, 0, -1)
  ])
  const version = versionText === null ? 0 : Number(versionText)
  const byValue = new Map<string, number>()
  for (const json of Object.values(tokens)) {
    const value = plaintextOf(json)
    if (value !== undefined) byValue.set(value, (byValue.get(value) ?? 0) + 1)
  }
  const lost = ledger.ackedTokens.filter(
    (t) => tokens[t.token] === undefined || plaintextOf(tokens[t.token]!) !== t.value
  )
  const twice = [...byValue].filter(([, n]) => n > 1).map(([value]) => value)
  const reused = ledger.ackedTokens.filter((t) => t.reused)
  const losses = lost.length
  const duplicates = twice.length + reused.length
  const inconsistencies: Array<string> = []
  const commits = new Set<string>()
  log.forEach((entry, i) => {
    const [v, commit] = entry.split(" ")
    if (commit !== undefined && commits.has(commit)) inconsistencies.push(`commit ${commit} logged twice`)
    if (commit !== undefined) commits.add(commit)
    if (version <= LOG_BOUND && Number(v) !== i + 1) inconsistencies.push(`log entry ${i} has version ${v}`)
  })
  if (version <= LOG_BOUND && log.length !== version)
    inconsistencies.push(`version ${version} but ${log.length} log entries`)
  return {
    tokens: Object.keys(tokens).length,
    version,
    logEntries: log.length,
    losses,
    duplicates,
    falseFailures: ledger.failedTokens.filter((f) => byValue.has(f.value)).length,
    inconsistencies,
    evidence: {
      lost: lost.map((t) => `${t.token} (${t.value}): ${tokens[t.token] === undefined ? "absent" : "another value"}`),
      twice,
      reused: reused.map((t) => `${t.token} (${t.value})`)
    }
  }
}

// ---------------------------------------------------------------------------
// a writer that dies mid-transaction

export interface CrashingWriter {
  /** The event id (audit) or value (vault) it was about to write. */
  readonly payload: string
  /** When the child took the lock (ms since epoch, its clock = ours). */
  readonly lockedAt: number
  /** SIGKILL; resolves once the child has exited. */
  kill9(): Promise<void>
}

const CHILD = fileURLToPath(new URL("./replica-crash.mjs", import.meta.url))

/**
 * Starts a plain-Node writer (./replica-crash.mjs, ioredis only) that takes the store's
 * lock (`SET <prefix>lock <token> NX PX ttlMs`, as haechi-store-redis does), reads the
 * head (audit) or the vault, builds its write, and sends only the first half of that
 * script call on a raw socket. Resolves when it has done so; it then hangs until killed.
 */
export const spawnCrashingWriter = (options: {
  readonly store: "audit" | "vault"
  readonly port: number
  readonly prefix: string
  readonly ttlMs: number
}): Promise<CrashingWriter> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, JSON.stringify(options)], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    const exited = new Promise<void>((done) => child.once("exit", () => done()))
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`crashing writer did not get ready: ${err}`))
    }, 10_000)
    child.stderr.on("data", (d) => (err += String(d)))
    child.stdout.on("data", (d) => {
      out += String(d)
      const line = out.split("\n").find((l) => l.startsWith("READY "))
      if (line === undefined) return
      clearTimeout(timer)
      const ready = JSON.parse(line.slice(6)) as { payload: string; lockedAt: number }
      resolve({
        ...ready,
        kill9: async () => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
          await exited
        }
      })
    })
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      reject(new Error(`crashing writer exited early (${code ?? signal}): ${err}`))
    })
  })

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** One summary line per test, so the numbers can be quoted. */
export const summary = (test: string, counts: Record<string, number | string>) =>
  console.log(
    `[summary] ${test}: ${Object.entries(counts)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ")}`
  )
