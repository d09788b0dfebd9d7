/**
 * An audit log for Effect apps that do not run haechi, writing haechi's own format.
 *
 * Guarantees:
 * - Every record is built by `Chain.buildNextRecord` on the head read inside
 *   `AuditStore.transaction`, so the chain it writes is byte-for-byte what haechi's sink
 *   writes: haechi's verifier accepts it, and haechi replicas and Effect apps can append
 *   to one shared chain under the same prefix.
 * - The chain cannot fork: the store's compare-and-append is fenced on the head, and a
 *   record built on a stale head is rebuilt on the new one (bounded retries, then it
 *   fails closed with `RetriesExhausted` and nothing is written).
 * - One `AuditLog` never has two transactions in flight: its `record` calls are
 *   serialized by a one-permit semaphore, as haechi's sink serializes its own with a
 *   promise queue. Separate instances (replicas) race, and the fence settles the race.
 * - An event is normalized through JSON before it is hashed (`undefined` fields are
 *   dropped, a `Date` becomes its ISO string), so the hash is computed over exactly what
 *   Redis will hold; a value JSON cannot represent (a bigint, a cycle) or an event that
 *   is not a JSON object is refused with `InvalidRecord` and nothing is written, as is
 *   one whose JSON Redis would not keep as it is (a lone surrogate, deep nesting).
 * - The store checks each record's place in the chain inside its fenced append, and
 *   sees rewinds (`ChainRewound`, `onRewind`), whatever this log's caller does.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { AuditStore, type AuditStoreShape } from "./AuditStore.js"
import { type AuditRecord, buildNextRecord } from "./Chain.js"
import { InvalidRecord, type StoreError } from "./Errors.js"
import { isJsonObject, isPlainObject, jsonProblem, NotSerializable, stringifyOrProblem } from "./internal/jsonRecord.js"
import { spanned } from "./internal/observe.js"

export type { AuditRecord } from "./Chain.js"

export interface AuditLogShape {
  /**
   * Appends `event` (a JSON object; an `auditIntegrity` field in it is replaced) as the
   * next record of the chain and returns the record as stored. Fails with
   * `InvalidRecord` for an event that is not a JSON object, or with the store's error.
   */
  readonly record: (event: object) => Effect.Effect<AuditRecord, StoreError>
}

export class AuditLog extends Context.Tag("haechi-store-effect/AuditLog")<AuditLog, AuditLogShape>() {}

/**
 * The event as Redis will hold it (a fresh plain object, through JSON), or why it cannot
 * be stored: what JSON cannot represent, or what even JSON's own output would not keep
 * as it is (a lone surrogate, nesting too deep for Redis's cjson; see `jsonProblem`).
 */
const normalize = (event: unknown): Effect.Effect<Record<string, unknown>, InvalidRecord> =>
  Effect.suspend(() => {
    const invalid = (reason: string) => Effect.fail(new InvalidRecord({ store: "audit", reason }))
    if (!isJsonObject(event)) return invalid("an audit event must be a JSON object")
    const json = stringifyOrProblem(event)
    if (json instanceof NotSerializable) return invalid(`the event is ${json.reason}`)
    // (Typed as a string, but a toJSON returning undefined makes it undefined.)
    const value = json === undefined ? undefined : (JSON.parse(json) as unknown)
    if (!isPlainObject(value)) return invalid("the event does not serialize to a JSON object")
    const problem = jsonProblem(value)
    return problem === undefined ? Effect.succeed(value) : invalid(problem)
  })

/** An audit log over `store`: one instance, one semaphore. */
export const fromStore = (store: AuditStoreShape): Effect.Effect<AuditLogShape> =>
  Effect.map(Effect.makeSemaphore(1), (semaphore) => ({
    record: (event) =>
      normalize(event).pipe(
        Effect.flatMap((fields) =>
          store.transaction((tx) =>
            Effect.flatMap(tx.readLastIntegrity, (previous) => {
              const record = buildNextRecord(fields, previous)
              return Effect.as(tx.persist(record), record)
            })
          )
        ),
        semaphore.withPermits(1),
        spanned("haechi.auditlog.record", { "haechi.prefix": store.prefix })
      )
  }))

/** An audit log over the `AuditStore` in context. */
export const make: Effect.Effect<AuditLogShape, never, AuditStore> = Effect.flatMap(AuditStore, fromStore)

/** The audit log as a layer over an `AuditStore` layer. */
export const layer: Layer.Layer<AuditLog, never, AuditStore> = Layer.effect(AuditLog, make)
