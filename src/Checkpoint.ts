/**
 * Checkpoints anchored outside Redis: the chain's head signed as a C2SP signed note
 * (c2sp.org/signed-note, Ed25519 on node:crypto), handed to a sink the Redis operator
 * cannot rewrite. A verifier holding the notes and the verifier key catches a rewrite
 * with every hash recomputed, a truncation, or a chain replaced after FLUSHALL, which a
 * hash chain alone cannot show.
 *
 * A note's body is three lines: the origin (the log's name, also the key's name), the
 * chain's size (the head's sequence) and the head's eventHash. The third line is the
 * hash-chain head, NOT an RFC 6962 Merkle root: the note has the shape of a
 * c2sp.org/tlog-checkpoint but no inclusion or consistency proofs exist for it.
 *
 * Guarantees:
 * - The checkpointer signs only a head it verified (from its newest checkpoint to the
 *   head, in bounded memory) and that the fence in Redis (lua/checkpoint_advance.lua)
 *   recorded: sizes only grow, one size is only ever recorded with one hash, and the
 *   chain is checked atomically to hold the new head, the last recorded checkpoint and
 *   the checkpointer's own newest one. So two checkpointers never sign two different
 *   heads for one size, and no checkpoint is signed past a history that contradicts an
 *   earlier one.
 * - Keys are never logged: a signer prints as its verifier key; errors name the key
 *   file and the problem only.
 * - Every note read is parsed strictly and verified; see `open` / `openAll`.
 *
 * Mechanism, in `internal/checkpoint/`: the note format (`note`), Ed25519 keys and key
 * files (`ed25519`), opening and signing checkpoints (`checkpoints`), the fence
 * (`fence`), the sinks (`sinks`), the signing schedule (`schedule`) and the check of a
 * chain against checkpoints (`against`).
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Chunk from "effect/Chunk"
import { AuditStore, type AuditStoreShape } from "./AuditStore.js"
import { describeFailure } from "./Chain.js"
import {
  ChainMissesCheckpoint,
  type CheckpointKeyInvalid,
  CheckpointNoteRejected,
  CheckpointSinkFailed,
  CorruptData,
  InvalidConfig,
  type RedisError,
  type StoreError
} from "./Errors.js"
import { auditKeys } from "./internal/keys.js"
import * as Metrics from "./Metrics.js"
import { RedisClient } from "./RedisClient.js"
import { verifyStore } from "./Verify.js"
import {
  newestOf,
  openCheckpoint,
  openCheckpoints,
  signCheckpoint,
  type SignedCheckpoint
} from "./internal/checkpoint/checkpoints.js"
import { readKeyFile, Signer, signerFromText, verifierFromText, writeKeyFile } from "./internal/checkpoint/ed25519.js"
import { durableFence, memoryFence, redisFence, type CheckpointFence, type Point } from "./internal/checkpoint/fence.js"
import * as Durability from "./internal/durability.js"
import type { DurabilityOptions } from "./internal/durability.js"
import type { VerifierKey } from "./internal/checkpoint/note.js"
import { readLastNote, type CheckpointSink } from "./internal/checkpoint/sinks.js"
import { signWhenDue } from "./internal/checkpoint/schedule.js"
import { spanned } from "./internal/observe.js"
import { timeoutAfter, timeoutMsOf } from "./internal/deadline.js"

export type { SignedCheckpoint } from "./internal/checkpoint/checkpoints.js"
export type { VerifierKey } from "./internal/checkpoint/note.js"
export type { CheckpointSink } from "./internal/checkpoint/sinks.js"
export type { WitnessOptions, WitnessError } from "./internal/checkpoint/witness.js"
export { fileSink, functionSink, stdoutSink } from "./internal/checkpoint/sinks.js"
export { Signer } from "./internal/checkpoint/ed25519.js"

// ---------------------------------------------------------------------------
// keys

/** A new Ed25519 key named `name` (the origin): its signer and its private key text (redacted). */
export const generateKey = (
  name: string
): Effect.Effect<{ readonly signer: Signer; readonly privateKey: Redacted.Redacted<string> }, CheckpointKeyInvalid> =>
  Effect.suspend(() =>
    Either.match(Signer.generate(name), {
      onLeft: Effect.fail,
      onRight: ({ signer, privateKey }) => Effect.succeed({ signer, privateKey: Redacted.make(privateKey) })
    })
  )

/**
 * Generates a key named `name`, writes it to a NEW file `out` (mode 0600; an existing
 * file is never replaced) and returns its verifier key.
 */
export const keygen = (options: {
  readonly name: string
  readonly out: string
}): Effect.Effect<string, CheckpointKeyInvalid> =>
  Effect.flatMap(generateKey(options.name), ({ signer, privateKey }) =>
    Effect.as(writeKeyFile(options.out, Redacted.value(privateKey)), signer.verifierKey)
  )

/** The signer in a key file. Missing, unreadable or not a key: `CheckpointKeyInvalid`. */
export const loadKey = (path: string): Effect.Effect<Signer, CheckpointKeyInvalid> => readKeyFile(path)

/** A signer from a private key text (`PRIVATE+KEY+<name>+<key id>+<base64>`, Go's note form). */
export const signerFromKey = (text: string | Redacted.Redacted<string>): Effect.Effect<Signer, CheckpointKeyInvalid> =>
  Effect.suspend(() =>
    Either.match(signerFromText(Redacted.isRedacted(text) ? Redacted.value(text) : text, "signing key"), {
      onLeft: Effect.fail,
      onRight: Effect.succeed
    })
  )

/** Parses and checks a verifier key `<name>+<8 hex key id>+<base64(0x01 || public key)>`. */
export const verifierKey = (text: string): Effect.Effect<VerifierKey, CheckpointKeyInvalid> =>
  Effect.suspend(() => Either.match(verifierFromText(text), { onLeft: Effect.fail, onRight: Effect.succeed }))

// ---------------------------------------------------------------------------
// notes

/** Signs (`size`, `hash`) as a checkpoint of the signer's origin. */
export const sign = (signer: Signer, point: { readonly size: number; readonly hash: string }): SignedCheckpoint =>
  signCheckpoint(signer, point.size, point.hash)

const keyOf = (key: VerifierKey | string) => (typeof key === "string" ? verifierKey(key) : Effect.succeed(key))

/** Opens one note: strict parse, checkpoint body, origin = key name, the key's signature verifies. */
export const open = (
  note: string,
  key: VerifierKey | string
): Effect.Effect<SignedCheckpoint, CheckpointNoteRejected | CheckpointKeyInvalid> =>
  Effect.flatMap(keyOf(key), (k) =>
    Either.match(openCheckpoint(note, k), { onLeft: Effect.fail, onRight: Effect.succeed })
  )

/** Opens every note of a checkpoints file's text; one refused note refuses all (it is named). */
export const openAll = (
  text: string,
  key: VerifierKey | string
): Effect.Effect<ReadonlyArray<SignedCheckpoint>, CheckpointNoteRejected | CheckpointKeyInvalid> =>
  Effect.flatMap(keyOf(key), (k) => openCheckpoints(text, k))

/** The newest (largest) of some checkpoints. */
export const newest = newestOf

/**
 * The last note of a checkpoints file, read from its tail only, for a witness store's
 * `latest`. A missing file is refused (pass `{ missingIsNone: true }` for a log that has
 * no checkpoint yet).
 */
export const latestFromFile = (
  path: string,
  options: { readonly missingIsNone?: boolean } = {}
): Effect.Effect<string | undefined, CheckpointNoteRejected> =>
  Effect.tryPromise({
    try: () => readLastNote(path, options.missingIsNone === true),
    catch: (error) =>
      new CheckpointNoteRejected({
        reason: `cannot read ${path} (${(error as { code?: string }).code ?? String(error)})`
      })
  })

// ---------------------------------------------------------------------------
// the checkpointer

/** What one `checkpoint` did. */
export type CheckpointOutcome =
  /** A note was signed and handed to the sink. */
  | { readonly _tag: "Signed"; readonly checkpoint: SignedCheckpoint }
  /** Nothing new since the newest checkpoint (or an empty chain): nothing signed. */
  | { readonly _tag: "Unchanged"; readonly size: number }
  /** Another checkpointer already recorded a checkpoint at or past this head: nothing signed here. */
  | { readonly _tag: "Behind"; readonly size: number; readonly recorded: number }

export type CheckpointError =
  ChainMissesCheckpoint | CheckpointSinkFailed | CheckpointNoteRejected | StoreError | InvalidConfig

export interface CheckpointShape {
  /** The origin (the key's name). */
  readonly origin: string
  /** The verifier key of the signing key. */
  readonly verifierKey: string
  /**
   * Signs the current head once, if it is new: verifies the chain from the newest
   * checkpoint to the head, records the head in the fence, signs it and hands the note to
   * the sink. Fails with `ChainMissesCheckpoint` when the chain no longer holds the newest
   * checkpoint, `CorruptData` when it does not verify, or the store's or sink's error;
   * nothing is signed then. Calls are serialized.
   */
  readonly checkpoint: Effect.Effect<CheckpointOutcome, CheckpointError>
  /** The newest checkpoint this checkpointer holds (signed, or read from its sink at start). */
  readonly latest: Effect.Effect<SignedCheckpoint | undefined>
}

export class Checkpoint extends Context.Tag("haechi-store-effect/Checkpoint")<Checkpoint, CheckpointShape>() {}

export interface CheckpointOptions {
  /** The signing key: a `Signer` or the path of a key file (see `keygen`). */
  readonly key: Signer | string
  /** Where notes go: `fileSink(path)`, `stdoutSink`, `functionSink(f)`. */
  readonly sink: CheckpointSink
  /** Sign when the chain has grown by this many records since the newest checkpoint. */
  readonly everyRecords?: number | undefined
  /** Sign every this many seconds when the chain has grown. */
  readonly everySeconds?: number | undefined
  /** How often the head is read for `everyRecords`; default 1 s (never longer than `everySeconds`). */
  readonly pollInterval?: Duration.DurationInput | undefined
  /**
   * The newest checkpoint note known outside Redis, to start from; default the sink's
   * newest note (a file sink reads its tail). Verified with the signer's own key.
   */
  readonly trusted?: string | undefined
  /** Records per LRANGE when verifying; default `Verify.DEFAULT_PAGE_SIZE` (1000). */
  readonly pageSize?: number | undefined
  /** How long the fence's script may wait for Redis (default 10 s): past it nothing is signed. */
  readonly timeout?: Duration.DurationInput | undefined
  /**
   * Sign only once the fence's write is on this many replicas (`WAIT`) and/or the AOF
   * (`WAITAOF`), as the stores' option: a failover to an acknowledging replica then keeps
   * the fence, so checkpointers with separate sinks never sign two heads for one size.
   * Otherwise `DurabilityTimeout`, and nothing is signed. Redis only.
   */
  readonly durability?: DurabilityOptions | undefined
}

const positive = (option: string, value: number | undefined, integer: boolean) =>
  value === undefined || (Number.isFinite(value) && value > 0 && (!integer || Number.isSafeInteger(value)))
    ? Effect.void
    : Effect.fail(new InvalidConfig({ option, reason: `must be a positive ${integer ? "integer" : "number"}` }))

/** The chain's eventHash at `size` (its record's), for an error; null when the chain is shorter. */
const pointAt = (store: AuditStoreShape, size: number) =>
  Stream.runHead(store.readChainJson({ from: size - 1, pageSize: 1 })).pipe(
    Effect.map((text) => {
      if (text._tag === "None") return null
      try {
        const integrity = (JSON.parse(text.value) as { auditIntegrity?: { sequence?: unknown; eventHash?: unknown } })
          .auditIntegrity
        return {
          sequence: size,
          eventHash: typeof integrity?.eventHash === "string" ? integrity.eventHash : "(not an audit record)"
        }
      } catch {
        return { sequence: size, eventHash: "(not JSON)" }
      }
    })
  )

/**
 * The head the checkpointer may sign: the chain verified from `from` (its newest
 * checkpoint) to the head, or undefined for an empty chain. `ChainMissesCheckpoint` when
 * the chain no longer holds `from`, `CorruptData` when it does not verify.
 */
const verifiedHead = (
  store: AuditStoreShape,
  from: SignedCheckpoint | undefined,
  pageSize: number | undefined
): Effect.Effect<Point | undefined, CheckpointError> =>
  Effect.flatMap(
    verifyStore({ from: from === undefined ? undefined : { sequence: from.size, eventHash: from.hash }, pageSize }),
    (result): Effect.Effect<Point | undefined, CheckpointError, AuditStore> => {
      if (result.valid) {
        return Effect.succeed(
          result.headHash === null ? undefined : { size: result.headSequence, hash: result.headHash }
        )
      }
      if (from !== undefined && result.failedSequence === from.size) {
        return Effect.flatMap(pointAt(store, from.size), (found) =>
          Effect.fail(new ChainMissesCheckpoint({ prefix: store.prefix, checkpoint: from, found }))
        )
      }
      return Effect.fail(
        new CorruptData({
          key: auditKeys(store.prefix).chain,
          element: result.index,
          detail: `the chain does not verify at sequence ${result.failedSequence} (${describeFailure(result.reason)}); nothing signed`
        })
      )
    }
  ).pipe(Effect.provideService(AuditStore, store))

/** The sink's newest notes, bounded as the fence is: a sink that hangs holds neither `make` nor a round. */
const latestWithin = (
  sink: CheckpointSink,
  timeoutMs: number
): Effect.Effect<string | undefined, CheckpointSinkFailed> =>
  sink.latest === undefined
    ? Effect.succeed(undefined)
    : Effect.timeoutFail(sink.latest, {
        duration: timeoutMs,
        onTimeout: () => new CheckpointSinkFailed({ sink: sink.name, cause: `no newest note within ${timeoutMs} ms` })
      })

/** The checkpointer over `store` and `fence` (no schedule): `make` and the layers add one. */
const checkpointer = (
  store: AuditStoreShape,
  fence: CheckpointFence,
  signer: Signer,
  sink: CheckpointSink,
  trusted: SignedCheckpoint | undefined,
  pageSize: number | undefined,
  timeoutMs: number
): Effect.Effect<CheckpointShape> =>
  Effect.map(Effect.makeSemaphore(1), (semaphore) => {
    let current = trusted
    const key = Either.getOrThrow(verifierFromText(signer.verifierKey))
    // The sink is outside Redis and may be shared: what another checkpointer appended to it
    // is a floor too (after a failover the fence in Redis can be as far behind as the chain).
    const newestKnown = Effect.gen(function* () {
      const text = yield* latestWithin(sink, timeoutMs)
      if (text === undefined || text === "") return current
      const fromSink = newestOf(yield* openCheckpoints(text, key))
      return fromSink !== undefined && (current === undefined || fromSink.size > current.size) ? fromSink : current
    })

    const checkpoint: Effect.Effect<CheckpointOutcome, CheckpointError> = Effect.gen(function* () {
      const from = yield* newestKnown
      const head = yield* verifiedHead(store, from, pageSize)
      // (The chain holds the sink's newest note: it is this checkpointer's newest too.)
      current = from
      if (head === undefined || (from !== undefined && head.size === from.size)) {
        return { _tag: "Unchanged", size: head?.size ?? 0 } as const
      }
      // Bounded: a fence write that timed out and landed is AtOrPast at this head next time.
      const outcome = yield* fence
        .advance(head, from === undefined ? undefined : { size: from.size, hash: from.hash })
        .pipe(timeoutAfter("checkpoint fence", timeoutMs))
      if (fence.acknowledge !== undefined) yield* fence.acknowledge(head, outcome)
      const signed = signCheckpoint(signer, head.size, head.hash)
      // At exactly this head, the fence's point is this very note (Ed25519 is deterministic).
      if (outcome._tag === "AtOrPast" && outcome.point.size !== head.size) {
        current = signed
        return { _tag: "Behind", size: head.size, recorded: outcome.point.size } as const
      }
      // Only a note the sink took is the newest: after a failed emit the next call finds the
      // fence at this head (AtOrPast at the same size) and emits it again.
      yield* sink.emit(signed)
      current = signed
      yield* Metric.increment(Metric.tagged(Metrics.checkpointsSigned, "prefix", store.prefix))
      return { _tag: "Signed", checkpoint: signed } as const
    }).pipe(semaphore.withPermits(1), spanned("haechi.audit.checkpoint", { "haechi.prefix": store.prefix }))

    return {
      origin: signer.name,
      verifierKey: signer.verifierKey,
      checkpoint,
      latest: Effect.sync(() => current)
    }
  })

/** A poll interval is a finite duration of at least 1 ms (0 would poll without pause; a bad one threw). */
const checkPollInterval = (interval: Duration.DurationInput | undefined): Effect.Effect<void, InvalidConfig> => {
  if (interval === undefined) return Effect.void
  const decoded = Duration.decodeUnknown(interval)
  return decoded._tag === "Some" && Duration.isFinite(decoded.value) && Duration.toMillis(decoded.value) >= 1
    ? Effect.void
    : Effect.fail(new InvalidConfig({ option: "pollInterval", reason: "must be a finite duration of at least 1 ms" }))
}

const setup = (options: CheckpointOptions) =>
  Effect.gen(function* () {
    yield* positive("everyRecords", options.everyRecords, true)
    yield* positive("everySeconds", options.everySeconds, false)
    yield* checkPollInterval(options.pollInterval)
    const timeoutMs = yield* timeoutMsOf(options.timeout)
    const signer = typeof options.key === "string" ? yield* loadKey(options.key) : options.key
    const text = options.trusted ?? (yield* latestWithin(options.sink, timeoutMs))
    const trusted =
      text === undefined || text === ""
        ? undefined
        : newestOf(yield* openCheckpoints(text, yield* verifierKey(signer.verifierKey)))
    return { signer, trusted, timeoutMs }
  })

/** The checkpointer over `store` with the fence `fenceFor` makes for its signer, signing on its schedule for the scope's life. */
const start = (
  store: AuditStoreShape,
  fenceFor: (signer: Signer) => CheckpointFence,
  options: CheckpointOptions
): Effect.Effect<CheckpointShape, CheckpointMakeError, Scope.Scope> =>
  Effect.gen(function* () {
    const { signer, trusted, timeoutMs } = yield* setup(options)
    const made = yield* checkpointer(
      store,
      fenceFor(signer),
      signer,
      // `trusted` stands in for the sink's notes (as at start-up): the sink is not read for them then.
      options.trusted === undefined ? options.sink : { name: options.sink.name, emit: options.sink.emit },
      trusted,
      options.pageSize,
      timeoutMs
    )
    yield* signWhenDue(
      { prefix: store.prefix, head: store.head, latest: made.latest, checkpoint: made.checkpoint },
      options
    )
    return made
  })

export type CheckpointMakeError =
  CheckpointKeyInvalid | CheckpointNoteRejected | CheckpointSinkFailed | InvalidConfig | RedisError

/**
 * The checkpointer on the Redis store in context: the fence is the Lua script, and when
 * `everyRecords` / `everySeconds` are given, a fiber signs on that schedule for the
 * scope's life.
 */
export const make = (
  options: CheckpointOptions
): Effect.Effect<CheckpointShape, CheckpointMakeError, AuditStore | RedisClient | Scope.Scope> =>
  Effect.gen(function* () {
    const store = yield* AuditStore
    const redis = yield* RedisClient
    const keys = auditKeys(store.prefix)
    const durable = yield* Durability.make(redis, options.durability, {
      prefix: store.prefix,
      probeKey: keys.readyProbe
    })
    const fenceOf = (signer: Signer) => redisFence(redis, keys, signer.name)
    return yield* start(
      store,
      durable === undefined ? fenceOf : (signer) => durableFence(fenceOf(signer), durable),
      options
    )
  })

/** The checkpointer as a layer over `AuditStore` and `RedisClient`. */
export const layer = (
  options: CheckpointOptions
): Layer.Layer<Checkpoint, CheckpointMakeError, AuditStore | RedisClient> => Layer.scoped(Checkpoint, make(options))

/** The list element at `index` (undefined past the end), for the in-memory fence. */
const elementAt = (store: AuditStoreShape) => (index: number) =>
  Effect.map(Stream.runCollect(Stream.take(store.readChainJson({ from: index, pageSize: 1 }), 1)), (page) =>
    Chunk.get(page, 0)._tag === "Some" ? Chunk.unsafeGet(page, 0) : undefined
  )

/** The checkpointer over an in-memory store (one process): the fence lives in memory too. */
export const layerMemory = (options: CheckpointOptions): Layer.Layer<Checkpoint, CheckpointMakeError, AuditStore> =>
  Layer.scoped(
    Checkpoint,
    Effect.flatMap(AuditStore, (store) =>
      start(store, (signer) => memoryFence(store.prefix, signer.name, elementAt(store)), options)
    )
  )
