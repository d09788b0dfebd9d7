/**
 * The audit chain's storage primitives, written once per backing: read the head, a
 * compare-and-append fenced on the head's eventHash (which also proves the head keys
 * agree with the list, the record is the head's successor, and the chain still holds
 * the head the caller last saw), and the reads that verification, export and commit
 * resolution need. The contract's semantics (the retry schedule, the replica's cached
 * head, resolving a lost reply) live once above this (`store.ts` and the files it
 * wires), so the Redis and in-memory stores cannot drift apart.
 */
import * as Effect from "effect/Effect"
import type { AuditIntegrity } from "../../Chain.js"
import { type ChainBroken, type ChainPoint, CorruptData } from "../../Errors.js"
import { disagreementError, type HeadKeys } from "./chainHead.js"
import { type CommitLookup, lookupOf, type OwnCommit } from "./commitLookup.js"
import { type HeadState, knownHead } from "./headState.js"
import { auditKeys, COMMIT_IDS_KEPT_SECONDS, COMMITS_KEPT, fenceKeyOf, waitersKeyOf, type AuditKeys } from "../keys.js"
import { probe, READY, type Readiness } from "../readiness.js"
import { type RedisClientShape } from "../../RedisClient.js"
import { wrongType, wrongTypeNamed } from "../redisReply.js"
import { callScriptBySha, Scripts } from "../scripts.js"
import { AuditAppendReply, AuditTurnReply, type ReplyCode } from "../replyCodes.js"
import { claimArgs, type LockClaim, type Turn } from "../storeGuard.js"
import { isJsonObject } from "../jsonRecord.js"
import type { BackingError as SharedBackingError } from "../backingError.js"

/** One record, ready to be appended: serialized once, fenced on `expectedPrev`. */
export interface PreparedAppend {
  /** The head eventHash the record was built on; "" for the empty chain. */
  readonly expectedPrev: string
  readonly recordJson: string
  readonly integrityJson: string
  /** A private copy of the record's integrity (the next head once committed). */
  readonly integrity: AuditIntegrity
  readonly eventHash: string
  readonly sequence: number
  /** Unique to this append call; a re-sent call repeats it, a rebuilt record gets a new one. */
  readonly commitId: string
  /** When the call was made (`resentCalls.callMadeAt`), before its first send. */
  readonly madeAt: number
  /**
   * The head this replica last saw (null: none). The chain must still hold it, else the
   * append is `Rewound`; checked without reading the list when the record is built on it.
   */
  readonly seen: ChainPoint | null
  /**
   * Set for a lock-free attempt: it must not write while another writer holds the
   * store's lock, and it takes or gives back the lock as the claim says.
   */
  readonly claim: LockClaim | undefined
  /**
   * This replica's own last commit (null: none yet, or forgotten on a rewind): where
   * `commits` has no floor, a chain whose last COMMITS_KEPT records hold it while
   * `commits` does not lost its ids (lua/audit_append.lua's `idsLost`).
   */
  readonly witness: OwnCommit | null
}

export type AppendOutcome =
  /** `kept`: the attempt holds the store's lock still (it asked to keep it). */
  | { readonly _tag: "Committed"; readonly kept?: boolean }
  /** The very record is already in the chain: a re-sent call whose reply was lost. */
  | { readonly _tag: "AlreadyCommitted" }
  /**
   * The head moved; `current` is the head the reply carried, so no extra read is needed
   * to retry (`Unknown` when the reply was lost and the call found not committed).
   * `tookLock`: the attempt's claim asked for the lock and now holds it. `unproven`: the
   * record's sequence is below the commit ids Redis still keeps, so that a re-sent call
   * did not commit before cannot be told from them (see resentCalls.ts). `idsLost`: Redis
   * lost the kept ids (now, or within their keep): no miss is proof, whatever the call's age.
   */
  | {
      readonly _tag: "Conflict"
      readonly current: HeadState
      readonly tookLock: boolean
      readonly unproven?: boolean
      readonly idsLost?: boolean
    }
  /** Another writer holds the lock and the attempt was asked to yield; nothing written. */
  | { readonly _tag: "LockHeld" }
  /** The chain no longer holds `seen` (rewound); `head` is the current one. Nothing written. */
  | { readonly _tag: "Rewound"; readonly head: AuditIntegrity | null }
  /**
   * The record's parent (its sequence - 1 and previousHash) is not a record of the chain:
   * it skips ahead of the head, or names a record the chain does not hold. Nothing written.
   */
  | { readonly _tag: "NotSuccessor"; readonly head: AuditIntegrity | null }

/** What `readHeadOver` found. */
export interface HeadOver {
  readonly head: AuditIntegrity | null
  readonly holdsSeen: boolean
}

/** Whether a stored record's JSON carries `eventHash` (anything unreadable does not). */
const recordHas = (json: string | null, eventHash: string): boolean => {
  if (json === null) return false
  try {
    const record = JSON.parse(json) as { auditIntegrity?: { eventHash?: unknown } } | null
    return record?.auditIntegrity?.eventHash === eventHash
  } catch {
    return false
  }
}

/** `ChainBroken`: the head keys disagree with the list (nothing written). */
export type BackingError = ReadBackingError | ChainBroken
/** What the backing's reads can fail with. */
export type ReadBackingError = SharedBackingError

export interface AuditBacking {
  readonly keys: AuditKeys
  readonly readHead: Effect.Effect<AuditIntegrity | null, ReadBackingError>
  /**
   * The head, and whether the chain held `seen` at the same instant: then the head
   * continues `seen`, and a replica that saw `seen` may take the head as seen instead.
   */
  readonly readHeadOver: (seen: ChainPoint) => Effect.Effect<HeadOver, ReadBackingError>
  /** `sent`: the call `send` already sent (its reply is decoded here); otherwise the append is sent now. */
  readonly append: (write: PreparedAppend, sent?: Promise<unknown>) => Effect.Effect<AppendOutcome, BackingError>
  /**
   * The fenced append sent as a bare call, for a caller that settles a `Committed` reply
   * itself (`committedReply`) and hands anything else to `append(write, sent)`. Redis only.
   */
  readonly send?: (write: PreparedAppend) => Promise<unknown>
  /**
   * Asks for the store lock's turn with `claim`'s token (lua/audit_turn.lua): granted with
   * the head JSON to build on, or queued for a hand-off. Absent where there is no lock.
   */
  readonly requestTurn?: (claim: LockClaim) => Effect.Effect<Turn, ReadBackingError>
  /** `requestTurn` as a bare call (it rejects with the client's own error); where `requestTurn` is. */
  readonly sendTurn?: (claim: LockClaim) => Promise<Turn>
  /**
   * Whether the append with this commit id committed (at this sequence): "unproven" when
   * it is not kept there and the sequence is below the ids Redis still keeps.
   */
  /** Whether `commitId` committed at `sequence`; `witness`: the replica's own last commit, as the append sends it. */
  readonly isCommitted: (
    sequence: number,
    commitId: string,
    witness: OwnCommit | null
  ) => Effect.Effect<CommitLookup, BackingError>
  readonly length: Effect.Effect<number, ReadBackingError>
  /** Stored record JSON for list indexes `start..stop` (inclusive), in order. */
  readonly readRange: (start: number, stop: number) => Effect.Effect<ReadonlyArray<string>, ReadBackingError>
  /** The head keys and the list's end, read at one instant (for verification). */
  readonly readHeadKeys: Effect.Effect<HeadKeys, ReadBackingError>
  readonly ready: Effect.Effect<Readiness>
}

/** Parses a stored head (auditIntegrity JSON); anything else is corrupt data at `key`. */
export const parseIntegrity = (
  json: string,
  key: string,
  element?: number
): Effect.Effect<AuditIntegrity, CorruptData> =>
  Effect.try({
    try: () => JSON.parse(json) as unknown,
    catch: () => new CorruptData({ key, element, detail: "not JSON" })
  }).pipe(
    Effect.flatMap((value) =>
      isIntegrity(value)
        ? Effect.succeed(value)
        : Effect.fail(new CorruptData({ key, element, detail: "not an auditIntegrity object" }))
    )
  )

export const isIntegrity = (value: unknown): value is AuditIntegrity => {
  if (!isJsonObject(value)) return false
  const v = value
  return (
    typeof v.eventHash === "string" &&
    v.eventHash.length > 0 &&
    Number.isSafeInteger(v.sequence) &&
    (v.sequence as number) >= 1 &&
    (v.previousHash === null || typeof v.previousHash === "string")
  )
}

// The outcomes that carry nothing, made once.
const committed: Effect.Effect<AppendOutcome> = Effect.succeed({ _tag: "Committed" })
const committedKept: Effect.Effect<AppendOutcome> = Effect.succeed({ _tag: "Committed", kept: true })
const alreadyCommitted: Effect.Effect<AppendOutcome> = Effect.succeed({ _tag: "AlreadyCommitted" })
const lockHeld: Effect.Effect<AppendOutcome> = Effect.succeed({ _tag: "LockHeld" })

/**
 * Whether the fenced append's raw reply is `Committed` (nothing else to learn from it):
 * "kept" when the commit kept the store's lock (the claim asked to), else undefined.
 */
export const committedReply = (reply: unknown): "committed" | "kept" | undefined =>
  Array.isArray(reply) && reply[0] === AuditAppendReply.Committed ? (reply[1] === 1 ? "kept" : "committed") : undefined

/** What the fenced append's reply says (lua/audit_append.lua's header lists the codes). */
const decodeAppendReply = (keys: AuditKeys, reply: unknown): Effect.Effect<AppendOutcome, BackingError> => {
  // (HeadDisagrees carries the head's sequence fourth; Conflict, whether it is unproven.)
  const [status, head, took, fourth] = reply as [
    ReplyCode<typeof AuditAppendReply>,
    string | number | null | undefined,
    number | undefined,
    unknown
  ]
  switch (status) {
    case AuditAppendReply.Committed:
      return head === 1 ? committedKept : committed
    case AuditAppendReply.AlreadyCommitted:
      return alreadyCommitted
    case AuditAppendReply.WrongType:
      return Effect.fail(new CorruptData({ key: String(head), detail: "holds the wrong Redis type" }))
    case AuditAppendReply.LockHeld:
      return lockHeld
    case AuditAppendReply.HeadDisagrees:
      return Effect.fail(
        disagreementError(keys, String(head), Number(took), typeof fourth === "number" ? fourth : null)
      )
  }
  const current = typeof head === "string" ? parseIntegrity(head, keys.head) : Effect.succeed(null)
  return Effect.map(current, (integrity): AppendOutcome => {
    if (status === AuditAppendReply.Rewound) return { _tag: "Rewound", head: integrity }
    if (status === AuditAppendReply.NotSuccessor) return { _tag: "NotSuccessor", head: integrity }
    if (fourth === 2)
      return { _tag: "Conflict", current: knownHead(integrity), tookLock: took === 1, unproven: true, idsLost: true }
    return fourth === 1
      ? { _tag: "Conflict", current: knownHead(integrity), tookLock: took === 1, unproven: true }
      : { _tag: "Conflict", current: knownHead(integrity), tookLock: took === 1 }
  })
}

/** The head and whether the chain still holds `seen`, in one MULTI: both of one instant. */
const readHeadOverOn =
  (redis: RedisClientShape, keys: AuditKeys): AuditBacking["readHeadOver"] =>
  (seen) =>
    redis
      .run("MULTI head over seen", (c) =>
        c
          .multi()
          .get(keys.head)
          .lindex(keys.chain, Math.max(0, seen.sequence - 1))
          .exec()
      )
      .pipe(
        Effect.flatMap((replies) => {
          const [head, at] = replies ?? []
          const failed = head?.[0] ?? at?.[0] ?? (replies === null ? new Error("aborted") : null)
          if (failed !== null && failed !== undefined) {
            const key = head?.[0] ? keys.head : keys.chain
            return Effect.fail(new CorruptData({ key, detail: `could not be read (${failed.message})` }))
          }
          const json = (head?.[1] as string | null | undefined) ?? null
          const holdsSeen =
            seen.sequence >= 1 && recordHas((at?.[1] as string | null | undefined) ?? null, seen.eventHash)
          return Effect.map(json === null ? Effect.succeed(null) : parseIntegrity(json, keys.head), (h) => ({
            head: h,
            holdsSeen
          }))
        })
      )

/** The head keys, the length and the last element, in one MULTI (for `verify` and the checks). */
const readHeadKeysOn = (redis: RedisClientShape, keys: AuditKeys): AuditBacking["readHeadKeys"] =>
  redis
    .run("MULTI head keys", (c) =>
      c.multi().get(keys.head).get(keys.headHash).llen(keys.chain).lindex(keys.chain, -1).exec()
    )
    .pipe(
      Effect.flatMap((replies) => {
        const failed = (replies ?? []).find(([error]) => error !== null)
        if (replies === null || failed !== undefined) {
          return Effect.fail(
            new CorruptData({
              key: keys.chain,
              detail: `the head keys could not be read (${failed?.[0]?.message ?? "aborted"})`
            })
          )
        }
        const [headJson, headHash, length, lastJson] = replies.map(([, value]) => value)
        return Effect.succeed({
          headJson: (headJson as string | null) ?? null,
          headHash: (headHash as string | null) ?? null,
          length: Number(length),
          lastJson: (lastJson as string | null) ?? null
        })
      })
    )

const queued: Turn = Object.freeze({ _tag: "Queued" })

/** audit_turn.lua's reply as a `Turn` (a granted head is passed on as JSON: the attempt checks it). */
const turnOf = (reply: unknown): Turn => {
  const [status, head] = reply as [ReplyCode<typeof AuditTurnReply>, string | null | undefined]
  return status === AuditTurnReply.Granted ? { _tag: "Granted", handed: head ?? "null" } : queued
}

/** lua/audit_turn.lua's ARGV for `claim`. */
const turnArgs = (claim: LockClaim): Array<string | number> => [claim.token, claim.ttlMs, claim.queueMs]

/** lua/audit_append.lua's ARGV for `write` (its header lists them). */
const appendArgs = (write: PreparedAppend): Array<string | number> => [
  write.expectedPrev,
  write.recordJson,
  write.integrityJson,
  write.eventHash,
  write.sequence,
  write.commitId,
  ...claimArgs(write.claim),
  write.seen === null ? "" : write.seen.sequence,
  write.seen === null ? "" : write.seen.eventHash,
  COMMIT_IDS_KEPT_SECONDS,
  write.witness === null ? "" : write.witness.sequence,
  write.witness === null ? "" : write.witness.commitId
]

/** lua/audit_append.lua's KEYS, in its header's order. */
export const appendKeysOf = (keys: AuditKeys): Array<string> => [
  keys.headHash,
  keys.chain,
  keys.head,
  keys.commits,
  keys.lock,
  fenceKeyOf(keys.lock),
  waitersKeyOf(keys.lock),
  keys.commitsFloor
]

/** The chain on Redis, in haechi-store-redis's layout. */
export const redisAuditBacking = (redis: RedisClientShape, prefix: string): AuditBacking => {
  const keys = auditKeys(prefix)
  const appendKeys = appendKeysOf(keys)
  const turnKeys = [keys.head, keys.lock, waitersKeyOf(keys.lock)]
  const readHead = redis
    .run("GET head", (c) => c.get(keys.head))
    .pipe(
      wrongType(keys.head),
      Effect.flatMap((json) => (json === null ? Effect.succeed(null) : parseIntegrity(json, keys.head)))
    )
  return {
    keys,
    readHead,
    readHeadOver: readHeadOverOn(redis, keys),
    append: (write, sent) =>
      redis
        .run(
          Scripts.auditAppend.name,
          (c) => sent ?? callScriptBySha(c, Scripts.auditAppend, appendKeys, appendArgs(write))
        )
        .pipe(
          wrongType(keys.chain),
          Effect.flatMap((reply) => decodeAppendReply(keys, reply))
        ),
    send: (write) => callScriptBySha(redis.client, Scripts.auditAppend, appendKeys, appendArgs(write)),
    sendTurn: (claim) => callScriptBySha(redis.client, Scripts.auditTurn, turnKeys, turnArgs(claim)).then(turnOf),
    requestTurn: (claim) =>
      redis.script(Scripts.auditTurn, turnKeys, turnArgs(claim)).pipe(wrongTypeNamed(keys.lock), Effect.map(turnOf)),
    isCommitted: (sequence, commitId, witness) =>
      redis
        .run("MULTI HGET commits GET floor LLEN chain EXISTS commits TIME HGET commits", (c) =>
          c
            .multi()
            .hget(keys.commits, String(sequence))
            .get(keys.commitsFloor)
            .llen(keys.chain)
            .exists(keys.commits)
            .time()
            .hget(keys.commits, String(witness?.sequence ?? 0))
            .exec()
        )
        .pipe(Effect.flatMap((replies) => lookupOf(keys, sequence, commitId, witness, replies))),
    length: redis.run("LLEN chain", (c) => c.llen(keys.chain)).pipe(wrongType(keys.chain)),
    readRange: (start, stop) =>
      redis.run("LRANGE chain", (c) => c.lrange(keys.chain, start, stop)).pipe(wrongType(keys.chain)),
    readHeadKeys: readHeadKeysOn(redis, keys),
    ready: probe(redis, keys.readyProbe)
  }
}

/**
 * lua/audit_append.lua's `commits` in memory, by the same rule: an id is kept while among
 * the last COMMITS_KEPT sequences or younger than COMMIT_IDS_KEPT_SECONDS; once the id at
 * the floor is past its keep, a commit drops the old ones from there up (512 at most).
 */
const keptCommits = (keptMs = COMMIT_IDS_KEPT_SECONDS * 1000) => {
  const ids = new Map<number, { readonly id: string; readonly at: number }>()
  let floor: number | undefined
  return {
    commit(sequence: number, id: string): void {
      const now = Date.now()
      ids.set(sequence, { id, at: now })
      const start = floor ?? 1
      const last = Math.min(sequence - COMMITS_KEPT, start + 511)
      let next = start
      for (; next <= last; next++) {
        const entry = ids.get(next)
        if (entry !== undefined && now - entry.at < keptMs) break
        ids.delete(next)
      }
      floor = next
    },
    lookup(sequence: number, id: string, length: number): CommitLookup {
      if (ids.get(sequence)?.id === id) return "committed"
      return sequence < (floor ?? length - COMMITS_KEPT + 1) ? "unproven" : "not committed"
    }
  }
}

/**
 * The chain in this process's memory: the same primitives, atomic because each runs
 * synchronously. Records are kept as the JSON Redis would hold, so nothing a caller
 * does to an object after handing it over can change the chain.
 */
export const memoryAuditBacking = (prefix = "memory:audit:"): AuditBacking => {
  const keys = auditKeys(prefix)
  const chain: Array<string> = []
  // hashes[i] is the eventHash of chain[i]: what "the chain holds (sequence, hash)" looks at.
  const hashes: Array<string> = []
  const commits = keptCommits()
  let head: { integrityJson: string; hash: string } | undefined
  const holds = (sequence: number, hash: string): boolean =>
    sequence === 0 ? hash === "" : hashes[sequence - 1] === hash
  const currentHead = () => (head === undefined ? Effect.succeed(null) : parseIntegrity(head.integrityJson, keys.head))
  return {
    keys,
    readHead: Effect.suspend(currentHead),
    readHeadOver: (seen) =>
      Effect.suspend(() =>
        Effect.map(currentHead(), (h) => ({
          head: h,
          holdsSeen: seen.sequence >= 1 && holds(seen.sequence, seen.eventHash)
        }))
      ),
    // The same checks, in the same order, as lua/audit_append.lua (the head keys cannot disagree here).
    append: (write) =>
      Effect.suspend((): Effect.Effect<AppendOutcome, BackingError> => {
        const current = head?.hash ?? ""
        const seen = write.seen
        const outcome = (tag: "Rewound" | "NotSuccessor") =>
          Effect.map(currentHead(), (h): AppendOutcome => ({ _tag: tag, head: h }))
        if (current === write.expectedPrev) {
          if (write.sequence !== chain.length + 1) return outcome("NotSuccessor")
          if (seen !== null && seen.eventHash !== write.expectedPrev && !holds(seen.sequence, seen.eventHash)) {
            return outcome("Rewound")
          }
          chain.push(write.recordJson)
          hashes.push(write.eventHash)
          head = { integrityJson: write.integrityJson, hash: write.eventHash }
          commits.commit(write.sequence, write.commitId)
          return committed
        }
        const lookup = commits.lookup(write.sequence, write.commitId, chain.length)
        if (lookup === "committed") return alreadyCommitted
        if (seen !== null && !holds(seen.sequence, seen.eventHash)) return outcome("Rewound")
        if (!holds(write.sequence - 1, write.expectedPrev)) return outcome("NotSuccessor")
        return Effect.map(currentHead(), (integrity) => ({
          _tag: "Conflict" as const,
          current: knownHead(integrity),
          tookLock: false,
          ...(lookup === "unproven" ? { unproven: true } : {})
        }))
      }),
    isCommitted: (sequence, commitId) => Effect.sync(() => commits.lookup(sequence, commitId, chain.length)),
    length: Effect.sync(() => chain.length),
    readRange: (start, stop) => Effect.sync(() => chain.slice(start, stop + 1)),
    readHeadKeys: Effect.sync(() => ({
      headJson: head?.integrityJson ?? null,
      headHash: head?.hash ?? null,
      length: chain.length,
      lastJson: chain.at(-1) ?? null
    })),
    ready: Effect.succeed(READY)
  }
}
