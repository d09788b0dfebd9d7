/**
 * Faults against the one timer per store operation (`DeadlineQueue`): what every
 * operation's own timer used to promise (its deadline passes once, never early, never
 * more than a little late, never after it ended; an idle queue holds nothing open) must
 * hold when the deadlines share a timer, also when `passed` starts and ends other
 * deadlines, when thousands end behind one that stands, when the timer fires early or a
 * `passed` throws; and for nested operations, on one queue or on two. Against real
 * Redis: a store's facade lane and Effect transaction share one queue, and each operation
 * that stands still ends at its own deadline while the others on the same store go on
 * (also one that lost its race and went on); the vault's fiber-free reads on a frozen link
 * too; and a process that used the stores and quit its client exits at once.
 */
import { execFile } from "node:child_process"
import { fileURLToPath, pathToFileURL } from "node:url"
import { Effect, Either } from "effect"
import fc from "fast-check"
import { Redis } from "ioredis"
import { afterAll, describe, expect, it } from "vitest"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisTokenStore, type Integrity } from "../src/haechi.js"
import { redisAuditBacking } from "../src/internal/audit/backing.js"
import { appendStoreOnBacking } from "../src/internal/audit/store.js"
import { sleep as deadlineSleep, within } from "../src/internal/deadline.js"
import { DeadlineQueue, type QueuedDeadline } from "../src/internal/deadlineQueue.js"
import { callerTransactions } from "../src/internal/facade/auditTransaction.js"
import { guardFor } from "../src/internal/lock/policy.js"
import { fromClient } from "../src/RedisClient.js"
import { chainOf, tracedRuntime } from "./support/facadePaths.js"
import { verifyAuditChain } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { tcpProxy, type TcpProxy } from "./support/redisServer.js"
import { sharedRedis } from "./support/shared.js"

const opened: Array<Redis> = []
const proxies: Array<TcpProxy> = []
afterAll(async () => {
  for (const c of opened) c.disconnect()
  await Promise.all(proxies.map((p) => p.stop()))
})
const client = (port: number): Redis => {
  const c = new Redis(port, "127.0.0.1", { maxRetriesPerRequest: null })
  c.on("error", () => {})
  opened.push(c)
  return c
}

// (Node's own setTimeout, also while a test stands in one that fires early.)
const realSetTimeout = globalThis.setTimeout
const sleep = (ms: number) => new Promise<void>((resolve) => realSetTimeout(resolve, ms))

/** A deadline with what the test saw happen to it (`performance.now()` times). */
interface Seen extends QueuedDeadline {
  readonly id: number
  /** Read just before `start`: its deadline passes no earlier than `delay` after. */
  startedAt: number
  endedAt?: number
  passes: Array<number>
}
const seen = (id: number): Seen => ({ id, endsAt: 0, done: false, startedAt: 0, passes: [] })

/** The queue's own array and front (white-box: what it keeps of ended deadlines). */
const internals = (queue: DeadlineQueue<Seen>) =>
  queue as unknown as { queue: Array<Seen>; head: number; timer: ReturnType<typeof setTimeout> | undefined }
/** The queue's timer holds the process open. */
const holdsOpen = (queue: DeadlineQueue<Seen>) => internals(queue).timer?.hasRef() ?? false

/**
 * Checks each deadline against its own timer of `delay`: passed at most once; never
 * before `delay` from its start; never after it ended; and, unless it ended by its time
 * (plus `late`), passed by then.
 */
const checkAgainstOwnTimers = (all: ReadonlyArray<Seen>, delay: number, late: number) => {
  const wrong: Array<string> = []
  for (const d of all) {
    const passedAt = d.passes[0]
    const due = d.startedAt + delay
    if (d.passes.length > 1) wrong.push(`${d.id} passed ${d.passes.length} times`)
    if (passedAt !== undefined && passedAt < due) wrong.push(`${d.id} passed ${due - passedAt} ms early`)
    if (passedAt !== undefined && d.endedAt !== undefined && passedAt >= d.endedAt)
      wrong.push(`${d.id} passed after it ended`)
    if (d.endedAt === undefined || d.endedAt > due + late) {
      if (passedAt === undefined) wrong.push(`${d.id} never passed`)
      else if (passedAt - due > late) wrong.push(`${d.id} passed ${passedAt - due} ms late`)
    }
  }
  expect(wrong).toEqual([])
}

describe("DeadlineQueue under faults", () => {
  // Catches: a queue that loses a deadline started or ended from inside `passed` (the
  // expire of one budget abandons waits whose finalizers start and end other runs), that
  // drops or reorders standing deadlines when it compacts its ended front (a burst of
  // more than 1024), that passes one early or twice, passes an ended one, re-arms for the
  // wrong deadline (late), or stays ref'd once nothing stands.
  it("random starts, ends, bursts and re-entrant passes agree with a timer per deadline", async () => {
    const delay = 60
    const late = 45
    const step = fc.oneof(
      fc.record({
        kind: fc.constant("start" as const),
        onPass: fc.constantFrom("none", "endSelf", "endNext", "start")
      }),
      fc.record({ kind: fc.constant("end" as const), pick: fc.nat() }),
      fc.record({ kind: fc.constant("wait" as const), ms: fc.integer({ min: 0, max: 25 }) }),
      fc.record({ kind: fc.constant("burst" as const), size: fc.integer({ min: 1025, max: 1400 }), keep: fc.nat(2) })
    )
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 14 }), async (steps) => {
        const all: Array<Seen> = []
        const onPass = new Map<Seen, string>()
        const queue: DeadlineQueue<Seen> = new DeadlineQueue<Seen>(delay, (d) => {
          d.passes.push(performance.now())
          const what = onPass.get(d)
          if (what === "endSelf") end(d)
          else if (what === "endNext") {
            const next = all.find(
              (other) => other.id > d.id && other.endedAt === undefined && other.passes.length === 0
            )
            if (next !== undefined) end(next)
          } else if (what === "start") start()
        })
        const start = () => {
          const d = seen(all.length)
          all.push(d)
          d.startedAt = performance.now()
          queue.start(d)
          return d
        }
        const end = (d: Seen) => {
          d.endedAt ??= performance.now()
          queue.end(d)
        }
        for (const s of steps) {
          if (s.kind === "start") onPass.set(start(), s.onPass)
          else if (s.kind === "end") {
            const standing = all.filter((d) => d.endedAt === undefined)
            if (standing.length > 0) end(standing[s.pick % standing.length]!)
          } else if (s.kind === "wait") await sleep(s.ms)
          else {
            const burst = Array.from({ length: s.size }, start)
            for (const d of burst.slice(0, burst.length - s.keep)) end(d)
          }
        }
        // While one stands, the process is held open for it.
        const stands = all.some((d) => d.endedAt === undefined && d.passes.length === 0)
        expect(holdsOpen(queue)).toBe(stands)
        await sleep(delay + late + 30)
        checkAgainstOwnTimers(all, delay, late)
        for (const d of all) end(d)
        expect(holdsOpen(queue)).toBe(false)
        expect(internals(queue).queue).toHaveLength(0)
      }),
      { numRuns: 30 }
    )
  }, 40_000)

  // Catches: compaction that keeps the ended front (memory grows with every operation
  // while the oldest stands), loses or reorders what stands behind it, or forgets the head.
  it("thousands ended while the oldest stands: kept only until it goes, then compacted in order", async () => {
    const delay = 150
    const passed: Array<number> = []
    const queue = new DeadlineQueue<Seen>(delay, (d) => {
      d.passes.push(performance.now())
      passed.push(d.id)
    })
    const start = (id: number) => {
      const d = seen(id)
      d.startedAt = performance.now()
      queue.start(d)
      return d
    }
    const oldest = start(0)
    const quick = Array.from({ length: 5000 }, (_, i) => start(i + 1))
    for (const d of quick) queue.end(d)
    // Behind one that stands, what ended stays (bounded by the deadline: it passes by then).
    expect(internals(queue).queue.length).toBe(5001)
    // Thousands more stand behind the oldest; the oldest ends: the ended front goes at once.
    const standing = Array.from({ length: 3000 }, (_, i) => start(10_000 + i))
    queue.end(oldest)
    expect(internals(queue).head).toBe(0)
    expect(internals(queue).queue).toEqual(standing)
    // The first 2000 of them end in order: compacted again (head > 1024, most of it ended).
    for (const d of standing.slice(0, 2000)) queue.end(d)
    expect(internals(queue).queue.length).toBeLessThanOrEqual(1000 + 1024)
    const rest = standing.slice(2000)
    await sleep(delay + 120)
    expect(passed).toEqual(rest.map((d) => d.id))
    for (const d of rest) expect(d.passes[0]!).toBeGreaterThanOrEqual(d.startedAt + delay)
    expect(internals(queue).queue).toHaveLength(0)
  })

  // Catches: trusting the timer's own time. Node schedules from its loop's time, so a
  // timer may fire early; here every timer fires at a third of its delay, and no deadline
  // may pass before its time (the queue re-arms for what is left).
  it("a timer that fires early passes nothing early", async () => {
    let early = 0
    globalThis.setTimeout = ((fn: () => void, ms?: number) => {
      early += 1
      return realSetTimeout(fn, Math.floor((ms ?? 0) / 3))
    }) as typeof setTimeout
    try {
      const delay = 90
      const all: Array<Seen> = []
      const queue = new DeadlineQueue<Seen>(delay, (d) => d.passes.push(performance.now()))
      for (let i = 0; i < 4; i++) {
        const d = seen(i)
        all.push(d)
        d.startedAt = performance.now()
        queue.start(d)
        await sleep(7)
      }
      await sleep(delay + 80)
      expect(early).toBeGreaterThan(2)
      checkAgainstOwnTimers(all, delay, 60)
    } finally {
      globalThis.setTimeout = realSetTimeout
    }
  })

  // Catches: a `passed` that throws (an abandon's finalizer; the process keeps running
  // under an uncaughtException handler) leaving every other deadline of the queue standing
  // for good: with a timer per operation only the one that threw was affected.
  it("a passed that throws does not keep the others of its queue from passing", async () => {
    const queueUrl = pathToFileURL(fileURLToPath(new URL("../dist/internal/deadlineQueue.js", import.meta.url))).href
    const script = `
      import { DeadlineQueue } from ${JSON.stringify(queueUrl)}
      process.on("uncaughtException", () => {})
      const passed = []
      const queue = new DeadlineQueue(40, (d) => {
        passed.push(d.name)
        if (d.name === "throws") throw new Error("a finalizer failed")
      })
      queue.start({ name: "throws", endsAt: 0, done: false })
      setTimeout(() => queue.start({ name: "after", endsAt: 0, done: false }), 10)
      setTimeout(() => { console.log(JSON.stringify(passed)); process.exit(0) }, 400)
    `
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ["--input-type=module", "-e", script], { timeout: 10_000 }, (error, stdout) =>
        error ? reject(error) : resolve(stdout)
      )
    )
    expect(JSON.parse(out)).toEqual(["throws", "after"])
  })
})

// Catches: nested operations (one `within` another) that end at the wrong deadline once
// their deadlines share a timer: the inner one's (on the same queue, or a shorter one on
// its own) or the outer one's (a longer inner one) must each be kept, and an inner one
// that failed at its deadline leaves the outer one going on undisturbed.
describe("nested operations on shared and separate queues", () => {
  const timed = <A, E>(effect: Effect.Effect<A, E>) => {
    const startedAt = performance.now()
    return Effect.runPromise(Effect.either(effect)).then((either) => ({ ms: performance.now() - startedAt, either }))
  }
  const failureOf = (either: Either.Either<unknown, unknown>) =>
    Either.isLeft(either) ? (either.left as { operation?: string; timeoutMs?: number }) : undefined

  it("an inner run on the same queue ends with the outer one, at the outer one's deadline", async () => {
    const bound = within({ operation: "outer", timeoutMs: 250 })
    const { ms, either } = await timed(bound(Effect.zipRight(deadlineSleep(150), bound(deadlineSleep(10_000)))))
    expect(failureOf(either)).toMatchObject({ _tag: "OperationTimeout", operation: "outer", timeoutMs: 250 })
    expect(ms).toBeGreaterThanOrEqual(249)
    // (The inner run's own deadline, on the same queue, is 150 ms later.)
    expect(ms).toBeLessThanOrEqual(250 + 120)
  })

  it("a shorter inner operation fails at its own deadline and the outer one goes on", async () => {
    const outer = within({ operation: "outer", timeoutMs: 600 })
    const inner = within({ operation: "inner", timeoutMs: 150 })
    let innerAt = 0
    const { ms, either } = await timed(
      outer(
        Effect.gen(function* () {
          const startedAt = performance.now()
          const failed = yield* Effect.either(inner(deadlineSleep(10_000)))
          innerAt = performance.now() - startedAt
          expect(failureOf(failed)).toMatchObject({ _tag: "OperationTimeout", operation: "inner" })
          yield* deadlineSleep(100)
          return "outer done"
        })
      )
    )
    expect(either).toEqual(Either.right("outer done"))
    expect(innerAt).toBeGreaterThanOrEqual(149)
    expect(innerAt).toBeLessThanOrEqual(150 + 120)
    expect(ms).toBeLessThan(600)
  })

  it("a longer inner operation ends at the outer one's deadline", async () => {
    const outer = within({ operation: "outer", timeoutMs: 200 })
    const inner = within({ operation: "inner", timeoutMs: 5_000 })
    const { ms, either } = await timed(outer(inner(deadlineSleep(10_000))))
    expect(failureOf(either)).toMatchObject({ _tag: "OperationTimeout", operation: "outer" })
    expect(ms).toBeGreaterThanOrEqual(199)
    expect(ms).toBeLessThanOrEqual(200 + 120)
  })
})

/** When `promise` settled, in ms from `startedAt`, and its rejection (undefined if it resolved). */
const settledAt = (startedAt: number, promise: Promise<unknown>) =>
  promise.then(
    () => ({ ms: performance.now() - startedAt, error: undefined as unknown }),
    (error: unknown) => ({ ms: performance.now() - startedAt, error })
  )
const tokenRecord = (token: string) => ({
  type: "email",
  createdAt: "2030-01-01T00:00:00.000Z",
  expiresAt: null,
  metadata: { fingerprint: token },
  envelope: { alg: "test", iv: "iv", ciphertext: "Y3Q" },
  aad: { purpose: "token-vault", token, type: "email", context: {} }
})
const tagOf = (error: unknown) => (error as { _tag?: string } | undefined)?._tag

/** A store over `redis` whose facade lane and Effect transaction share one deadline queue. */
const laneAndEffect = (redisClient: Redis, prefix: string, timeout: number) => {
  const redis = fromClient(redisClient)
  const { lane, store } = appendStoreOnBacking(redisAuditBacking(redis, prefix), {
    guard: guardFor("never", redis, `${prefix}lock`),
    timeout
  })
  expect(lane).toBeDefined()
  return {
    lane: callerTransactions(store, lane),
    // A runtime that traces: the same store's Effect transaction (`within` on the same queue).
    effect: callerTransactions(store, lane, tracedRuntime().runtime)
  }
}
type Transaction = ReturnType<typeof laneAndEffect>["lane"]
const appendOn = (transaction: Transaction, event: object) =>
  transaction(async ({ readLastIntegrity, persist }) => {
    await persist(buildNextRecord(event, (await readLastIntegrity()) as Integrity | null))
  })

describe("one store's deadlines on one timer, against real Redis", () => {
  // Catches: one timer for the lane and the Effect path that passes the deadlines of
  // later operations with the oldest one's (early), or re-arms only when an operation
  // starts (late), or lets the operations that end meanwhile disturb those that stand.
  it("stuck operations started apart each end at their own deadline while the others on the store succeed", async () => {
    const timeout = 300
    const late = 150
    const redisClient = client(sharedRedis().port)
    const prefix = uniquePrefix("dq-shared")
    const paths = laneAndEffect(redisClient, prefix, timeout)
    await appendOn(paths.lane, { warm: true })
    let release!: () => void
    const stuck = new Promise<void>((resolve) => (release = resolve))
    const stuckOn = (transaction: Transaction) => {
      const startedAt = performance.now()
      return settledAt(
        startedAt,
        transaction(async ({ readLastIntegrity }) => {
          await readLastIntegrity()
          await stuck
        })
      )
    }
    const stuckOnes: Array<ReturnType<typeof stuckOn>> = []
    let quick = 0
    const quickTimes: Array<number> = []
    const began = performance.now()
    for (let i = 0; performance.now() - began < 700 && i < 2000; i++) {
      const at = performance.now() - began
      if (stuckOnes.length < 4 && at >= stuckOnes.length * 90) {
        stuckOnes.push(stuckOn(stuckOnes.length % 2 === 0 ? paths.lane : paths.effect))
      }
      const path = i % 2 === 0 ? paths.lane : paths.effect
      const started = performance.now()
      await appendOn(path, { quick: i })
      quickTimes.push(performance.now() - started)
      quick += 1
    }
    const outcomes = await Promise.all(stuckOnes)
    release()
    expect(outcomes).toHaveLength(4)
    for (const outcome of outcomes) {
      expect(tagOf(outcome.error)).toBe("OperationTimeout")
      expect(outcome.ms).toBeGreaterThanOrEqual(timeout - 1)
      expect(outcome.ms).toBeLessThanOrEqual(timeout + late)
    }
    // Every quick one succeeded, none held near a deadline.
    expect(quick).toBeGreaterThan(20)
    expect(Math.max(...quickTimes)).toBeLessThan(timeout)
    const chain = await chainOf(redisClient, prefix)
    expect(chain).toHaveLength(quick + 1)
    expect(verifyAuditChain(chain).valid).toBe(true)
  })

  // Catches: a lane operation that lost its race going on in the store's transaction (or
  // an Effect transaction retrying) on a deadline of its own, started when it went on:
  // the operation's deadline is the one it started with, on the shared queue.
  it("an operation that lost its race and then stands ends at the deadline it started with (lane and Effect path)", async () => {
    const timeout = 400
    const late = 120
    const redisClient = client(sharedRedis().port)
    for (const path of ["lane", "effect"] as const) {
      const prefix = uniquePrefix(`dq-lost-${path}`)
      const paths = laneAndEffect(redisClient, prefix, timeout)
      const rival = laneAndEffect(redisClient, prefix, timeout)
      await appendOn(paths.lane, { warm: true })
      let builds = 0
      let release!: () => void
      const stuck = new Promise<void>((resolve) => (release = resolve))
      const startedAt = performance.now()
      const outcome = await settledAt(
        startedAt,
        paths[path](async ({ readLastIntegrity, persist }) => {
          const build = ++builds
          const head = (await readLastIntegrity()) as Integrity | null
          if (build > 1) await stuck
          await sleep(200)
          await appendOn(rival.lane, { rival: build })
          await persist(buildNextRecord({ ours: build }, head))
        })
      )
      release()
      expect(builds, path).toBe(2)
      expect(tagOf(outcome.error), path).toBe("OperationTimeout")
      expect(outcome.ms, path).toBeGreaterThanOrEqual(timeout - 1)
      // (From the second build's start it would be 200 ms more.)
      expect(outcome.ms, path).toBeLessThanOrEqual(timeout + late)
      const chain = await chainOf(redisClient, prefix)
      expect(chain.map((r) => Object.keys(r).find((k) => k === "ours" || k === "rival" || k === "warm"))).toEqual([
        "warm",
        "rival"
      ])
      expect(verifyAuditChain(chain).valid).toBe(true)
    }
  })

  // Catches: a frozen link holding an operation past its own deadline (or ending one
  // early, at an older one's) on each path whose deadlines share a timer: the facade
  // lane and the Effect transaction (one queue), and the vault's fiber-free read (its own).
  it("on a frozen link, the lane, the Effect path and the vault read started apart each time out at their own deadline", async () => {
    const timeout = 300
    const late = 150
    const proxy = await tcpProxy(sharedRedis().port)
    proxies.push(proxy)
    const proxied = client(proxy.port)
    const prefix = uniquePrefix("dq-frozen")
    const paths = laneAndEffect(proxied, `${prefix}audit:`, timeout)
    const tokens = createRedisTokenStore({
      client: proxied,
      keyPrefix: `${prefix}tv:`,
      startupChecks: "off",
      timeout
    })
    await appendOn(paths.lane, { warm: true })
    await tokens.mutate((view) => void view.set("k", tokenRecord("k")))
    expect(await tokens.read((view) => view.get("k") !== undefined)).toBe(true)
    proxy.freeze()
    const started: Array<Promise<{ readonly what: string; readonly ms: number; readonly error: unknown }>> = []
    const kinds = ["lane", "effect", "read", "lane", "read", "effect"] as const
    for (const [i, what] of kinds.entries()) {
      const startedAt = performance.now()
      const operation =
        what === "read"
          ? tokens.read((view) => view.get("k") !== undefined)
          : appendOn(what === "lane" ? paths.lane : paths.effect, { frozen: i })
      started.push(settledAt(startedAt, operation).then((outcome) => ({ what, ...outcome })))
      await sleep(60)
    }
    const outcomes = await Promise.all(started)
    proxy.thaw()
    for (const outcome of outcomes) {
      const tag = tagOf(outcome.error)
      if (outcome.what === "read") expect(tag, outcome.what).toBe("OperationTimeout")
      else expect(["OperationTimeout", "CommitOutcomeUnknown"], outcome.what).toContain(tag)
      expect(outcome.ms, outcome.what).toBeGreaterThanOrEqual(timeout - 1)
      expect(outcome.ms, outcome.what).toBeLessThanOrEqual(timeout + late)
    }
    // Thawed, the stores go on.
    await appendOn(paths.lane, { after: true })
    await appendOn(paths.effect, { after: true })
    expect(await tokens.read((view) => view.get("k") !== undefined)).toBe(true)
    expect(verifyAuditChain(await chainOf(proxied, `${prefix}audit:`)).valid).toBe(true)
  })

  // Catches: a deadline queue left holding the process open once nothing stands (a
  // timer armed for the default 10 s deadline, or re-armed by a timed-out operation):
  // a script that used the stores, then quit its client, must exit at once.
  it("a script that used the stores (one operation timed out) exits promptly after quitting its client", async () => {
    const dist = (file: string) => pathToFileURL(fileURLToPath(new URL(`../dist/${file}`, import.meta.url))).href
    const haechi = dist("haechi.js")
    const index = dist("index.js")
    const script = `
      import { Redis } from "ioredis"
      import { createRedisAuditStore, createRedisTokenStore } from ${JSON.stringify(haechi)}
      import { Chain } from ${JSON.stringify(index)}
      const record = (token) => ({ ...${JSON.stringify(tokenRecord("x"))}, aad: { purpose: "token-vault", token, type: "email", context: {} } })
      const client = new Redis(${JSON.stringify(sharedRedis().url)})
      const prefix = ${JSON.stringify(uniquePrefix("dq-exit"))}
      const audit = createRedisAuditStore({ client, keyPrefix: prefix + "audit:", startupChecks: "off" })
      const tokens = createRedisTokenStore({ client, keyPrefix: prefix + "tv:", startupChecks: "off" })
      const short = createRedisTokenStore({ client, keyPrefix: prefix + "tv:", startupChecks: "off", timeout: 100 })
      for (let i = 0; i < 50; i++) {
        await audit.transaction(async ({ readLastIntegrity, persist }) => {
          await persist(Chain.buildNextRecord({ i }, await readLastIntegrity()))
        })
        await tokens.mutate((view) => void view.set("k" + i, record("k" + i)))
        await tokens.read((view) => view.get("k" + i))
      }
      const timedOut = await short.read(() => new Promise(() => {})).then(() => "resolved", (e) => e._tag)
      await client.quit()
      const quitAt = performance.now()
      process.on("exit", () => console.log(JSON.stringify({ timedOut, exitMs: performance.now() - quitAt })))
    `
    const cwd = fileURLToPath(new URL("..", import.meta.url))
    const started = performance.now()
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ["--input-type=module", "-e", script], { cwd, timeout: 20_000 }, (error, stdout) =>
        error ? reject(error) : resolve(stdout)
      )
    )
    const wall = performance.now() - started
    const result = JSON.parse(out) as { timedOut: string; exitMs: number }
    expect(result.timedOut).toBe("OperationTimeout")
    expect(result.exitMs).toBeLessThan(1000)
    // (Well under the stores' default 10 s deadline: no timer held the process for it.)
    expect(wall).toBeLessThan(8000)
  })
})
