/**
 * The facade's fiber-free `mutate` (internal/vault/promiseMutate): an uncontended
 * mutate on a runtime that traces nothing runs its first attempt with no fiber, and
 * goes on in the store's own `mutate` when that attempt loses. Against real Redis, these
 * show that the lane is taken, and that every outcome means what it means on the Effect
 * path: the same runs of `fn`, conflict, retry and resolution counts, errors and vault as
 * the same facade made to take the Effect path (a runtime with a tracer installed).
 */
import { describe, expect, it } from "@effect/vitest"
import { Runtime, Schedule } from "effect"
import * as fc from "fast-check"
import { FenceConflict } from "../src/Errors.js"
import { createRedisTokenStore, type MutableView, type TokenRecord } from "../src/haechi.js"
import { redisVaultBacking } from "../src/internal/vault/backing.js"
import { promiseMutateOf } from "../src/internal/vault/promiseMutate.js"
import { fromClient } from "../src/RedisClient.js"
import * as TokenStore from "../src/TokenStore.js"
import { toHaechiTokenStore } from "../src/haechi.js"
import { uniquePrefix } from "./support/keys.js"
import { PATHS, runtimeFor } from "./support/facadePaths.js"
import { laneLinks, latch, samePaths, vaultCounters, vaultOf } from "./support/laneLinks.js"
const { connect, proxied } = laneLinks()
const counters = vaultCounters

/** How a promise settled: its value, or the error's tag and the fields that say what it was. */
const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    const e = error as { _tag?: string; attempts?: number; cause?: { _tag?: string }; token?: string }
    return {
      error: e?._tag ?? String(error),
      ...(e?.attempts === undefined ? {} : { attempts: e.attempts }),
      ...(e?.cause?._tag === undefined ? {} : { cause: e.cause._tag })
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const rec = (n: number): TokenRecord => ({ type: "email", n, envelope: { ciphertext: `c${n}` } })

describe("the facade's fiber-free mutate", () => {
  it("an uncontended mutate never enters the store's Effect mutate; one latency sample each; a traced runtime does", async () => {
    const client = connect()
    for (const lock of ["never", "adaptive"] as const) {
      const prefix = uniquePrefix(`vault-lane-taken-${lock}`)
      const store = TokenStore.fromBacking(redisVaultBacking(fromClient(client), prefix))
      expect(promiseMutateOf(store, Runtime.defaultRuntime)).toBeDefined()
      const effectMutate = store.mutate
      let entered = 0
      ;(store as { mutate: typeof store.mutate }).mutate = (f) => {
        entered += 1
        return effectMutate(f)
      }
      const lane = toHaechiTokenStore(store)
      // The first mutate reads the vault in full (no commit proves an empty cache yet): the store's path.
      await lane.mutate((view) => view.set("t0", rec(0)))
      const entriesBefore = entered
      const counted = counters()
      for (let i = 1; i <= 20; i++) await lane.mutate((view) => view.set(`t${i}`, rec(i)))
      expect(entered - entriesBefore).toBe(0)
      expect(counted()).toMatchObject({ samples: 20, conflicts: 0, retries: 0 })
      expect(Object.keys(await vaultOf(client, prefix))).toHaveLength(21)
      // The same store on a traced runtime takes the Effect path.
      const traced = toHaechiTokenStore(store, { runtime: runtimeFor("effect") })
      await traced.mutate((view) => view.set("traced", rec(99)))
      expect(entered - entriesBefore).toBe(1)
    }
  })

  for (const lock of ["never", "adaptive"] as const) {
    for (const [losses, recurs] of [
      [1, 3],
      [3, 3],
      [4, 3]
    ] as const) {
      it(`lock "${lock}", recurs(${recurs}), ${losses} lost races: the lane and the Effect path agree on runs, counts, error and vault`, async () => {
        const direct = connect()
        await samePaths(async (path, runtime) => {
          const prefix = uniquePrefix(`vault-lane-races-${lock}-${losses}-${path}`)
          const retry = Schedule.recurs(recurs)
          const store = createRedisTokenStore({
            client: direct,
            keyPrefix: prefix,
            startupChecks: "off",
            runtime,
            lock,
            retry
          })
          const rival = createRedisTokenStore({
            client: direct,
            keyPrefix: prefix,
            startupChecks: "off",
            lock: "never"
          })
          await store.mutate((view) => view.set("counter", { n: 0 }))
          await store.mutate((view) => view.set("warm", rec(1)))
          const counted = counters()
          let runs = 0
          const outcome = await settled(
            store.mutate(async (view) => {
              runs += 1
              const n = (view.get("counter")?.n as number) + 1
              if (runs <= losses) await rival.mutate((v) => v.set(`rival${runs}`, rec(runs)))
              view.set("counter", { n })
              return n
            })
          )
          return { outcome, runs, counts: counted(), vault: await vaultOf(direct, prefix) }
        })
      })
    }
  }

  it("fn throwing, throwing a FenceConflict, staging a bad record, staging nothing, returning a plain value: the same outcomes as the Effect path, nothing half-written", async () => {
    const direct = connect()
    const conflict = new FenceConflict({ store: "vault", prefix: "elsewhere", expected: "1" })
    const cases: ReadonlyArray<readonly [string, (run: number) => (view: MutableView) => unknown]> = [
      [
        "throws",
        () => (view) => {
          view.set("kept-out", rec(1))
          throw new Error("fn failed")
        }
      ],
      [
        "rejects",
        () => async (view) => {
          view.set("kept-out", rec(1))
          await sleep(1)
          throw new Error("fn rejected")
        }
      ],
      [
        "throws a FenceConflict once",
        (run) => (view) => {
          view.set("after-conflict", rec(run))
          if (run === 1) throw conflict
          return run
        }
      ],
      ["stages a record JSON would not keep", () => (view) => view.set("bad", { when: undefined, ok: 1 })],
      ["stages nothing", () => (view) => view.get("warm")?.n],
      [
        "returns a plain value",
        () => (view) => {
          view.set("plain", rec(7))
          return "plain"
        }
      ]
    ]
    for (const [name, fnFor] of cases) {
      const lane = await samePaths(async (path, runtime) => {
        const prefix = uniquePrefix(`vault-lane-misuse-${path}`)
        const store = createRedisTokenStore({ client: direct, keyPrefix: prefix, startupChecks: "off", runtime })
        await store.mutate((view) => view.set("warm", rec(1)))
        const counted = counters()
        let runs = 0
        const outcome = await settled(store.mutate((view) => fnFor(++runs)(view)))
        return { name, outcome, runs, counts: counted(), vault: await vaultOf(direct, prefix) }
      })
      expect(lane.outcome).not.toBeUndefined()
    }
  })

  it("a fn that outlives the deadline: OperationTimeout at the deadline, its late set refused inside fn, nothing written, as on the Effect path", async () => {
    const direct = connect()
    const lane = await samePaths(async (path, runtime) => {
      const prefix = uniquePrefix(`vault-lane-late-${path}`)
      const store = createRedisTokenStore({
        client: direct,
        keyPrefix: prefix,
        startupChecks: "off",
        runtime,
        timeout: 150
      })
      await store.mutate((view) => view.set("warm", rec(1)))
      let lateSet: unknown
      let fnSettled!: () => void
      const fnDone = new Promise<void>((resolve) => (fnSettled = resolve))
      const started = performance.now()
      const outcome = await settled(
        store.mutate(async (view) => {
          await sleep(300)
          try {
            view.set("late", rec(2))
          } catch (error) {
            lateSet = (error as { _tag?: string })._tag
          }
          fnSettled()
        })
      )
      const took = performance.now() - started
      await fnDone
      expect(took).toBeGreaterThanOrEqual(145)
      expect(took).toBeLessThan(290)
      // The store goes on.
      await store.mutate((view) => view.set("next", rec(3)))
      return { outcome, lateSet, vault: Object.keys(await vaultOf(direct, prefix)) }
    })
    expect(lane).toEqual({
      outcome: { error: "OperationTimeout" },
      lateSet: "ViewChangedAfterMutate",
      vault: ["next", "warm"]
    })
  })

  for (const passRequest of [true, false]) {
    it(`a link frozen while the lane's apply is in flight (${passRequest ? "it ran" : "it is held"}): CommitOutcomeUnknown at the deadline, the diff lands once, as on the Effect path`, async () => {
      const direct = connect()
      const lane = await samePaths(async (path, runtime) => {
        const { proxy, client } = await proxied()
        const prefix = uniquePrefix(`vault-lane-frozen-${passRequest}-${path}`)
        const store = createRedisTokenStore({ client, keyPrefix: prefix, startupChecks: "off", runtime, timeout: 400 })
        await store.mutate((view) => view.set("warm", rec(1)))
        const counted = counters()
        const frozen = proxy.freezeWhen("evalsha", { passRequest })
        const outcome = await settled(store.mutate((view) => view.set("ours", rec(2))))
        await frozen
        proxy.thaw()
        await client.ping() // the held request (if any) has run by now: same connection, in order
        const counts = counted()
        await store.mutate((view) => view.set("next", rec(3)))
        return { outcome, counts, vault: Object.keys(await vaultOf(direct, prefix)) }
      })
      expect(lane.outcome).toEqual({ error: "CommitOutcomeUnknown", cause: "OperationTimeout" })
      expect(lane.counts).toMatchObject({ conflicts: 0, retries: 0, samples: 1 })
      expect(lane.vault).toEqual(["next", "ours", "warm"])
    })
  }

  it("a lost reply (the connection cut after the apply ran) is resolved by the log: committed once, as on the Effect path", async () => {
    const direct = connect()
    const lane = await samePaths(async (path, runtime) => {
      const { proxy, client } = await proxied({ maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false })
      const prefix = uniquePrefix(`vault-lane-lost-reply-${path}`)
      const store = createRedisTokenStore({ client, keyPrefix: prefix, startupChecks: "off", runtime })
      await store.mutate((view) => view.set("warm", rec(1)))
      const counted = counters()
      let runs = 0
      const outcome = await settled(
        store.mutate((view) => {
          runs += 1
          proxy.cutAfterNextRequest()
          view.set("ours", rec(2))
          return "done"
        })
      )
      await store.mutate((view) => view.set("next", rec(3)))
      return { outcome, runs, counts: counted(), vault: Object.keys(await vaultOf(direct, prefix)) }
    })
    expect(lane).toMatchObject({ outcome: { value: "done" }, runs: 1, counts: { resolved: 1, conflicts: 0 } })
    expect(lane.vault).toEqual(["next", "ours", "warm"])
  })

  it("the vault flushed under a replica's cache: the lane's apply finds the rewind, counted once, the same outcome and vault as on the Effect path", async () => {
    const direct = connect()
    const lane = await samePaths(async (path, runtime) => {
      const prefix = uniquePrefix(`vault-lane-rewound-${path}`)
      const store = createRedisTokenStore({ client: direct, keyPrefix: prefix, startupChecks: "off", runtime })
      await store.mutate((view) => view.set("warm", rec(1)))
      await store.mutate((view) => view.set("second", rec(2)))
      const keys = await direct.keys(`${prefix}*`)
      await direct.del(...keys)
      const counted = counters(prefix)
      let runs = 0
      const outcome = await settled(
        store.mutate((view) => {
          runs += 1
          view.set("after", rec(runs))
          return Object.keys(Object.fromEntries(view.entries())).sort()
        })
      )
      return { outcome, runs, counts: counted(), vault: Object.keys(await vaultOf(direct, prefix)) }
    })
    expect(lane.counts).toMatchObject({ rewinds: 1, exhausted: 0 })
    expect(lane.vault).toEqual(["after"])
  })

  it('lock "adaptive": the lane\'s apply yields (LockHeld) to an "always" writer, then commits after it, as on the Effect path', async () => {
    const direct = connect()
    // (How often it yields before it waits for the lock depends on timing: compared per path.)
    for (const path of PATHS) {
      const runtime = runtimeFor(path)
      const prefix = uniquePrefix(`vault-lane-lock-held-${path}`)
      const common = { client: direct, keyPrefix: prefix, startupChecks: "off" } as const
      const store = createRedisTokenStore({ ...common, runtime, lock: "adaptive" })
      const holder = createRedisTokenStore({ ...common, lock: "always" })
      await store.mutate((view) => view.set("warm", rec(1)))
      const { reached: gate, open: open } = latch()
      const { reached: held, open: holding } = latch()
      const holderDone = holder.mutate(async (view) => {
        holding()
        await gate
        view.set("holder", rec(2))
      })
      await held
      const counted = counters()
      let runs = 0
      const ours = store.mutate((view) => {
        runs += 1
        view.set("ours", rec(3))
      })
      await sleep(50)
      const whileHeld = { runs, vault: Object.keys(await vaultOf(direct, prefix)) }
      open()
      await holderDone
      const outcome = await settled(ours)
      const counts = counted()
      expect(whileHeld.vault).toEqual(["warm"])
      expect(outcome).toEqual({ value: undefined })
      expect(Object.keys(await vaultOf(direct, prefix))).toEqual(["holder", "ours", "warm"])
      // Every run but the last was one yield, counted once as a conflict; the last committed
      // (two latency samples: ours and the holder's).
      expect(runs).toBeGreaterThanOrEqual(2)
      expect(counts).toMatchObject({ conflicts: runs - 1, samples: 2, exhausted: 0 })
    }
  })

  it("many mutates at once from lane and Effect-path replicas: no increment lost or doubled (property)", async () => {
    const direct = connect()
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ replica: fc.integer({ min: 0, max: 2 }), slow: fc.boolean() }), {
          minLength: 4,
          maxLength: 14
        }),
        async (ops) => {
          const prefix = uniquePrefix("vault-lane-property")
          const common = {
            client: direct,
            keyPrefix: prefix,
            startupChecks: "off",
            retry: Schedule.recurs(50)
          } as const
          const replicas = [
            createRedisTokenStore({ ...common, lock: "adaptive" }),
            createRedisTokenStore({ ...common, lock: "never" }),
            createRedisTokenStore({ ...common, lock: "adaptive", runtime: runtimeFor("effect") })
          ]
          await replicas[0]!.mutate((view) => view.set("counter", { n: 0 }))
          const outcomes = await Promise.allSettled(
            ops.map(({ replica, slow }, i) =>
              replicas[replica]!.mutate(async (view) => {
                const n = view.get("counter")!.n as number
                if (slow) await sleep(2)
                view.set("counter", { n: n + 1 })
                view.set(`op${i}`, { by: replica })
              })
            )
          )
          const vault = await vaultOf(direct, prefix)
          const committed = outcomes.filter((o) => o.status === "fulfilled").length
          expect(committed).toBe(ops.length)
          expect(vault.counter).toEqual({ n: committed })
          expect(Object.keys(vault).filter((k) => k.startsWith("op"))).toHaveLength(committed)
        }
      ),
      { numRuns: 15 }
    )
  })
})
