/**
 * RedisLock's Effect conventions against real Redis: `withLock` is dual (the service's
 * method data-first or pipeable, the module's `withLock(work, key)` or
 * `work.pipe(withLock(key))`), and `withLockIfAvailable` runs the work only when the lock
 * is free, as `Some` of its result, else `None` at once without running it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option } from "effect"
import { Redis } from "ioredis"
import { layerFromClient } from "../src/RedisClient.js"
import * as RedisLock from "../src/RedisLock.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"

const withClient = Effect.acquireRelease(
  Effect.sync(() => new Redis(sharedRedis().url)),
  (client) => Effect.promise(() => client.quit())
)
const lockLayer = (client: Redis) => RedisLock.layer.pipe(Layer.provide(layerFromClient(client)))

describe("RedisLock conventions", () => {
  it.live(
    "withLock: data-first and pipeable, on the service and as module functions, each holding the lock while the work runs",
    () =>
      Effect.gen(function* () {
        const client = yield* withClient
        const key = `${uniquePrefix("conv-lock")}lock`
        const holderSeen = Effect.promise(() => client.get(key))
        const seen = yield* Effect.gen(function* () {
          const lock = yield* RedisLock.RedisLock
          return [
            yield* lock.withLock(key, holderSeen),
            yield* holderSeen.pipe(lock.withLock(key)),
            yield* holderSeen.pipe(lock.withLock(key, { ttl: "3 seconds" })),
            yield* RedisLock.withLock(holderSeen, key),
            yield* holderSeen.pipe(RedisLock.withLock(key, { ttl: "3 seconds" }))
          ]
        }).pipe(Effect.provide(lockLayer(client)))
        for (const value of seen) expect(value).toMatch(/.+/) // a token: the lock was held
        expect(new Set(seen).size).toBe(seen.length) // each its own acquisition
        expect(yield* Effect.promise(() => client.exists(key))).toBe(0) // released
      }).pipe(Effect.scoped)
  )

  it.live(
    "withLockIfAvailable: Some(result) when free, None at once without running the work when held; a LockTimeout of the work is the work's",
    () =>
      Effect.gen(function* () {
        const client = yield* withClient
        const key = `${uniquePrefix("conv-if")}lock`
        yield* Effect.gen(function* () {
          const lock = yield* RedisLock.RedisLock
          expect(yield* lock.withLockIfAvailable(key, Effect.succeed(1))).toEqual(Option.some(1))
          expect(yield* Effect.succeed(2).pipe(RedisLock.withLockIfAvailable(key))).toEqual(Option.some(2))

          yield* Effect.promise(() => client.set(key, "someone-else", "PX", 5000))
          let ran = false
          const started = performance.now()
          const none = yield* lock.withLockIfAvailable(
            key,
            Effect.sync(() => (ran = true))
          )
          expect(none).toEqual(Option.none())
          expect(ran).toBe(false)
          expect(performance.now() - started).toBeLessThan(1000) // no waiting
          expect(
            yield* RedisLock.withLockIfAvailable(
              Effect.sync(() => (ran = true)),
              key
            )
          ).toEqual(Option.none())
          expect(ran).toBe(false)
          expect(yield* Effect.promise(() => client.get(key))).toBe("someone-else") // untouched

          // Held by us, the work's own LockTimeout (another key) is not turned into None.
          const other = `${uniquePrefix("conv-if-other")}lock`
          yield* Effect.promise(() => client.set(other, "x", "PX", 5000))
          const free = `${uniquePrefix("conv-if-free")}lock`
          const exit = yield* Effect.exit(
            lock.withLockIfAvailable(free, lock.withLock(other, Effect.void, { waitTimeout: "20 millis" }))
          )
          expect(Exit.isFailure(exit)).toBe(true)
          expect(exit).toMatchObject({ _tag: "Failure", cause: { error: { _tag: "LockTimeout", key: other } } })
        }).pipe(Effect.provide(lockLayer(client)))
      }).pipe(Effect.scoped)
  )
})
