/**
 * RedisLock and the withRedisLock facade against real redis-server processes (a private
 * standalone server started here, the shared test cluster, a fault-injection proxy).
 * Every test that sleeps uses the live clock.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Schedule, Scope } from "effect"
import fc from "fast-check"
import { Cluster, Redis } from "ioredis"
import { afterAll, beforeAll } from "vitest"
import { InvalidConfig, LockLost, LockTimeout } from "../src/Errors.js"
import { withRedisLock } from "../src/internal/lock/facade.js"
import { fromClient, layerFromClient } from "../src/RedisClient.js"
import type { RedisLockHandle } from "../src/internal/lock/contract.js"
import { makeLockHandle } from "../src/internal/lock/handle.js"
import { fenceKeyOf, waitersKeyOf } from "../src/internal/lock/keys.js"
import { layer, RedisLock } from "../src/RedisLock.js"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"
import { keySlot, startRedis, tcpProxy, type RedisServer, type TcpProxy } from "./support/redisServer.js"
import { sharedCluster } from "./support/shared.js"

/** haechi-store-redis's release script, verbatim. */
const REFERENCE_RELEASE =
  "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"

let server: RedisServer
let clientA: Redis
let clientB: Redis
let raw: Redis
/** Two RedisLocks on separate connections: two replicas of a service. */
let A: RedisLockHandle
let B: RedisLockHandle

beforeAll(async () => {
  server = await startRedis()
  clientA = new Redis(server.port, "127.0.0.1")
  clientB = new Redis(server.port, "127.0.0.1")
  raw = new Redis(server.port, "127.0.0.1")
  A = makeLockHandle(fromClient(clientA))
  B = makeLockHandle(fromClient(clientB))
})

afterAll(async () => {
  await Effect.runPromise(Effect.all([A.close, B.close]))
  await Promise.all([clientA, clientB, raw].map((c) => c.quit()))
  await server.stop()
})

const lockKey = (name: string) => `${uniquePrefix(name)}lock`

/** Script calls (EVALSHA, and EVAL after a NOSCRIPT) the private server has run so far. */
const evalshaCalls = Effect.promise(async () =>
  (await raw.info("commandstats"))
    .split("\n")
    .filter((l) => l.startsWith("cmdstat_evalsha:") || l.startsWith("cmdstat_eval:"))
    .reduce((calls, l) => calls + Number(/calls=(\d+)/.exec(l)?.[1] ?? 0), 0)
)

/** The typed failure of an exit, if it failed with one. */
const failure = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const fmt = (xs: ReadonlyArray<number>) => xs.map((x) => x.toFixed(1)).join(" ")

describe("RedisLock: mutual exclusion", () => {
  it("two leases on one key never overlap, and fences increase in entry order (property, 2-5 contenders)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ delay: fc.integer({ min: 0, max: 30 }), hold: fc.integer({ min: 0, max: 25 }) }), {
          minLength: 2,
          maxLength: 5
        }),
        async (contenders) => {
          const key = lockKey("prop")
          let inside = 0
          let maxInside = 0
          const fences: Array<number> = []
          await Effect.runPromise(
            Effect.forEach(
              contenders,
              ({ delay, hold }, i) =>
                Effect.sleep(Duration.millis(delay)).pipe(
                  Effect.zipRight(
                    Effect.scoped(
                      Effect.gen(function* () {
                        const lease = yield* (i % 2 === 0 ? A : B).lock.acquire(key)
                        inside++
                        maxInside = Math.max(maxInside, inside)
                        fences.push(lease.fence)
                        yield* Effect.sleep(Duration.millis(hold))
                        inside--
                      })
                    )
                  )
                ),
              { concurrency: "unbounded", discard: true }
            )
          )
          expect(maxInside).toBe(1)
          expect(fences).toHaveLength(contenders.length)
          for (let i = 1; i < fences.length; i++) expect(fences[i]!).toBeGreaterThan(fences[i - 1]!)
          expect(await raw.exists(key)).toBe(0)
        }
      ),
      { numRuns: 12 }
    )
  })

  it.live("the fence number strictly increases across holders and replicas", () =>
    Effect.gen(function* () {
      const key = lockKey("fence")
      const fences: Array<number> = []
      for (let i = 0; i < 10; i++) {
        const lease = yield* Effect.scoped((i % 2 === 0 ? A : B).lock.acquire(key))
        fences.push(lease.fence)
      }
      for (let i = 1; i < fences.length; i++) expect(fences[i]!).toBeGreaterThan(fences[i - 1]!)
      expect(yield* Effect.promise(() => raw.get(fenceKeyOf(key)))).toBe(String(fences.at(-1)))
    })
  )

  it.live("release never deletes another holder's lock", () =>
    Effect.gen(function* () {
      const key = lockKey("foreign")
      const scope = yield* Scope.make()
      // Renewal disabled: the lease lapses after 150 ms and another holder takes the key.
      const lease = yield* A.lock
        .acquire(key, { ttl: "150 millis", renewEvery: Duration.infinity })
        .pipe(Scope.extend(scope))
      const lost = yield* Effect.exit(lease.lost)
      expect(failure(lost)).toEqual(new LockLost({ key, reason: "expired" }))
      yield* Effect.sleep("30 millis") // Redis's expiry is a round trip behind ours
      expect(yield* Effect.promise(() => raw.set(key, "other-holder", "PX", 5000, "NX"))).toBe("OK")
      yield* Scope.close(scope, Exit.void)
      expect(yield* Effect.promise(() => raw.get(key))).toBe("other-holder")
    })
  )

  it.live("a lease overwritten by another holder is reported lost (taken) and not released", () =>
    Effect.gen(function* () {
      const key = lockKey("taken")
      let finished = false
      const exit = yield* A.lock
        .withLock(
          key,
          Effect.gen(function* () {
            yield* Effect.promise(() => raw.set(key, "intruder", "PX", 5000))
            yield* Effect.sleep("1 second")
            finished = true
          }),
          { ttl: "300 millis", renewEvery: "50 millis" }
        )
        .pipe(Effect.exit)
      expect(failure(exit)).toEqual(new LockLost({ key, reason: "taken" }))
      expect(finished).toBe(false)
      expect(yield* Effect.promise(() => raw.get(key))).toBe("intruder")
    })
  )

  it.live("interrupting a holder releases the lock at once", () =>
    Effect.gen(function* () {
      const key = lockKey("interrupt")
      const holding = yield* Deferred.make<void>()
      const holder = yield* A.lock
        .withLock(key, Effect.zipRight(Deferred.succeed(holding, undefined), Effect.never))
        .pipe(Effect.fork)
      yield* Deferred.await(holding)
      expect(yield* Effect.promise(() => raw.exists(key))).toBe(1)
      yield* Fiber.interrupt(holder)
      expect(yield* Effect.promise(() => raw.exists(key))).toBe(0)
    })
  )

  it.live("a lease acquired in an uninterruptible region (acquireRelease) still renews and releases", () =>
    Effect.gen(function* () {
      const key = lockKey("uninterruptible")
      const scope = yield* Scope.make()
      const lease = yield* Effect.acquireRelease(A.lock.acquire(key, { ttl: "150 millis" }), () => Effect.void).pipe(
        Scope.extend(scope)
      )
      yield* Effect.sleep("300 millis")
      expect(yield* Effect.promise(() => raw.get(key))).toBe(lease.token)
      const closed = yield* Effect.exit(Effect.timeout(Scope.close(scope, Exit.void), "2 seconds"))
      expect(Exit.isSuccess(closed)).toBe(true)
      expect(yield* Effect.promise(() => raw.exists(key))).toBe(0)
    })
  )
})

describe("RedisLock: renewal and loss", () => {
  it.live(
    "a holder paused past its TTL with renewal disabled loses the lease; withLock is interrupted with LockLost",
    () =>
      Effect.gen(function* () {
        const key = lockKey("paused")
        let finished = false
        const started = performance.now()
        const exit = yield* A.lock
          .withLock(key, Effect.sleep("1 second").pipe(Effect.tap(() => (finished = true))), {
            ttl: "200 millis",
            renewEvery: Duration.infinity
          })
          .pipe(Effect.exit)
        const elapsed = performance.now() - started
        expect(failure(exit)).toEqual(new LockLost({ key, reason: "expired" }))
        expect(finished).toBe(false)
        expect(elapsed).toBeGreaterThanOrEqual(195)
        expect(elapsed).toBeLessThan(1000)
      })
  )

  it.live("a holder whose event loop is blocked past its TTL loses the lease, even with renewal on", () =>
    Effect.gen(function* () {
      const key = lockKey("blocked")
      let finished = false
      const exit = yield* A.lock
        .withLock(
          key,
          Effect.gen(function* () {
            const until = Date.now() + 350
            while (Date.now() < until) {
              // a synchronous stall (a long GC, a CPU-bound step): no timer can fire
            }
            yield* Effect.sleep("300 millis")
            finished = true
          }),
          { ttl: "200 millis" }
        )
        .pipe(Effect.exit)
      expect(failure(exit)).toEqual(new LockLost({ key, reason: "expired" }))
      expect(finished).toBe(false)
    })
  )

  it.live("renewal keeps a lease alive across several TTLs", () =>
    Effect.gen(function* () {
      const key = lockKey("renew")
      yield* Effect.scoped(
        Effect.gen(function* () {
          const lease = yield* A.lock.acquire(key, { ttl: "300 millis" }) // renews every 100 ms
          for (let i = 0; i < 6; i++) {
            yield* Effect.sleep("200 millis")
            expect(yield* Effect.promise(() => raw.get(key))).toBe(lease.token)
            const other = yield* Effect.exit(Effect.scoped(B.lock.acquire(key, { waitTimeout: 0 })))
            expect(failure(other)).toBeInstanceOf(LockTimeout)
          }
          // 1.2 s = 4 TTLs later, the lease is still good.
          const alive = yield* Effect.raceFirst(lease.lost, Effect.as(Effect.sleep("1 millis"), "alive"))
          expect(alive).toBe("alive")
        })
      )
      expect(yield* Effect.promise(() => raw.exists(key))).toBe(0)
    })
  )

  it.live("a TTL beyond Node's longest timer holds the lock without an early renewal or a timer warning", () =>
    Effect.gen(function* () {
      const key = lockKey("long-ttl")
      const warnings: Array<string> = []
      const onWarning = (warning: Error) => warnings.push(warning.name)
      process.on("warning", onWarning)
      const before = yield* evalshaCalls
      yield* Effect.scoped(
        Effect.gen(function* () {
          const lease = yield* A.lock.acquire(key, { ttl: "90 days" }) // renewal due in 30 days
          yield* Effect.sleep("50 millis")
          expect(yield* Effect.promise(() => raw.get(key))).toBe(lease.token)
          expect(yield* Effect.promise(() => raw.pttl(key))).toBeGreaterThan(89 * 86_400_000)
        })
      ).pipe(Effect.ensuring(Effect.sync(() => process.off("warning", onWarning))))
      expect(warnings).toEqual([])
      // The acquire and the release: no extension fired early.
      expect((yield* evalshaCalls) - before).toBe(2)
      expect(yield* Effect.promise(() => raw.exists(key))).toBe(0)
    })
  )

  it.live("Redis unreachable for longer than the TTL loses the lease (unreachable)", () =>
    Effect.gen(function* () {
      const proxy = yield* Effect.acquireRelease(
        Effect.promise(() => tcpProxy(server.port)),
        (p) => Effect.promise(() => p.stop())
      )
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => new Redis(proxy.port, "127.0.0.1")),
        (c) => Effect.sync(() => c.disconnect())
      )
      const P = makeLockHandle(fromClient(client))
      const key = lockKey("unreachable")
      const exit = yield* P.lock
        .withLock(
          key,
          Effect.zipRight(
            Effect.sync(() => proxy.setMode("stall")),
            Effect.sleep("2 seconds")
          ),
          { ttl: "300 millis" }
        )
        .pipe(Effect.ensuring(Effect.sync(() => proxy.resume())), Effect.exit)
      expect(failure(exit)).toEqual(new LockLost({ key, reason: "unreachable" }))
      yield* P.close
    }).pipe(Effect.scoped)
  )

  it.live("a lost acquire reply that ioredis re-sends still gets the lock (no waiting on ourselves)", () =>
    Effect.gen(function* () {
      const proxy: TcpProxy = yield* Effect.acquireRelease(
        Effect.promise(() => tcpProxy(server.port)),
        (p) => Effect.promise(() => p.stop())
      )
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => new Redis(proxy.port, "127.0.0.1")),
        (c) => Effect.sync(() => c.disconnect())
      )
      yield* Effect.promise(() => client.ping())
      const P = makeLockHandle(fromClient(client))
      const key = lockKey("resend")
      // Load the script by SHA first, so the cut hits the acquire itself.
      yield* Effect.scoped(P.lock.acquire(lockKey("warmup")))
      proxy.cutAfterNextRequest()
      // Waiting on our own token would last the 10 s TTL, far past this waitTimeout.
      const lease = yield* P.lock.acquire(key, { waitTimeout: "2 seconds" })
      expect(yield* Effect.promise(() => raw.get(key))).toBe(lease.token)
      yield* P.close
    }).pipe(Effect.scoped)
  )
})

describe("RedisLock: waiting", () => {
  it.live("a waiter wakes within a few ms of the release (pub/sub, the poll is 10 s here)", () =>
    Effect.gen(function* () {
      const samples: Array<number> = []
      for (let i = 0; i < 25; i++) {
        const key = lockKey("handoff")
        let releasedAt = 0
        let ranAt = 0
        const holding = yield* Deferred.make<void>()
        const holder = yield* A.lock
          .withLock(
            key,
            Deferred.succeed(holding, undefined).pipe(
              Effect.zipRight(Effect.sleep("40 millis")),
              Effect.zipRight(Effect.sync(() => (releasedAt = performance.now())))
            )
          )
          .pipe(Effect.fork)
        yield* Deferred.await(holding)
        const waiter = yield* B.lock
          .withLock(
            key,
            Effect.sync(() => (ranAt = performance.now())),
            {
              retrySchedule: Schedule.spaced("10 seconds")
            }
          )
          .pipe(Effect.fork)
        yield* Fiber.join(holder)
        yield* Fiber.join(waiter)
        samples.push(ranAt - releasedAt)
      }
      console.log(
        `hand-off latency, release -> waiter running (ms): median ${median(samples).toFixed(2)}, max ${Math.max(...samples).toFixed(2)}; ${fmt(samples)}`
      )
      // Every waiter was woken by the release message: the poll (10 s) would have run past
      // the 5 s waitTimeout. Single samples can spike when the machine is loaded, so the
      // latency bound is on the median.
      expect(median(samples)).toBeLessThan(50)
    })
  )

  it.live("without a release message (a haechi-store-redis holder) the poll takes over", () =>
    Effect.gen(function* () {
      const samples: Array<number> = []
      for (let i = 0; i < 5; i++) {
        const key = lockKey("poll")
        expect(yield* Effect.promise(() => raw.set(key, "theirs", "PX", 10000, "NX"))).toBe("OK")
        let ranAt = 0
        const waiter = yield* B.lock
          .withLock(
            key,
            Effect.sync(() => (ranAt = performance.now()))
          )
          .pipe(Effect.fork)
        yield* Effect.sleep("80 millis")
        expect(ranAt).toBe(0) // theirs still held: ours did not run
        const releasedAt = performance.now()
        expect(yield* Effect.promise(() => raw.eval(REFERENCE_RELEASE, 1, key, "theirs"))).toBe(1)
        yield* Fiber.join(waiter)
        samples.push(ranAt - releasedAt)
      }
      console.log(
        `poll fallback latency (default 50 ms jittered poll, ms): median ${median(samples).toFixed(2)}, max ${Math.max(...samples).toFixed(2)}; ${fmt(samples)}`
      )
      expect(median(samples)).toBeLessThan(150)
    })
  )

  it.live("timeouts fail closed with LockTimeout and the work never runs", () =>
    Effect.gen(function* () {
      const key = lockKey("timeout")
      yield* Effect.promise(() => raw.set(key, "someone", "PX", 10000))
      let ran = false
      const work = Effect.sync(() => (ran = true))

      const started = performance.now()
      const byDeadline = yield* Effect.exit(A.lock.withLock(key, work, { waitTimeout: "200 millis" }))
      const elapsed = performance.now() - started
      const e = failure(byDeadline)
      expect(e).toBeInstanceOf(LockTimeout)
      expect((e as LockTimeout).key).toBe(key)
      expect((e as LockTimeout).waitedMs).toBeGreaterThanOrEqual(195)
      expect(elapsed).toBeLessThan(1500)

      const bySchedule = yield* Effect.exit(
        A.lock.withLock(key, work, {
          retrySchedule: Schedule.recurs(2).pipe(Schedule.addDelay(() => Duration.millis(20)))
        })
      )
      expect(failure(bySchedule)).toBeInstanceOf(LockTimeout)
      expect((failure(bySchedule) as LockTimeout).waitedMs).toBeLessThan(2000)

      const once = yield* Effect.exit(A.lock.withLock(key, work, { waitTimeout: 0 }))
      expect(failure(once)).toBeInstanceOf(LockTimeout)

      expect(ran).toBe(false)
      expect(yield* Effect.promise(() => raw.get(key))).toBe("someone")
    })
  )

  it.live("the release hands the lock straight to the queued waiter: no gap a third writer could take", () =>
    Effect.gen(function* () {
      const key = lockKey("handoff-queue")
      const holding = yield* Deferred.make<void>()
      const letGo = yield* Deferred.make<void>()
      const holder = yield* A.lock
        .withLock(key, Effect.zipRight(Deferred.succeed(holding, undefined), Deferred.await(letGo)))
        .pipe(Effect.fork)
      yield* Deferred.await(holding)
      const holderToken = yield* Effect.promise(() => raw.get(key))
      let waiterToken: string | null = null
      let waiterFence = 0
      const waiter = yield* Effect.scoped(
        Effect.flatMap(B.lock.acquire(key, { retrySchedule: Schedule.spaced("10 seconds") }), (lease) =>
          Effect.promise(async () => {
            waiterToken = await raw.get(key)
            waiterFence = lease.fence
            return lease.token
          })
        )
      ).pipe(Effect.fork)
      // The waiter queued itself (its first attempt found the lock held).
      for (let i = 0; i < 100 && (yield* Effect.promise(() => raw.zcard(`{${key}}:waiters`))) === 0; i++) {
        yield* Effect.sleep("5 millis")
      }
      expect(yield* Effect.promise(() => raw.zcard(`{${key}}:waiters`))).toBe(1)
      yield* Deferred.succeed(letGo, undefined)
      yield* Fiber.join(holder)
      // At once after the holder's release the key already holds someone else's token:
      // a plain SET NX (a third writer, or a reference replica) cannot slip in between.
      expect(yield* Effect.promise(() => raw.set(key, "third", "PX", 1000, "NX"))).toBeNull()
      const token = yield* Fiber.join(waiter)
      expect(waiterToken).toBe(token)
      expect(token).not.toBe(holderToken)
      expect(waiterFence).toBe(Number(yield* Effect.promise(() => raw.get(fenceKeyOf(key)))))
      expect(yield* Effect.promise(() => raw.exists(key, `{${key}}:waiters`))).toBe(0)
    })
  )

  it.live("on a live release channel a contended hand-off costs one command per acquire and per release", () =>
    Effect.gen(function* () {
      const key = lockKey("commands")
      const round = Effect.gen(function* () {
        const holding = yield* Deferred.make<void>()
        const holder = yield* A.lock
          .withLock(key, Effect.zipRight(Deferred.succeed(holding, undefined), Effect.sleep("30 millis")))
          .pipe(Effect.fork)
        yield* Deferred.await(holding)
        const waiter = yield* B.lock
          .withLock(key, Effect.void, { retrySchedule: Schedule.spaced("10 seconds") })
          .pipe(Effect.fork)
        yield* Fiber.join(holder)
        yield* Fiber.join(waiter)
      })
      yield* round // B's subscription is live (and lingers) from here on
      const before = yield* evalshaCalls
      yield* round
      // Holder: acquire + release (a hand-off). Waiter: one queued acquire, woken by the
      // hand-off message (no second attempt), then its release.
      expect((yield* evalshaCalls) - before).toBe(4)
    })
  )

  it.live("a waiter that gave up leaves the queue, and a release skips waiters past their deadline", () =>
    Effect.gen(function* () {
      const key = lockKey("queue-leave")
      const waiters = `{${key}}:waiters`
      yield* Effect.promise(() => raw.set(key, "someone", "PX", 10000))
      const e = failure(yield* Effect.exit(A.lock.withLock(key, Effect.void, { waitTimeout: "60 millis" })))
      expect(e).toBeInstanceOf(LockTimeout)
      expect(yield* Effect.promise(() => raw.zcard(waiters))).toBe(0)
      // A waiter that died without leaving (its deadline is in the past) is not handed the lock.
      yield* Effect.promise(() => raw.zadd(waiters, 1, "ghost 10000"))
      const holderDone = yield* Deferred.make<void>()
      yield* Effect.promise(() => raw.del(key))
      yield* A.lock.withLock(key, Deferred.succeed(holderDone, undefined))
      expect(yield* Effect.promise(() => raw.exists(key))).toBe(0)
      expect(yield* Effect.promise(() => raw.zcard(waiters))).toBe(0)
    })
  )

  it.live("the queue outlives its longest-waiting member, whatever shorter waits join later", () =>
    Effect.gen(function* () {
      const key = lockKey("queue-ttl")
      const waiters = `{${key}}:waiters`
      yield* Effect.promise(() => raw.set(key, "someone", "PX", 10000))
      const long = yield* Effect.fork(
        A.lock.withLock(key, Effect.void, { waitTimeout: "30 seconds", retrySchedule: Schedule.spaced("20 seconds") })
      )
      for (let i = 0; i < 100 && (yield* Effect.promise(() => raw.zcard(waiters))) === 0; i++) {
        yield* Effect.sleep("5 millis")
      }
      expect(
        failure(yield* Effect.exit(B.lock.withLock(key, Effect.void, { waitTimeout: "50 millis" })))
      ).toBeInstanceOf(LockTimeout)
      expect(yield* Effect.promise(() => raw.pttl(waiters))).toBeGreaterThan(30_000) // 30 s wait + 10 s TTL, not 50 ms + 10 s
      expect(yield* Effect.promise(() => raw.zcard(waiters))).toBe(1)
      yield* Fiber.interrupt(long)
      expect(yield* Effect.promise(() => raw.zcard(waiters))).toBe(0)
    })
  )

  it.live("an interrupted waiter leaves no lock behind", () =>
    Effect.gen(function* () {
      const key = lockKey("waiter-interrupt")
      yield* Effect.promise(() => raw.set(key, "someone", "PX", 10000))
      const waiter = yield* Effect.fork(A.lock.withLock(key, Effect.void))
      yield* Effect.sleep("100 millis")
      yield* Fiber.interrupt(waiter)
      yield* Effect.promise(() => raw.eval(REFERENCE_RELEASE, 1, key, "someone"))
      yield* Effect.sleep("100 millis")
      expect(yield* Effect.promise(() => raw.exists(key))).toBe(0)
    })
  )
})

describe("RedisLock: compatibility with haechi-store-redis holders", () => {
  it.live("a plain SET NX PX holder excludes ours; ours acquires after its compare-and-delete release", () =>
    Effect.gen(function* () {
      const key = lockKey("theirs-first")
      expect(yield* Effect.promise(() => raw.set(key, "their-token", "PX", 5000, "NX"))).toBe("OK")
      let ranAt = 0
      const ours = yield* Effect.fork(
        A.lock.withLock(
          key,
          Effect.sync(() => (ranAt = performance.now()))
        )
      )
      yield* Effect.sleep("150 millis")
      expect(ranAt).toBe(0)
      const releasedAt = performance.now()
      expect(yield* Effect.promise(() => raw.eval(REFERENCE_RELEASE, 1, key, "their-token"))).toBe(1)
      yield* Fiber.join(ours)
      expect(ranAt).toBeGreaterThan(releasedAt)
    })
  )

  it.live("a plain SET NX PX holder that dies lets ours in once its TTL lapses", () =>
    Effect.gen(function* () {
      const key = lockKey("theirs-dead")
      yield* Effect.promise(() => raw.set(key, "their-token", "PX", 200, "NX"))
      const started = performance.now()
      yield* A.lock.withLock(key, Effect.void)
      expect(performance.now() - started).toBeGreaterThanOrEqual(150)
    })
  )

  it.live("ours excludes a plain SET NX PX holder, and a reference release works on our lock", () =>
    Effect.gen(function* () {
      const key = lockKey("ours-first")
      yield* Effect.scoped(
        Effect.gen(function* () {
          const lease = yield* A.lock.acquire(key)
          expect(yield* Effect.promise(() => raw.get(key))).toBe(lease.token)
          expect(yield* Effect.promise(() => raw.set(key, "their-token", "PX", 5000, "NX"))).toBeNull()
          expect(yield* Effect.promise(() => raw.eval(REFERENCE_RELEASE, 1, key, "their-token"))).toBe(0)
          expect(yield* Effect.promise(() => raw.get(key))).toBe(lease.token)
        })
      )
      expect(yield* Effect.promise(() => raw.set(key, "their-token", "PX", 5000, "NX"))).toBe("OK")

      // Their compare-and-delete, given our token, frees our lock; we then see it lost.
      const key2 = lockKey("ours-released-by-theirs")
      const exit = yield* Effect.scoped(
        Effect.gen(function* () {
          const lease = yield* A.lock.acquire(key2, { ttl: "300 millis" })
          expect(yield* Effect.promise(() => raw.eval(REFERENCE_RELEASE, 1, key2, lease.token))).toBe(1)
          return yield* Effect.exit(lease.lost)
        })
      )
      expect(failure(exit)).toEqual(new LockLost({ key: key2, reason: "expired" }))
    })
  )
})

describe("RedisLock: service, options, cluster", () => {
  it.live("the layer provides the service over RedisClient", () =>
    Effect.gen(function* () {
      const lock = yield* RedisLock
      const key = lockKey("layer")
      const out = yield* lock.withLock(
        key,
        Effect.promise(() => raw.get(key))
      )
      expect(out).toMatch(/^[0-9a-f]{32}$/)
    }).pipe(Effect.provide(layer.pipe(Layer.provide(layerFromClient(clientA)))))
  )

  it.live("bad options fail with InvalidConfig naming the option, before touching Redis", () =>
    Effect.gen(function* () {
      const key = lockKey("options")
      const cases = [
        ["key", A.lock.acquire("")],
        ["ttl", A.lock.acquire(key, { ttl: 0 })],
        ["ttl", A.lock.acquire(key, { ttl: Duration.infinity })],
        ["ttl", A.lock.acquire(key, { ttl: "soon" as Duration.DurationInput })],
        ["ttl", A.lock.acquire(key, { ttl: "40000 days" })],
        ["renewEvery", A.lock.acquire(key, { renewEvery: 0 })],
        ["renewEvery", A.lock.acquire(key, { renewEvery: "1 nanos" })],
        ["waitTimeout", A.lock.acquire(key, { waitTimeout: {} as Duration.DurationInput })],
        ["retrySchedule", A.lock.acquire(key, { retrySchedule: 5 as unknown as Schedule.Schedule<unknown> })],
        ["onLost", A.lock.withLock(key, Effect.void, { onLost: "panic" as "fail" })]
      ] as ReadonlyArray<readonly [string, Effect.Effect<unknown, unknown, Scope.Scope>]>
      for (const [option, effect] of cases) {
        const e = failure(yield* Effect.exit(Effect.scoped(effect)))
        expect(e).toBeInstanceOf(InvalidConfig)
        expect((e as InvalidConfig).option).toBe(option)
      }
      expect(yield* Effect.promise(() => raw.exists(key, fenceKeyOf(key)))).toBe(0)
    })
  )

  it("derives the fence and waiters keys in the lock key's hash slot", () => {
    for (const key of ["haechi:audit:lock", "{haechi:tv}:lock", "a{b}c", "x{y", "plain"]) {
      expect(keySlot(fenceKeyOf(key))).toBe(keySlot(key))
      expect(keySlot(waitersKeyOf(key))).toBe(keySlot(key))
    }
    expect(waitersKeyOf("{haechi:tv}:lock")).toBe("{haechi:tv}:lock:waiters")
    expect(fenceKeyOf("{haechi:tv}:lock")).toBe("{haechi:tv}:lock:fence")
    expect(fenceKeyOf("haechi:audit:lock")).toBe("{haechi:audit:lock}:fence")
  })

  it.live("works on a Redis Cluster: same-slot keys, and waiters woken through Cluster.duplicate()", () =>
    Effect.gen(function* () {
      const { startupNodes } = sharedCluster()
      const connect = Effect.acquireRelease(
        Effect.sync(() => new Cluster(startupNodes.map((n) => ({ host: n.host, port: n.port })))),
        (c) => Effect.promise(() => c.quit().catch(() => c.disconnect()))
      )
      const c1 = yield* connect
      const c2 = yield* connect
      const L1 = yield* Effect.acquireRelease(
        Effect.sync(() => makeLockHandle(fromClient(c1))),
        (h) => h.close
      )
      const L2 = yield* Effect.acquireRelease(
        Effect.sync(() => makeLockHandle(fromClient(c2))),
        (h) => h.close
      )

      const refused = failure(yield* Effect.exit(Effect.scoped(L1.lock.acquire("t:a}b:lock"))))
      expect(refused).toBeInstanceOf(InvalidConfig)

      const samples: Array<number> = []
      for (const key of [`${uniquePrefix("cluster")}lock`, `${uniqueClusterPrefix("cluster")}lock`]) {
        for (let i = 0; i < 3; i++) {
          let releasedAt = 0
          let ranAt = 0
          const holding = yield* Deferred.make<void>()
          const holder = yield* L1.lock
            .withLock(
              key,
              Deferred.succeed(holding, undefined).pipe(
                Effect.zipRight(Effect.sleep("100 millis")),
                Effect.zipRight(Effect.sync(() => (releasedAt = performance.now())))
              )
            )
            .pipe(Effect.fork)
          yield* Deferred.await(holding)
          const waiter = yield* L2.lock
            .withLock(
              key,
              Effect.sync(() => (ranAt = performance.now())),
              {
                retrySchedule: Schedule.spaced("10 seconds")
              }
            )
            .pipe(Effect.fork)
          yield* Fiber.join(holder)
          yield* Fiber.join(waiter)
          samples.push(ranAt - releasedAt)
        }
        // Six acquisitions; a waiter whose own attempt raced its hand-off takes one more
        // fence number (still strictly greater), so at least six.
        const fence = yield* Effect.promise(() => c1.get(fenceKeyOf(key)))
        expect(Number(fence)).toBeGreaterThanOrEqual(6)
        expect(Number(fence)).toBeLessThanOrEqual(9)
      }
      console.log(`cluster hand-off latency (ms): ${fmt(samples)}`)
      // Woken by the release message (the 10 s poll is past the 5 s waitTimeout). Loose
      // bound: the shared cluster may be failing over for another test file.
      expect(median(samples)).toBeLessThan(200)
    }).pipe(Effect.scoped)
  )
})

describe("withRedisLock (Promise facade)", () => {
  it("serializes overlapping sections across two separate ioredis clients", async () => {
    const key = lockKey("facade")
    let inside = 0
    let maxInside = 0
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        withRedisLock(i % 2 === 0 ? clientA : clientB, key, async () => {
          inside++
          maxInside = Math.max(maxInside, inside)
          await new Promise((r) => setTimeout(r, 20))
          inside--
          return i
        })
      )
    )
    expect(results).toEqual([0, 1, 2, 3, 4, 5])
    expect(maxInside).toBe(1)
    expect(await raw.exists(key)).toBe(0)
  })

  it("renews while fn runs: a plain SET NX cannot get in after several TTLs", async () => {
    const key = lockKey("facade-renew")
    const result = await withRedisLock(
      clientA,
      key,
      async () => {
        for (let i = 0; i < 4; i++) {
          await new Promise((r) => setTimeout(r, 200))
          expect(await raw.set(key, "theirs", "PX", 5000, "NX")).toBeNull()
        }
        return "done"
      },
      { ttlMs: 300 }
    )
    expect(result).toBe("done")
    expect(await raw.exists(key)).toBe(0)
  })

  it("rejects with fn's own error after releasing", async () => {
    const key = lockKey("facade-error")
    const boom = new Error("boom")
    await expect(
      withRedisLock(clientA, key, async () => {
        throw boom
      })
    ).rejects.toBe(boom)
    expect(await raw.exists(key)).toBe(0)
  })

  it("fails closed with the original LockTimeout (not a FiberFailure) and never runs fn", async () => {
    const key = lockKey("facade-timeout")
    await raw.set(key, "someone", "PX", 10000)
    let ran = false
    const err = await withRedisLock(
      clientB,
      key,
      async () => {
        ran = true
      },
      { timeoutMs: 100, retryMs: 10 }
    ).then(
      () => undefined,
      (e: unknown) => e
    )
    expect(err).toBeInstanceOf(LockTimeout)
    expect((err as LockTimeout)._tag).toBe("LockTimeout")
    expect((err as LockTimeout).key).toBe(key)
    expect(ran).toBe(false)
  })

  it("rejects bad arguments (asynchronously) with the reference's messages", async () => {
    const fn = async () => 1
    const call = (...args: Array<unknown>) =>
      (withRedisLock as unknown as (...a: Array<unknown>) => Promise<unknown>)(...args)
    const cases: Array<[Array<unknown>, string]> = [
      [[null, "k", fn], "withRedisLock requires an ioredis client"],
      [[{ set() {} }, "k", fn], "withRedisLock requires an ioredis client"],
      [[clientA, "", fn], "withRedisLock requires a non-empty string lockKey"],
      [[clientA, 5, fn], "withRedisLock requires a non-empty string lockKey"],
      [[clientA, "k", "fn"], "withRedisLock requires a function fn"],
      [[clientA, "k", fn, { ttlMs: 0 }], "withRedisLock ttlMs must be a positive integer"],
      [[clientA, "k", fn, { ttlMs: 1.5 }], "withRedisLock ttlMs must be a positive integer"],
      [[clientA, "k", fn, { retryMs: 0 }], "withRedisLock retryMs must be a positive integer"],
      [[clientA, "k", fn, { timeoutMs: -1 }], "withRedisLock timeoutMs must be a non-negative integer"]
    ]
    for (const [args, message] of cases) {
      let promise: Promise<unknown> | undefined
      expect(() => (promise = call(...args))).not.toThrow()
      await expect(promise).rejects.toThrow(message)
    }
  })
})
