/**
 * Real failovers to a lagging replica, for the continuity tests: a fleet of store
 * replicas (driven as haechi's core drives them, ./haechiCore.ts) appends and tokenizes
 * while the Redis replica is made to lag; the primary is then killed (-9) and the replica
 * promoted (by Sentinel or by the cluster), and what the fleet did afterwards is counted
 * against what the promoted replica holds.
 *
 * Guarantees:
 * - lagReplica() returns only once the replica's process is frozen (SIGSTOP) and the
 *   primary has dropped its replication link, so every write from then on reaches the
 *   primary only (bytes already sent are applied when the replica runs again);
 *   resume() is idempotent and runFailover() always calls it;
 * - a FleetMember never throws from record()/tokenize(); what it saw (the head it last
 *   read or committed on, the token ids it staged) is observed through the store
 *   contracts only, by wrapping the stores handed to the core: no hook in src/;
 * - runFailover() bounds every wait, stops every loop and closes every client it opened,
 *   whatever happens; it throws (failing the test) only when the harness itself could
 *   not do its part (no lag, no promotion in time), never because of what the stores did.
 */
import { Effect, Metric } from "effect"
import { Redis } from "ioredis"
import * as AuditStore from "../../src/AuditStore.js"
import type { DurabilityOptions } from "../../src/internal/durability.js"
import {
  createRedisAuditStore,
  createRedisTokenStore,
  toHaechiAuditStore,
  toHaechiTokenStore,
  type HaechiAuditStore,
  type HaechiTokenStore
} from "../../src/haechi.js"
import * as Metrics from "../../src/Metrics.js"
import { layerFromClient } from "../../src/RedisClient.js"
import * as TokenStore from "../../src/TokenStore.js"
import type { AuditIntegrity } from "../../src/Chain.js"
import {
  createAuditSink,
  createTokenVault,
  verifyAuditChain,
  type AuditStore as CoreAuditStore,
  type TokenStore as CoreTokenStore
} from "./haechiCore.js"
import { refVerify } from "./oracle.js"
import { parseInfo, redisCommand, type RedisServer } from "./redisProcess.js"
import { checkAudit, checkVault, emptyLedger, errorTag, merge, sleep, type Client, type Ledger } from "./replica.js"

// ---------------------------------------------------------------------------
// the lag

/** Freezes `replica` and cuts its replication link on `primaryPort`; resume() lets it run again. */
export async function lagReplica(primaryPort: number, replica: RedisServer): Promise<{ resume(): void }> {
  const pid = replica.pid
  let resumed = false
  const resume = () => {
    if (resumed) return
    resumed = true
    try {
      process.kill(pid, "SIGCONT")
    } catch {
      // already gone
    }
  }
  process.kill(pid, "SIGSTOP")
  try {
    // The frozen replica cannot reconnect, so nothing written from now on reaches it.
    const killed = await redisCommand(primaryPort, ["CLIENT", "KILL", "TYPE", "replica"])
    if (killed !== 1)
      throw new Error(`CLIENT KILL TYPE replica on ${primaryPort} closed ${String(killed)} links, not 1`)
    return { resume }
  } catch (e) {
    resume()
    throw e
  }
}

// ---------------------------------------------------------------------------
// a member of the fleet

export type StoreStyle = "facade" | "effect"

export interface Outcome {
  /** performance.now() when the call started, and when it settled. */
  readonly startedAt: number
  readonly at: number
  readonly ok: boolean
  readonly error?: string
  /** Audit calls: the head this member had last seen when the call started. */
  readonly seenAtStart?: AuditIntegrity | null | undefined
  /** How it was seen: handed out by `readLastIntegrity`, committed, or committed with `DurabilityTimeout`. */
  readonly seenHowAtStart?: SeenHow | undefined
}

type SeenHow = "read" | "committed" | "DurabilityTimeout"

export interface FleetMember {
  readonly name: string
  readonly ledger: Ledger
  readonly vault: ReturnType<typeof createTokenVault>
  /** Every token id a mutation of this member staged with `set`, committed or not. */
  readonly staged: Set<string>
  readonly auditOutcomes: Array<Outcome>
  readonly vaultOutcomes: Array<Outcome>
  record(): Promise<boolean>
  tokenize(): Promise<boolean>
}

export interface MemberOptions {
  readonly style: StoreStyle
  readonly durability?: DurabilityOptions | undefined
  /** More audit-store options, passed through as they are (for example a rewind policy). */
  readonly audit?: Readonly<Record<string, unknown>> | undefined
}

const storesFor = async (
  client: Client,
  prefixes: { readonly audit: string; readonly vault: string },
  { audit: more = {}, durability, style }: MemberOptions
): Promise<{ audit: HaechiAuditStore; vault: HaechiTokenStore }> => {
  const shared = durability === undefined ? {} : { durability }
  if (style === "facade") {
    return {
      audit: createRedisAuditStore({ ...more, client, keyPrefix: prefixes.audit, ...shared }),
      vault: createRedisTokenStore({ client, keyPrefix: prefixes.vault, ...shared })
    }
  }
  const layer = layerFromClient(client)
  const auditOptions = { ...more, keyPrefix: prefixes.audit, ...shared } as AuditStore.AuditStoreOptions
  const audit = await Effect.runPromise(Effect.provide(AuditStore.make(auditOptions), layer))
  const vault = await Effect.runPromise(
    Effect.provide(TokenStore.make({ keyPrefix: prefixes.vault, ...shared }), layer)
  )
  return { audit: toHaechiAuditStore(audit), vault: toHaechiTokenStore(vault) }
}

/** A failed durable step: the commit is on the primary, only not yet acknowledged. */
const committedAnyway = (error: unknown) => errorTag(error) === "DurabilityTimeout"

/** One replica of the fleet: haechi's audit sink and token vault over watched stores. */
export const fleetMember = async (
  name: string,
  client: Client,
  prefixes: { readonly audit: string; readonly vault: string },
  options: MemberOptions
): Promise<FleetMember> => {
  const { audit, vault } = await storesFor(client, prefixes, options)
  // The head this member last read or committed on (null: the empty chain; undefined: none yet).
  let seen: AuditIntegrity | null | undefined
  let seenHow: SeenHow | undefined
  const watchedAudit = {
    transaction: <A>(
      fn: (tx: { readLastIntegrity(): Promise<unknown>; persist(r: unknown): Promise<void> }) => Promise<A>
    ) =>
      audit.transaction(({ persist, readLastIntegrity }) =>
        fn({
          readLastIntegrity: async () => {
            const head = await readLastIntegrity()
            seen = head
            seenHow = "read"
            return head
          },
          persist: async (record) => {
            const integrity = (record as { auditIntegrity: AuditIntegrity }).auditIntegrity
            try {
              await persist(record as Record<string, unknown>)
              seen = integrity
              seenHow = "committed"
            } catch (error) {
              if (committedAnyway(error)) {
                seen = integrity
                seenHow = "DurabilityTimeout"
              }
              throw error
            }
          }
        })
      ),
    ready: () => audit.ready()
  }
  const staged = new Set<string>()
  const watchedVault: CoreTokenStore = {
    mutate: (fn) =>
      vault.mutate((view) =>
        fn({
          get: (token) => view.get(token),
          entries: () => view.entries(),
          set: (token, record) => {
            staged.add(token)
            view.set(token, record as Record<string, unknown>)
          },
          delete: (token) => {
            view.delete(token)
          }
        })
      ),
    read: (fn) => vault.read(fn)
  }
  const sink = createAuditSink({ store: watchedAudit as unknown as CoreAuditStore })
  const tokenVault = createTokenVault({ store: watchedVault })
  const ledger = emptyLedger()
  const auditOutcomes: Array<Outcome> = []
  const vaultOutcomes: Array<Outcome> = []
  let n = 0
  return {
    name,
    ledger,
    vault: tokenVault,
    staged,
    auditOutcomes,
    vaultOutcomes,
    record: async () => {
      const id = `${name}-e${++n}`
      const startedAt = performance.now()
      const seenAtStart = seen
      const seenHowAtStart = seenHow
      try {
        await sink.record({ type: "failover-test", id })
        ledger.ackedEvents.push(id)
        auditOutcomes.push({ startedAt, at: performance.now(), ok: true, seenAtStart, seenHowAtStart })
        return true
      } catch (error) {
        ledger.failedEvents.push({ id, error: errorTag(error) })
        auditOutcomes.push({
          startedAt,
          at: performance.now(),
          ok: false,
          error: errorTag(error),
          seenAtStart,
          seenHowAtStart
        })
        return false
      }
    },
    tokenize: async () => {
      const value = `${name}-v${++n}`
      const startedAt = performance.now()
      try {
        const { reused, token } = await tokenVault.tokenize(value, { type: "email" })
        ledger.ackedTokens.push({ token, value, reused })
        vaultOutcomes.push({ startedAt, at: performance.now(), ok: true })
        return true
      } catch (error) {
        ledger.failedTokens.push({ value, error: errorTag(error) })
        vaultOutcomes.push({ startedAt, at: performance.now(), ok: false, error: errorTag(error) })
        return false
      }
    }
  }
}

/** Runs `member` (record, tokenize, record, ...) until `stop()`; a failed call backs off as a real writer would. */
const loop = async (member: FleetMember, stop: () => boolean): Promise<void> => {
  for (let i = 0; i < 1_000_000 && !stop(); i++) {
    const ok = i % 2 === 0 ? await member.record() : await member.tokenize()
    await (ok ? new Promise((resolve) => setImmediate(resolve)) : sleep(25))
  }
}

// ---------------------------------------------------------------------------
// the scenario

/** What a failover scenario needs from Sentinel or the cluster. */
export interface FailoverTarget {
  /** A new client, as an application connects (ioredis's Sentinel client, or a Cluster client). */
  connect(): Client
  /** The primary (cluster: the master that owns the stores' slot) and its replica. */
  readonly primary: RedisServer
  readonly replica: RedisServer
  /** Resolves once the replica is the writable master clients are sent to; rejects after `timeoutMs`. */
  waitPromoted(timeoutMs: number): Promise<void>
}

/** Store failures that mean the chain was found rewound or broken: the detection itself. */
export const REWIND_ERRORS = ["ChainRewound", "ChainBroken"]

/** The call committed: acknowledged, or committed on the master without its durable acknowledgement. */
const committed = (o: Outcome) => o.ok || o.error === "DurabilityTimeout"
/** The call got an answer that says what the store did with a rewound chain: went on, or refused. */
const decisive = (o: Outcome) => committed(o) || REWIND_ERRORS.includes(o.error ?? "")

/** Failures a writer may see around a failover without anything being wrong (all fail closed). */
export const FAILOVER_ERRORS = [
  "RedisUnavailable",
  "CommitOutcomeUnknown",
  "LockTimeout",
  "RetriesExhausted",
  "RedisCommandFailed",
  "DurabilityTimeout",
  ...REWIND_ERRORS
]

export interface FailoverFigures {
  readonly recordsAcked: number
  readonly tokensAcked: number
  /** Of those, acknowledged before the primary was killed (the ones a failover can lose). */
  readonly recordsAckedBeforeKill: number
  readonly tokensAckedBeforeKill: number
  /** Acknowledged, yet not on the promoted replica. */
  readonly recordsLost: number
  readonly tokensLost: number
  /**
   * (-1 for kept: the replica was promoted before it could be asked.)
   * Records / vault commits on the old primary at the last look before the kill (the
   * fleet writes on until the kill, so there may be more), and what the promoted replica kept.
   */
  readonly chainAtKill: number
  readonly chainKept: number
  readonly versionAtKill: number
  readonly versionKept: number
  /** Chain links that do not follow their predecessor, plus one if a verifier rejects the chain. */
  readonly forks: number
  /** Answers (reveal, detokenize) that disagree with what the promoted replica holds. */
  readonly staleReveals: number
  /** Members whose exportMetadata listed other tokens than the promoted replica holds. */
  readonly staleExports: number
  /** Rewound members that appended on without an error or a recorded gap; members serving an unbacked vault. */
  readonly silentAuditRewinds: number
  /** For each silent audit rewind: the member, the head it had seen and how, and its calls' outcomes after the kill. */
  readonly silentAuditDetails: ReadonlyArray<string>
  readonly silentVaultRewinds: number
  /** Members whose last seen head was lost, and how each was told: by an error, or by a recorded gap. */
  readonly rewoundMembers: number
  readonly rewindErrors: number
  readonly rewindsRecorded: number
  /** Rewound members that never got a decisive answer (neither success nor a rewind error). */
  readonly undecided: number
  /** What the stores counted under these prefixes (`haechi_store_chain_rewinds_total`, `haechi_store_vault_rewinds_total`). */
  readonly chainRewindsCounted: number
  readonly vaultRewindsCounted: number
  /**
   * The idle member (idle from just before the kill until Redis climbed past what it
   * saw): whether its last seen head was lost, and its records / vault commits in calls
   * started after the lag began (none of them can be on the promoted replica).
   */
  readonly idleRewound: boolean
  readonly idleCommittedInLag: { readonly records: number; readonly tokens: number }
  /** The member made after the failover: acknowledged records and tokens. */
  readonly newcomerAcked: number
  readonly chainValid: boolean
  readonly oracleValid: boolean
  readonly headConsistent: boolean
  readonly vaultInconsistencies: ReadonlyArray<string>
  readonly failedBy: Record<string, number>
  readonly lagMs: number
  readonly failoverMs: number
}

export interface ScenarioOptions {
  readonly prefixes: { readonly audit: string; readonly vault: string }
  readonly durability?: DurabilityOptions | undefined
  /** More audit-store options for every member (see MemberOptions). */
  readonly audit?: Readonly<Record<string, unknown>> | undefined
  /** Longest the replica is left lagging (default 2500 ms). */
  readonly maxLagMs?: number
  /** How long the promotion may take (default 25 000 ms). */
  readonly promotionTimeoutMs?: number
}

/** The process-wide counter `metric` tagged with this store's prefix. */
const counted = (metric: Metric.Metric.Counter<number>, prefix: string): number =>
  Effect.runSync(Metric.value(metric.pipe(Metric.tagged("prefix", prefix)))).count

const waitUntil = async (timeoutMs: number, done: () => boolean | Promise<boolean>): Promise<boolean> => {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    if (await done()) return true
    if (performance.now() > deadline) return false
    await sleep(20)
  }
}

const num = async (port: number, args: ReadonlyArray<string>): Promise<number> => {
  const reply = await redisCommand(port, args, { timeoutMs: 2000 })
  return reply === null ? 0 : Number(reply)
}

const plaintextOf = (json: string | undefined): string | undefined => {
  try {
    return Buffer.from(
      (JSON.parse(json ?? "null") as { envelope: { ciphertext: string } }).envelope.ciphertext,
      "base64url"
    ).toString("utf8")
  } catch {
    return undefined
  }
}

/** Counts one member's answers against what Redis holds (`held`: token -> record JSON). */
const staleAnswers = async (
  member: FleetMember,
  tokens: ReadonlyArray<string>,
  held: Record<string, string>
): Promise<{ stale: number; exportMismatch: number }> => {
  let stale = 0
  const answered = await member.vault.detokenize(tokens)
  for (const token of tokens) {
    const want = held[token] === undefined ? undefined : plaintextOf(held[token])
    if (answered.get(token) !== want) stale++
  }
  // Single reveals too (the core's other read): lost tokens first, then kept ones.
  const lost = tokens.filter((t) => held[t] === undefined).slice(0, 10)
  const kept = tokens.filter((t) => held[t] !== undefined).slice(0, 10)
  for (const token of [...lost, ...kept]) {
    const got = await member.vault.reveal(token).then(
      (r) => r.plaintext,
      (e: Error) => (e.message === "Unknown token" ? undefined : `error ${errorTag(e)}`)
    )
    if (got !== (held[token] === undefined ? undefined : plaintextOf(held[token]))) stale++
  }
  const listed = new Set((await member.vault.exportMetadata()).map((m) => m.token))
  const heldIds = Object.keys(held)
  const exportMismatch =
    heldIds.filter((t) => !listed.has(t)).length + [...listed].filter((t) => held[t] === undefined).length
  return { stale, exportMismatch }
}

/**
 * The scenario: members a, b (facade) and c (Effect API) write in loops, and an idle member
 * z writes with them until just before the kill; the replica lags; the primary is killed
 * (-9) and the replica promoted while a, b and c go on; a newcomer n (no durability: it
 * only moves Redis on) writes until the chain and the vault have climbed past what z saw;
 * then every member's reads are checked and z appends once. Counts, never asserts.
 */
export async function runFailover(target: FailoverTarget, options: ScenarioOptions): Promise<FailoverFigures> {
  const { audit: more, durability, prefixes } = options
  const countedBefore = {
    chain: counted(Metrics.chainRewinds, prefixes.audit),
    vault: counted(Metrics.vaultRewinds, prefixes.vault)
  }
  const maxLagMs = options.maxLagMs ?? 2500
  const clients: Array<Client> = []
  const connect = () => {
    const c = target.connect()
    c.on("error", () => {})
    clients.push(c)
    return c
  }
  const stopped = new Set<FleetMember>()
  const running = new Map<FleetMember, Promise<void>>()
  const start = (m: FleetMember) =>
    running.set(
      m,
      loop(m, () => stopped.has(m))
    )
  let lag: { resume(): void } | undefined
  const members: Array<FleetMember> = []
  try {
    const [a, b, c, z] = await Promise.all([
      fleetMember("a", connect(), prefixes, { style: "facade", durability, audit: more }),
      fleetMember("b", connect(), prefixes, { style: "facade", durability, audit: more }),
      fleetMember("c", connect(), prefixes, { style: "effect", durability, audit: more }),
      fleetMember("z", connect(), prefixes, { style: "facade", durability, audit: more })
    ])
    const fleet = [a!, b!, c!]
    const idle = z!
    members.push(...fleet, idle)
    for (const m of members) start(m)
    // Healthy: everyone has written (and, with durability, had it acknowledged by the replica).
    const healthy = await waitUntil(10_000, () =>
      members.every((m) => m.ledger.ackedEvents.length >= 4 && m.ledger.ackedTokens.length >= 4)
    )
    if (!healthy) throw new Error("the fleet did not get going on the healthy primary within 10 s")

    // The lag: from now on the primary alone takes what the fleet commits.
    lag = await lagReplica(target.primary.port, target.replica)
    const lagStart = performance.now()
    const inLag = (o: Array<Outcome>) => o.filter((x) => x.startedAt > lagStart && committed(x)).length
    await waitUntil(maxLagMs - 300, () =>
      members.every((m) => inLag(m.auditOutcomes) >= 2 && inLag(m.vaultOutcomes) >= 2)
    )
    stopped.add(idle)
    await running.get(idle)
    const idleCommittedInLag = { records: inLag(idle.auditOutcomes), tokens: inLag(idle.vaultOutcomes) }
    await sleep(50)
    const chainAtKill = await num(target.primary.port, ["LLEN", `${prefixes.audit}chain`])
    const versionAtKill = await num(target.primary.port, ["GET", `${prefixes.vault}version`])
    await target.primary.kill9()
    const lagMs = performance.now() - lagStart
    const killedAt = performance.now()
    lag.resume()
    // What the replica kept: once it has noticed the dead link, it has applied all it got.
    // (A cluster replica answers keyed reads only on a READONLY connection.)
    const onReplica = new Redis(target.replica.port, "127.0.0.1", { maxRetriesPerRequest: 1, commandTimeout: 1000 })
    onReplica.on("error", () => {})
    clients.push(onReplica)
    await onReplica.readonly().catch(() => undefined)
    let kept = { chain: -1, version: -1 }
    await waitUntil(5000, async () => {
      try {
        const repl = parseInfo(await onReplica.info("replication"))
        // Only a replica that is not promoted yet tells what it kept (-1 stays: unknown).
        if (repl["role"] !== "slave") return true
        if (repl["master_link_status"] !== "down") return false
        const [chain, version] = await Promise.all([
          onReplica.llen(`${prefixes.audit}chain`),
          onReplica.get(`${prefixes.vault}version`)
        ])
        kept = { chain, version: Number(version ?? 0) }
        return true
      } catch {
        return false
      }
    })

    await target.waitPromoted(options.promotionTimeoutMs ?? 25_000)
    const failoverMs = performance.now() - killedAt
    // A replica made after the failover moves Redis past what the idle member saw.
    const newcomer = await fleetMember("n", connect(), prefixes, { style: "facade", audit: more })
    members.push(newcomer)
    start(newcomer)
    const promoted = target.replica.port
    const climbed = await waitUntil(
      15_000,
      async () =>
        (await num(promoted, ["LLEN", `${prefixes.audit}chain`])) > chainAtKill &&
        (await num(promoted, ["GET", `${prefixes.vault}version`])) > versionAtKill &&
        fleet.every((m) => m.auditOutcomes.some((o) => o.startedAt > killedAt && decisive(o)))
    )
    for (const m of members) stopped.add(m)
    await Promise.all(running.values())
    if (!climbed) throw new Error("Redis did not climb past the idle member's view within 15 s of the failover")

    // Reads: every member, the idle one first, against what the promoted replica holds.
    const inspector = new Redis(promoted, "127.0.0.1")
    inspector.on("error", () => {})
    clients.push(inspector)
    const held = await inspector.hgetall(`${prefixes.vault}tokens`)
    const all = merge(members.map((m) => m.ledger))
    const tokens = [
      ...new Set([...idle.staged, ...members.flatMap((m) => [...m.staged]), ...all.ackedTokens.map((t) => t.token)])
    ]
    let staleReveals = 0
    let staleExports = 0
    let silentVaultRewinds = 0
    for (const m of [idle, ...fleet, newcomer]) {
      const { exportMismatch, stale } = await staleAnswers(m, tokens, held)
      staleReveals += stale
      if (exportMismatch > 0) staleExports++
      if (stale > 0 || exportMismatch > 0) silentVaultRewinds++
    }
    // The idle member appends once (a few tries while it gets no decisive answer).
    for (let i = 0; i < 5; i++) {
      await idle.record()
      if (decisive(idle.auditOutcomes.at(-1)!)) break
      await sleep(100)
    }

    const chainJson = await inspector.lrange(`${prefixes.audit}chain`, 0, -1)
    const chain = chainJson.map((json) => JSON.parse(json) as { auditIntegrity?: AuditIntegrity })
    let rewoundMembers = 0
    let rewindErrors = 0
    let rewindsRecorded = 0
    let silentAuditRewinds = 0
    const silentAuditDetails: Array<string> = []
    let undecided = 0
    let idleRewound = false
    // A member is judged by its calls started after the kill (only the promoted replica can
    // answer them), and by the head it had seen when the first of them started: every call
    // before it has settled by then, durable ones whose WAIT outlived the primary included.
    for (const m of [...fleet, idle]) {
      const seen = m.auditOutcomes.find((o) => o.startedAt > killedAt)?.seenAtStart
      if (seen === null || seen === undefined) continue
      if (chain[seen.sequence - 1]?.auditIntegrity?.eventHash === seen.eventHash) continue
      rewoundMembers++
      if (m === idle) idleRewound = true
      const first = m.auditOutcomes.find((o) => o.startedAt > killedAt && decisive(o))
      if (first === undefined) undecided++
      else if (!committed(first)) rewindErrors++
      // A lost head can be in the chain only if a record names it: the gap was recorded.
      else if (chainJson.some((json) => json.includes(seen.eventHash))) rewindsRecorded++
      else {
        silentAuditRewinds++
        const after = m.auditOutcomes.filter((o) => o.startedAt > killedAt).slice(0, 6)
        const how = after[0]?.seenHowAtStart ?? "?"
        const outcomes = after.map((o) => (o.ok ? "ok" : o.error)).join(",")
        silentAuditDetails.push(
          `${m.name} saw ${seen.sequence}/${seen.eventHash.slice(0, 8)} (${how}) then ${outcomes}`
        )
      }
    }

    const ledger = merge(members.map((m) => m.ledger))
    const ackedBefore = (of: (m: FleetMember) => Array<Outcome>) =>
      members.reduce((n, m) => n + of(m).filter((o) => o.ok && o.at <= killedAt).length, 0)
    const audit = await checkAudit(inspector, prefixes.audit, ledger)
    const vault = await checkVault(inspector, prefixes.vault, ledger)
    const [head, headHash] = await Promise.all([
      inspector.get(`${prefixes.audit}head`),
      inspector.get(`${prefixes.audit}head:hash`)
    ])
    const last = chain.at(-1)?.auditIntegrity
    const headConsistent =
      last === undefined
        ? head === null && headHash === null
        : headHash === last.eventHash &&
          head !== null &&
          (JSON.parse(head) as AuditIntegrity).eventHash === last.eventHash
    const chainValid = verifyAuditChain(chain).valid
    const oracleValid = refVerify(chain).valid
    const failedBy: Record<string, number> = {}
    for (const f of [...ledger.failedEvents, ...ledger.failedTokens]) failedBy[f.error] = (failedBy[f.error] ?? 0) + 1
    return {
      recordsAcked: ledger.ackedEvents.length,
      tokensAcked: ledger.ackedTokens.length,
      recordsAckedBeforeKill: ackedBefore((m) => m.auditOutcomes),
      tokensAckedBeforeKill: ackedBefore((m) => m.vaultOutcomes),
      recordsLost: audit.losses,
      tokensLost: vault.losses,
      chainAtKill,
      chainKept: kept.chain,
      versionAtKill,
      versionKept: kept.version,
      forks: audit.forks + (chainValid && oracleValid ? 0 : 1),
      staleReveals,
      staleExports,
      silentAuditRewinds,
      silentAuditDetails,
      silentVaultRewinds,
      rewoundMembers,
      rewindErrors,
      rewindsRecorded,
      undecided,
      chainRewindsCounted: counted(Metrics.chainRewinds, prefixes.audit) - countedBefore.chain,
      vaultRewindsCounted: counted(Metrics.vaultRewinds, prefixes.vault) - countedBefore.vault,
      idleRewound,
      idleCommittedInLag,
      newcomerAcked: newcomer.ledger.ackedEvents.length + newcomer.ledger.ackedTokens.length,
      chainValid,
      oracleValid,
      headConsistent,
      vaultInconsistencies: vault.inconsistencies,
      failedBy,
      lagMs: Math.round(lagMs),
      failoverMs: Math.round(failoverMs)
    }
  } finally {
    lag?.resume()
    for (const m of members) stopped.add(m)
    await Promise.race([Promise.allSettled(running.values()), sleep(10_000)])
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())))
  }
}
