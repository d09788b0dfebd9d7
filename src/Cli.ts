/**
 * `haechi-store`: verify, export and inspect the shared stores from a shell, and a demo.
 *
 * Guarantees:
 * - Exit codes: 0 done (and the chain is valid); 1 the chain is NOT valid (tampered,
 *   truncated or forked), with the failing sequence and reason on the last line of
 *   stdout; 2 bad arguments; 3 the work could not be done (Redis unreachable or
 *   refusing, a file that cannot be written, corrupt keys).
 * - Every failure is ONE line on stderr (`haechi-store: …`), never a stack trace.
 * - A Redis password is never printed: URLs are shown with it replaced by `***`, and
 *   every message is scrubbed of it before it is printed. `--url` defaults to
 *   `REDIS_URL`, read as a redacted Config.
 * - An unreachable Redis fails fast: one connection attempt with a short connect
 *   timeout, awaited before any work; no reconnection; one try per request.
 * - Long work (verify, export, demo) shows a progress bar when stdout is a terminal,
 *   and a plain progress line every few seconds otherwise.
 * - `export` streams (a few pages in memory) into a temporary file renamed over FILE
 *   only once complete, so FILE is never a partial chain.
 */
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import { Redis } from "ioredis"
import * as AuditStore from "./AuditStore.js"
import { type Checkpoint, describeFailure, type VerifyResult } from "./Chain.js"
import { runDemo, type DemoSummary } from "./Demo.js"
import { DEFAULT_AUDIT_PREFIX, DEFAULT_VAULT_PREFIX, auditKeys, vaultKeys } from "./Keys.js"
import { RedisClient, fromClient, type RedisClientShape } from "./RedisClient.js"
import { RedisUnavailable } from "./Errors.js"
import * as TokenStore from "./TokenStore.js"
import * as RateLimiter from "./RateLimiter.js"
import { exportJsonl, verifyStore } from "./Verify.js"

export const NAME = "haechi-store"
export const VERSION = "0.1.0"

/** Exit codes. */
export const ExitCode = { ok: 0, invalid: 1, usage: 2, failed: 3 } as const

/** A failure already worded for the operator: one line and an exit code. */
export class CliFailure extends Data.TaggedError("CliFailure")<{
  readonly line: string | undefined
  readonly code: number
}> {}

// ---------------------------------------------------------------------------
// Redis URLs: resolved, validated, shown redacted, scrubbed from messages

interface RedisTarget {
  readonly url: Redacted.Redacted
  /** The URL with its password replaced by `***`. */
  readonly shown: string
  /** Removes the password (raw and decoded) from a message. */
  readonly scrub: (text: string) => string
}

const identity = (text: string) => text

/** `--url`, else `REDIS_URL`; `None` when neither is set (or either is empty). */
const resolveUrl = (option: Option.Option<Redacted.Redacted>): Effect.Effect<Option.Option<Redacted.Redacted>> =>
  Option.match(Option.filter(option, (url) => Redacted.value(url) !== ""), {
    onSome: (url) => Effect.succeedSome(url),
    onNone: () =>
      Config.option(Config.redacted("REDIS_URL")).pipe(
        Effect.map(Option.filter((url) => Redacted.value(url) !== "")),
        Effect.orElseSucceed(() => Option.none())
      )
  })

const urlUsage = "expected redis://[[user]:password@]host[:port][/db] or rediss://…"

const target = (url: Redacted.Redacted): Effect.Effect<RedisTarget, CliFailure> =>
  Effect.suspend(() => {
    const raw = Redacted.value(url)
    let parsed: URL
    try {
      parsed = new URL(raw)
    } catch {
      return Effect.fail(new CliFailure({ line: `invalid Redis URL (${urlUsage})`, code: ExitCode.usage }))
    }
    if ((parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") || parsed.hostname === "") {
      return Effect.fail(new CliFailure({ line: `invalid Redis URL (${urlUsage})`, code: ExitCode.usage }))
    }
    const secrets: Array<string> = []
    if (parsed.password !== "") {
      secrets.push(parsed.password)
      try {
        secrets.push(decodeURIComponent(parsed.password))
      } catch {
        // keep the raw form only
      }
      parsed.password = "***"
    }
    const shown = parsed.toString().replace("%2A%2A%2A", "***")
    const words = [...new Set(secrets)].filter((s) => s.length > 0).sort((a, b) => b.length - a.length)
    const scrub =
      words.length === 0
        ? identity
        : (text: string) => {
            let out = text.split(raw).join(shown)
            for (const word of words) out = out.split(word).join("***")
            return out
          }
    return Effect.succeed({ url, shown, scrub })
  })

/**
 * One connection for the scope's life, failing fast: a single attempt with a short
 * connect timeout, awaited before any work; no reconnection; one try per request.
 * (The offline queue stays on: a lock's subscriber, a duplicate of this client,
 * connects on its first command.)
 */
const connectTo = (t: RedisTarget): Effect.Effect<RedisClientShape, RedisUnavailable, import("effect").Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<Redis, RedisUnavailable>((resume) => {
      let last: unknown
      const client = new Redis(Redacted.value(t.url), {
        lazyConnect: true,
        connectTimeout: 3000,
        maxRetriesPerRequest: 1,
        retryStrategy: () => null
      })
      // Without a listener ioredis prints every error event to stderr itself.
      client.on("error", (error) => {
        last = error
      })
      client.connect().then(
        () => resume(Effect.succeed(client)),
        (error) => {
          client.disconnect()
          resume(Effect.fail(new RedisUnavailable({ operation: "connect", cause: last ?? error })))
        }
      )
      return Effect.sync(() => client.disconnect())
    }),
    (client) => Effect.promise(() => client.quit().then(() => undefined, () => client.disconnect()))
  ).pipe(Effect.map(fromClient))

const redisLayer = (t: RedisTarget): Layer.Layer<RedisClient, RedisUnavailable> => Layer.scoped(RedisClient, connectTo(t))

/** The target from `--url` / `REDIS_URL`, or a usage failure saying how to give one. */
const requireTarget = (option: Option.Option<Redacted.Redacted>) =>
  Effect.flatMap(resolveUrl(option), (url) =>
    Option.match(url, {
      onNone: () =>
        Effect.fail(new CliFailure({ line: "no Redis URL: pass --url or set REDIS_URL", code: ExitCode.usage })),
      onSome: target
    })
  )

// ---------------------------------------------------------------------------
// Errors -> one line

const oneLine = (text: string): string =>
  text
    .replace(/\u001b\[[0-9;]*[A-Za-z]/g, "")
    .replace(/\s*\n\s*/g, " ")
    .trim()

const messageOf = (error: unknown): string => {
  if (error instanceof Error) return error.message
  if (typeof error === "object" && error !== null && "message" in error) return String((error as { message: unknown }).message)
  return String(error)
}

/** Words any failure as one line with an exit code; `scrub` removes the password. */
const toFailure = (error: unknown, scrub: (text: string) => string, shown: string | undefined): CliFailure => {
  if (error instanceof CliFailure) return error
  const tag = (error as { _tag?: string } | null)?._tag
  const where = shown === undefined ? "" : ` at ${shown}`
  switch (tag) {
    case "RedisUnavailable": {
      const cause = (error as RedisUnavailable).cause
      return new CliFailure({ line: scrub(`cannot reach Redis${where}: ${messageOf(cause)}`), code: ExitCode.failed })
    }
    case "RedisCommandFailed":
      return new CliFailure({ line: scrub(`Redis${where} refused: ${messageOf(error)}`), code: ExitCode.failed })
    case "InvalidConfig":
      return new CliFailure({ line: scrub(messageOf(error)), code: ExitCode.usage })
    case "SystemError":
    case "BadArgument":
      return new CliFailure({ line: scrub(messageOf(error)), code: ExitCode.failed })
    default:
      return new CliFailure({ line: scrub(messageOf(error)), code: ExitCode.failed })
  }
}

/** Runs a command's work against Redis, mapping every failure to one scrubbed line. */
const withRedis = <A, E, R>(
  option: Option.Option<Redacted.Redacted>,
  work: (t: RedisTarget) => Effect.Effect<A, E, R | RedisClient>
): Effect.Effect<A, CliFailure, Exclude<R, RedisClient>> =>
  Effect.flatMap(requireTarget(option), (t) =>
    work(t).pipe(
      Effect.provide(redisLayer(t)),
      Effect.catchAllCause((cause) => Effect.fail(failureOf(cause, t.scrub, t.shown)))
    )
  ) as Effect.Effect<A, CliFailure, Exclude<R, RedisClient>>

const failureOf = <E>(cause: Cause.Cause<E>, scrub: (text: string) => string, shown: string | undefined): CliFailure =>
  Option.match(Cause.failureOption(cause), {
    onSome: (error) => toFailure(error, scrub, shown),
    onNone: () =>
      Cause.isInterruptedOnly(cause)
        ? new CliFailure({ line: "interrupted", code: 130 })
        : new CliFailure({ line: scrub(`internal error: ${messageOf(Cause.squash(cause))}`), code: ExitCode.failed })
  })

// ---------------------------------------------------------------------------
// Progress: a bar on a terminal, a plain line every few seconds otherwise

interface Progress {
  readonly update: (done: number, total: number) => Effect.Effect<void>
  readonly finish: Effect.Effect<void>
}

const progress = (label: string, unit: string): Progress => {
  const tty = process.stdout.isTTY === true
  const started = performance.now()
  let shownAt = 0
  let drawn = false
  const interval = tty ? 100 : 5000
  return {
    update: (done, total) =>
      Effect.sync(() => {
        const now = performance.now()
        if (now - shownAt < interval) return
        shownAt = now
        const rate = done / Math.max(0.001, (now - started) / 1000)
        const of = Math.max(total, done)
        const pct = of === 0 ? 100 : Math.floor((done / of) * 100)
        if (tty) {
          const width = 28
          const filled = Math.round((pct / 100) * width)
          process.stdout.write(
            `\r${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${pct}% ${done}/${of} ${unit} ` +
              `${Math.round(rate)}/s\u001b[K`
          )
          drawn = true
        } else {
          process.stdout.write(`${label}: ${done}/${of} ${unit} (${pct}%), ${Math.round(rate)}/s\n`)
        }
      }),
    finish: Effect.sync(() => {
      if (drawn) process.stdout.write("\r\u001b[K")
    })
  }
}

// ---------------------------------------------------------------------------
// Options shared by commands

const urlOption = Options.redacted("url").pipe(
  Options.withPseudoName("URL"),
  Options.withDescription("Redis URL, redis://[[user]:password@]host[:port][/db]; default: $REDIS_URL"),
  Options.optional
)

const prefixOption = (name: string, fallback: string, what: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("PREFIX"),
    Options.withDescription(`key prefix of the ${what} (default "${fallback}")`),
    Options.withDefault(fallback)
  )

const pageSizeOption = Options.integer("page-size").pipe(
  Options.withPseudoName("N"),
  Options.withDescription("records per LRANGE (default 1000)"),
  Options.withDefault(1000)
)

const hashPattern = /^[A-Za-z0-9_-]{43}$/

const checkpointOf = (
  sequence: Option.Option<number>,
  hash: Option.Option<string>
): Effect.Effect<Checkpoint | undefined, CliFailure> => {
  const usage = (line: string) => Effect.fail(new CliFailure({ line, code: ExitCode.usage }))
  if (Option.isNone(sequence) && Option.isNone(hash)) return Effect.succeed(undefined)
  if (Option.isNone(sequence) || Option.isNone(hash)) {
    return usage("--from-sequence and --from-hash go together (a checkpoint is a sequence and its eventHash)")
  }
  if (!Number.isSafeInteger(sequence.value) || sequence.value < 1) return usage("--from-sequence must be an integer >= 1")
  if (!hashPattern.test(hash.value)) return usage("--from-hash must be an eventHash (43 base64url characters)")
  return Effect.succeed({ sequence: sequence.value, eventHash: hash.value })
}

// ---------------------------------------------------------------------------
// verify

/** The result as the last line of `verify` (and of the demo's check). */
export const describeResult = (result: VerifyResult, from: Checkpoint | undefined): string => {
  if (result.valid) {
    const after = from === undefined ? "" : ` after checkpoint ${from.sequence}`
    const head = result.headHash === null ? "empty chain" : `head ${result.headSequence} ${result.headHash}`
    return `valid: ${result.records} records${after} (${head})`
  }
  const reason = result.reason
  let detail = ""
  switch (reason._tag) {
    case "SequenceMismatch":
      detail = reason.actual === undefined ? " (record missing)" : ` (expected ${reason.expected}, found ${short(reason.actual)})`
      break
    case "PreviousHashMismatch":
    case "EventHashMismatch":
      detail = ` (expected ${short(reason.expected)}, found ${short(reason.actual)})`
      break
  }
  return `invalid at sequence ${result.failedSequence} (list index ${result.index}): ${describeFailure(reason)}${detail}; ${result.records} records verified before it`
}

const short = (value: unknown): string => {
  const text = value === undefined ? "nothing" : JSON.stringify(value) ?? String(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

const verifyCommand = Command.make(
  "verify",
  {
    url: urlOption,
    prefix: prefixOption("prefix", DEFAULT_AUDIT_PREFIX, "audit store"),
    fromSequence: Options.integer("from-sequence").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("trusted checkpoint: a sequence verified earlier (with --from-hash)"),
      Options.optional
    ),
    fromHash: Options.text("from-hash").pipe(
      Options.withPseudoName("HASH"),
      Options.withDescription("trusted checkpoint: the eventHash of --from-sequence"),
      Options.optional
    ),
    pageSize: pageSizeOption
  },
  ({ url, prefix, fromSequence, fromHash, pageSize }) =>
    Effect.gen(function* () {
      const from = yield* checkpointOf(fromSequence, fromHash)
      const bar = progress("verify", "records")
      const result = yield* withRedis(url, () =>
        verifyStore({ from, pageSize, onProgress: bar.update }).pipe(
          Effect.ensuring(bar.finish),
          Effect.provide(AuditStore.layer({ keyPrefix: prefix }))
        )
      )
      if (result.valid && result.headHash !== null) {
        yield* Console.log(`next time: --from-sequence ${result.headSequence} --from-hash ${result.headHash}`)
      }
      yield* Console.log(describeResult(result, from))
      if (!result.valid) return yield* Effect.fail(new CliFailure({ line: undefined, code: ExitCode.invalid }))
    })
).pipe(Command.withDescription("verify the audit chain in Redis, in place (exit 1 if it is not valid)"))

// ---------------------------------------------------------------------------
// export

/**
 * Writes lines (each followed by "\n") to a new file at `path`: each chunk of lines is
 * encoded into one reused buffer, written whenever it fills and at the chunk's end, so
 * a long export leaves no trail of strings or byte arrays behind for the GC.
 */
const writeLines =
  (fs: FileSystem.FileSystem, path: string) =>
  <E, R>(lines: Stream.Stream<string, E, R>) =>
    Effect.scoped(
      Effect.gen(function* () {
        const file = yield* fs.open(path, { flag: "w" })
        const size = 1 << 20
        const scratch = Buffer.allocUnsafe(size)
        yield* Stream.runForEachChunk(lines, (chunk) =>
          Effect.gen(function* () {
            let used = 0
            for (const line of chunk) {
              const needed = Buffer.byteLength(line, "utf8") + 1
              if (used + needed > size) {
                if (used > 0) yield* file.writeAll(scratch.subarray(0, used))
                used = 0
              }
              if (needed > size) {
                yield* file.writeAll(Buffer.from(line + "\n", "utf8"))
                continue
              }
              used += scratch.write(line, used, "utf8")
              scratch[used++] = 0x0a
            }
            if (used > 0) yield* file.writeAll(scratch.subarray(0, used))
          })
        )
      })
    )

const exportCommand = Command.make(
  "export",
  {
    out: Options.file("out").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription("the JSONL file to write (replaced only once complete)")
    ),
    url: urlOption,
    prefix: prefixOption("prefix", DEFAULT_AUDIT_PREFIX, "audit store"),
    pageSize: pageSizeOption
  },
  ({ out, url, prefix, pageSize }) =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const temporary = `${out}.tmp-${process.pid}`
      const bar = progress("export", "records")
      let count = 0
      yield* withRedis(url, () =>
        exportJsonl({
          pageSize,
          onProgress: (n, total) => {
            count = n
            return bar.update(n, total)
          }
        }).pipe(
          writeLines(fs, temporary),
          Effect.zipRight(fs.rename(temporary, out)),
          Effect.onError(() => Effect.ignore(fs.remove(temporary))),
          Effect.ensuring(bar.finish),
          Effect.provide(AuditStore.layer({ keyPrefix: prefix })),
          Effect.withSpan("haechi.cli.export")
        )
      )
      yield* Console.log(`exported ${count} records to ${out}`)
    })
).pipe(Command.withDescription("write the audit chain as JSONL (one stored record per line) for haechi's file verifier"))

// ---------------------------------------------------------------------------
// stats

export interface Stats {
  readonly audit: {
    readonly prefix: string
    readonly length: number
    readonly headSequence: number | null
    readonly headHash: string | null
    readonly lock: LockStatus
  }
  readonly vault: {
    readonly prefix: string
    readonly size: number
    readonly version: number
    readonly changeLog: { readonly length: number; readonly fromVersion: number | null; readonly toVersion: number | null }
    readonly lock: LockStatus
  }
}

/** Whether a lock key is set (its value, the holder's token, is never shown) and its TTL. */
export interface LockStatus {
  readonly state: "held" | "free"
  /** Remaining TTL in ms; null when free or set without a TTL. */
  readonly ttlMs: number | null
}

const lockStatus = (redis: RedisClientShape, key: string) =>
  Effect.map(redis.run("PTTL lock", (c) => c.pttl(key)), (ttl): LockStatus =>
    ttl === -2 ? { state: "free", ttlMs: null } : { state: "held", ttlMs: ttl >= 0 ? ttl : null }
  )

const logVersion = (entry: string | null): number | null => {
  const match = entry === null ? null : /^(\d+) /.exec(entry)
  return match === null ? null : Number(match[1])
}

const readStats = (auditPrefix: string, vaultPrefix: string) =>
  Effect.gen(function* () {
    const redis = yield* RedisClient
    const audit = yield* AuditStore.make({ keyPrefix: auditPrefix })
    const vault = yield* TokenStore.make({ keyPrefix: vaultPrefix })
    const head = yield* audit.head
    const length = yield* audit.length
    const v = yield* vault.stats
    const vk = vaultKeys(vaultPrefix)
    const [first, last] = yield* redis.run("LINDEX log", (c) => Promise.all([c.lindex(vk.log, 0), c.lindex(vk.log, -1)]))
    return {
      audit: {
        prefix: auditPrefix,
        length,
        headSequence: head?.sequence ?? null,
        headHash: head?.eventHash ?? null,
        lock: yield* lockStatus(redis, auditKeys(auditPrefix).lock)
      },
      vault: {
        prefix: vaultPrefix,
        size: v.size,
        version: v.version === "" ? 0 : Number(v.version),
        changeLog: { length: v.logLength, fromVersion: logVersion(first), toVersion: logVersion(last) },
        lock: yield* lockStatus(redis, vk.lock)
      }
    } satisfies Stats
  }).pipe(Effect.withSpan("haechi.cli.stats"))

const describeLock = (lock: LockStatus) =>
  lock.state === "free" ? "free" : lock.ttlMs === null ? "held (no TTL)" : `held (ttl ${lock.ttlMs} ms)`

// stats --ratelimit-key: one rate limit key's count (RateLimiter.inspect), when asked
const rateLimitOptions = {
  rateLimitKey: Options.text("ratelimit-key").pipe(
    Options.withPseudoName("KEY"),
    Options.withDescription('also show this rate limit key\'s count (an identity id, or "anonymous")'),
    Options.optional
  ),
  rateLimitPrefix: Options.text("ratelimit-prefix").pipe(
    Options.withPseudoName("PREFIX"),
    Options.withDescription(`key prefix of the rate limiter (default "${RateLimiter.DEFAULT_PREFIX}")`),
    Options.withDefault(RateLimiter.DEFAULT_PREFIX)
  ),
  rateLimitWindow: Options.integer("ratelimit-window").pipe(
    Options.withPseudoName("MS"),
    Options.withDescription("the rate limit window in milliseconds (default 60000, haechi's per minute)"),
    Options.withDefault(60_000)
  )
}

const readRateLimit = (o: { rateLimitKey: Option.Option<string>; rateLimitPrefix: string; rateLimitWindow: number }) =>
  Effect.transposeMapOption(o.rateLimitKey, (key) =>
    RateLimiter.inspect(key, { keyPrefix: o.rateLimitPrefix, window: o.rateLimitWindow })
  )

const describeRateLimit = (r: RateLimiter.RateLimitStats) =>
  `rate limit (${r.prefix}${r.key}): ${r.count} requests in the last ${r.windowMs} ms` +
  (r.count === 0 ? "" : `; the whole limit is back in ${r.resetAfterMs} ms`)

const statsCommand = Command.make(
  "stats",
  {
    url: urlOption,
    auditPrefix: prefixOption("audit-prefix", DEFAULT_AUDIT_PREFIX, "audit store"),
    vaultPrefix: prefixOption("vault-prefix", DEFAULT_VAULT_PREFIX, "token vault"),
    json: Options.boolean("json").pipe(Options.withDescription("print one JSON object")),
    ...rateLimitOptions
  },
  ({ url, auditPrefix, vaultPrefix, json, ...rl }) =>
    Effect.gen(function* () {
      const [stats, rateLimit] = yield* withRedis(url, () => Effect.all([readStats(auditPrefix, vaultPrefix), readRateLimit(rl)]))
      if (json) return yield* Console.log(JSON.stringify(Option.isSome(rateLimit) ? { ...stats, ratelimit: rateLimit.value } : stats))
      if (Option.isSome(rateLimit)) yield* Console.log(describeRateLimit(rateLimit.value))
      const a = stats.audit
      const v = stats.vault
      const head = a.headSequence === null ? "no head (empty chain)" : `head ${a.headSequence} ${a.headHash}`
      const disagree = (a.headSequence ?? 0) !== a.length ? " (list and head disagree: run verify)" : ""
      const span =
        v.changeLog.fromVersion === null ? "" : ` (versions ${v.changeLog.fromVersion}-${v.changeLog.toVersion})`
      yield* Console.log(`audit chain (${a.prefix}): ${a.length} records, ${head}${disagree}; lock ${describeLock(a.lock)}`)
      yield* Console.log(
        `token vault (${v.prefix}): ${v.size} tokens, version ${v.version}, change log ${v.changeLog.length} entries${span}; ` +
          `lock ${describeLock(v.lock)}`
      )
    })
).pipe(Command.withDescription("chain length and head, vault size and version, change log, locks"))

// ---------------------------------------------------------------------------
// demo

/** The demo's summary, as printed. */
export const describeDemo = (s: DemoSummary): ReadonlyArray<string> => {
  const seconds = s.elapsedMs / 1000
  const where =
    s.backend === "memory"
      ? "on the in-memory stores (pass --url or set REDIS_URL to run on Redis)"
      : s.kept
        ? `on Redis under ${s.auditPrefix} and ${s.vaultPrefix} (kept)`
        : "on Redis (demo keys deleted)"
  return [
    `demo: ${s.replicas} ${s.replicas === 1 ? "replica" : "replicas"}, ${s.events} events ${where}`,
    `tokens: ${s.tokensCreated} created, ${s.tokensReused} reused, ${s.tokensPruned} expired and pruned; ` +
      `vault holds ${s.vaultSize} at version ${s.vaultVersion}`,
    `fence conflicts: ${s.fenceConflicts} (each retried on the new head or version: nothing forked, nothing lost)`,
    `chain ${describeResult(s.verify, undefined)}`,
    `elapsed ${seconds.toFixed(2)} s, ${Math.round(s.events / Math.max(seconds, 0.001))} events/s`
  ]
}

const demoCommand = Command.make(
  "demo",
  {
    replicas: Options.integer("replicas").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("concurrent replicas, each with its own stores (default 4)"),
      Options.withDefault(4)
    ),
    events: Options.integer("events").pipe(
      Options.withPseudoName("M"),
      Options.withDescription("audit events in all, each also tokenizing a value (default 200)"),
      Options.withDefault(200)
    ),
    url: urlOption,
    keep: Options.boolean("keep").pipe(Options.withDescription("keep the demo's keys on Redis (default: deleted)"))
  },
  ({ replicas, events, url, keep }) =>
    Effect.gen(function* () {
      if (replicas < 1 || replicas > 256) {
        return yield* Effect.fail(new CliFailure({ line: "--replicas must be between 1 and 256", code: ExitCode.usage }))
      }
      if (events < 0 || events > 1_000_000) {
        return yield* Effect.fail(new CliFailure({ line: "--events must be between 0 and 1000000", code: ExitCode.usage }))
      }
      const resolved = yield* resolveUrl(url)
      const t = Option.isSome(resolved) ? yield* target(resolved.value) : undefined
      const bar = progress("demo", "events")
      const summary = yield* runDemo({
        replicas,
        events,
        keep,
        connect: t === undefined ? undefined : connectTo(t),
        onProgress: bar.update
      }).pipe(
        Effect.ensuring(bar.finish),
        Effect.catchAllCause((cause) => Effect.fail(failureOf(cause, t?.scrub ?? identity, t?.shown)))
      )
      for (const line of describeDemo(summary)) yield* Console.log(line)
      if (!summary.verify.valid) return yield* Effect.fail(new CliFailure({ line: undefined, code: ExitCode.invalid }))
    })
).pipe(Command.withDescription("replicas appending audit events and tokenizing concurrently, then a verification"))

// ---------------------------------------------------------------------------
// the application

const root = Command.make("haechi-store", {}, () =>
  Effect.fail(
    new CliFailure({ line: "a command is required: verify, export, stats or demo (see --help)", code: ExitCode.usage })
  )
).pipe(
  Command.withDescription("verify, export and inspect haechi's shared stores on Redis"),
  Command.withSubcommands([verifyCommand, exportCommand, statsCommand, demoCommand])
)

const cli = Command.run(root, { name: NAME, version: VERSION })

/**
 * Runs the CLI on `argv` (`process.argv`: node, script, then arguments) and returns the
 * exit code. Never fails: every failure has been printed as one line on stderr.
 */
export const main = (argv: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    // @effect/cli prints a parse error as a help document on stderr; collect it instead
    // and print it as one line.
    const console = yield* Effect.console
    const parseErrors: Array<string> = []
    const quiet: Console.Console = {
      ...console,
      error: (...args: ReadonlyArray<unknown>) => Effect.sync(() => void parseErrors.push(args.map(String).join(" ")))
    }
    const exit = yield* Effect.exit(Effect.withConsole(cli(argv), quiet))
    if (exit._tag === "Success") return ExitCode.ok
    const error = Cause.failureOption(exit.cause)
    let failure: CliFailure
    if (Option.isSome(error) && ValidationError.isValidationError(error.value)) {
      const text = parseErrors.length > 0 ? parseErrors.join(" ") : HelpDoc.toAnsiText(error.value.error)
      failure = new CliFailure({ line: oneLine(text) || "invalid arguments (see --help)", code: ExitCode.usage })
    } else {
      failure = failureOf(exit.cause, identity, undefined)
    }
    if (failure.line !== undefined) yield* Effect.sync(() => process.stderr.write(`${NAME}: ${oneLine(failure.line!)}\n`))
    return failure.code
  })
