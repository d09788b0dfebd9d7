/**
 * What the checkpoint and verify tests share: an audit store on a connection of its own
 * to the shared Redis (as a replica has), and records appended through it.
 */
import { Effect, Layer } from "effect"
import * as AuditLog from "../../src/AuditLog.js"
import * as AuditStore from "../../src/AuditStore.js"
import * as RedisClient from "../../src/RedisClient.js"
import { sharedRedis } from "./shared.js"

/** The audit store under `prefix`, with its own client to the shared Redis (given to the caller too). */
export const storeLayer = (prefix: string, timeout?: number) =>
  AuditStore.layer({ keyPrefix: prefix, ...(timeout === undefined ? {} : { timeout }) }).pipe(
    Layer.provideMerge(RedisClient.layer(sharedRedis().url))
  )

/** Appends `n` events `{ tag, i }` under `prefix`, one after another. */
export const append = (prefix: string, n: number, tag = "event") =>
  Effect.runPromise(
    Effect.flatMap(AuditLog.make, (log) =>
      Effect.forEach(
        Array.from({ length: n }, (_, i) => i),
        (i) => log.record({ tag, i })
      )
    ).pipe(Effect.provide(storeLayer(prefix)))
  )
