/**
 * The facade's fast lane under faults, against real Redis: deadlines that pass at every
 * step of a lane attempt and of its continuation, lost replies, frozen links, callers
 * that misuse `persist`, rival replicas, a held lock, a rewound chain. Each scenario is
 * run on the lane and on the Effect path (the same facade on a runtime with a tracer
 * installed) and the two must agree: the same outcome, error, builds, counts and chain.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, Runtime, Schedule } from "effect"
import * as fc from "fast-check"
import { Cluster, type Redis } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import { FenceConflict } from "../src/Errors.js"
import { createRedisAuditStore, type HaechiAuditStore, type Integrity } from "../src/haechi.js"
import { withTags } from "../src/internal/metricTags.js"
import * as Metrics from "../src/Metrics.js"
import { verifyAuditChain } from "./support/haechiCore.js"
import { uniqueClusterPrefix, uniquePrefix } from "./support/keys.js"
import { append, chainOf, losingRaces, type Path, runtimeFor } from "./support/facadePaths.js"
import { sharedCluster } from "./support/shared.js"
import { count, countersOf, laneLinks, samePaths } from "./support/laneLinks.js"

const { connect, proxied } = laneLinks()

/** The audit transaction's counters' and latency samples' growth since `counters()` was called. */
const counters = () => countersOf("audit", "transaction")

/** The chain's events (the records' own fields, without their integrity). */
const eventsOf = async (client: Redis, prefix: string) => {
  const chain = await chainOf(client, prefix)
  expect(verifyAuditChain(chain).valid).toBe(true)
  return chain.map(({ auditIntegrity: _, ...event }) => event)
}

/** How a promise settled: its value, or the error's tag and the fields that say what it was. */
const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    const e = error as { _tag?: string; operation?: string; attempts?: number; cause?: { _tag?: string } }
    return {
      error: e?._tag ?? String(error),
      ...(e?.operation === undefined ? {} : { operation: e.operation }),
      ...(e?.attempts === undefined ? {} : { attempts: e.attempts }),
      ...(e?.cause?._tag === undefined ? {} : { cause: e.cause._tag })
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * An "always" replica's transaction that holds the store's lock until `open()` is
 * called, then commits its record; resolves once it holds the lock.
 */
const holdingTheLock = async (holder: HaechiAuditStore) => {
  let open!: () => void
  const gate = new Promise<void>((resolve) => (open = resolve))
  let holding!: () => void
  const held = new Promise<void>((resolve) => (holding = resolve))
  const holderDone = holder.transaction(async ({ readLastIntegrity, persist }) => {
    const head = (await readLastIntegrity()) as Integrity | null
    holding()
    await gate
    await persist(buildNextRecord({ holder: true }, head))
  })
  await held
  return { open, holderDone }
}

/**
 * A store and a rival replica on one chain, on `path`: the rival commits inside the
 * store's first build, so that build's persist loses its race. `lateBuild` runs in a
 * build before its persist, `lateConflict` after a persist failed (before it is
 * rethrown); `settle` waits for what the caller's fn still does after the call settled.
 */
const lostRace = async (
  path: Path,
  runtime: Runtime.Runtime<never>,
  options: {
    readonly name: string
    readonly lock: "never" | "adaptive"
    readonly timeout: number
    readonly lateBuild?: (build: number) => Promise<unknown>
    readonly lateConflict?: (build: number) => Promise<unknown>
    readonly settle: number
  }
) => {
  const client = connect()
  const prefix = uniquePrefix(`${options.name}-${options.lock}-${path}`)
  const common = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
  const store = createRedisAuditStore({ ...common, lock: options.lock, timeout: options.timeout })
  const rival = createRedisAuditStore({ ...common, lock: "never" })
  await append(store, { warm: true })
  const counted = counters()
  let builds = 0
  const persisted: Array<string> = []
  const outcome = await settled(
    store.transaction(async ({ readLastIntegrity, persist }) => {
      const build = ++builds
      const head = (await readLastIntegrity()) as Integrity | null
      if (build === 1) await append(rival, { rival: true })
      else await options.lateBuild?.(build)
      try {
        await persist(buildNextRecord({ ours: build }, head))
        persisted.push("committed")
      } catch (error) {
        persisted.push((error as { _tag?: string })._tag ?? "error")
        await options.lateConflict?.(build)
        throw error
      }
    })
  )
  await sleep(options.settle)
  await append(store, { next: true })
  return { outcome, builds, persisted, counts: counted(), events: await eventsOf(client, prefix) }
}

describe("the lane's deadline", () => {
  for (const lock of ["never", "adaptive"] as const) {
    it(`lock "${lock}": a FenceConflict the lane's attempt meets, rethrown after the deadline, comes after the operation ended: not counted, not retried, as on the Effect path`, async () => {
      // The caller's fn rethrows its conflict 300 ms past the deadline; the test waits for that.
      const lane = await samePaths((path, runtime) =>
        lostRace(path, runtime, {
          name: "lane-late-conflict",
          lock,
          timeout: 1000,
          lateConflict: (build) => (build === 1 ? sleep(1300) : Promise.resolve()),
          settle: 600
        })
      )
      expect(lane.persisted[0]).toBe("FenceConflict")
      expect(lane.outcome).toEqual({ error: "OperationTimeout", operation: "audit transaction" })
      // The operation ended at its deadline, not when fn rethrew; what fn did after counts for nothing and is not run again.
      expect(lane.builds).toBe(1)
      expect(lane.persisted).toEqual(["FenceConflict"])
      expect(lane.counts).toMatchObject({ conflicts: 0, retries: 0, samples: 3 }) // (the third: the append after it)
      expect(lane.events).toEqual([{ warm: true }, { rival: true }, { next: true }])
    })
  }
})

describe("the lane's persist on a faulty link", () => {
  // "failFast": the unanswered append fails when the connection drops (the store looks it
  // up by commit id); "resend": ioredis re-sends it and the script answers "already committed".
  for (const kind of ["failFast", "resend"] as const) {
    it(`${kind}: a lost reply (the connection cut after the append ran) is resolved: committed once, as on the Effect path`, async () => {
      const direct = connect()
      const lane = await samePaths(async (path, runtime) => {
        const { proxy, client } = await proxied(
          kind === "failFast" ? { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false } : {}
        )
        const prefix = uniquePrefix(`lane-lost-reply-${kind}-${path}`)
        const store = createRedisAuditStore({ client, keyPrefix: prefix, startupChecks: "off", runtime, lock: "never" })
        await append(store, { warm: true })
        const counted = counters()
        let builds = 0
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            builds += 1
            const head = (await readLastIntegrity()) as Integrity | null
            proxy.cutAfterNextRequest()
            await persist(buildNextRecord({ ours: builds }, head))
            return "done"
          })
        )
        // The store goes on: its next record builds on the one whose reply was lost.
        await append(store, { next: true })
        return { outcome, builds, counts: counted(), events: await eventsOf(direct, prefix) }
      })
      expect(lane.outcome).toEqual({ value: "done" })
      expect(lane.counts).toMatchObject({ resolved: kind === "failFast" ? 1 : 0, conflicts: 0, retries: 0, samples: 2 })
      expect(lane.events).toEqual([{ warm: true }, { ours: 1 }, { next: true }])
    })
  }

  for (const passRequest of [true, false]) {
    it(`a link frozen while the lane's append is in flight (${passRequest ? "it ran" : "it is held"}): CommitOutcomeUnknown at the deadline, the record lands once, as on the Effect path`, async () => {
      const direct = connect()
      const lane = await samePaths(async (path, runtime) => {
        const { proxy, client } = await proxied()
        const prefix = uniquePrefix(`lane-frozen-persist-${passRequest}-${path}`)
        const options = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
        const store = createRedisAuditStore({ ...options, timeout: 400 })
        await append(store, { warm: true })
        const counted = counters()
        const frozen = proxy.freezeWhen("evalsha", { passRequest })
        let persistFailed: unknown
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            const head = (await readLastIntegrity()) as Integrity | null
            try {
              await persist(buildNextRecord({ ours: true }, head))
            } catch (error) {
              persistFailed = (error as { _tag?: string })._tag
              throw error
            }
          })
        )
        await frozen
        proxy.thaw()
        await client.ping() // the held request (if any) has run by now: same connection, in order
        const counts = counted()
        await append(store, { next: true })
        return { outcome, persistFailed, counts, events: await eventsOf(direct, prefix) }
      })
      expect(lane.outcome).toEqual({ error: "CommitOutcomeUnknown", cause: "OperationTimeout" })
      expect(lane.counts).toMatchObject({ conflicts: 0, retries: 0, samples: 1 })
      expect(lane.events).toEqual([{ warm: true }, { ours: true }, { next: true }])
    })
  }

  it("a link frozen while a cold head is read: OperationTimeout, nothing written, as on the Effect path", async () => {
    const direct = connect()
    const lane = await samePaths(async (path, runtime) => {
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`lane-frozen-read-${path}`)
      const options = { client, keyPrefix: prefix, startupChecks: "off", runtime, timeout: 400 } as const
      await append(createRedisAuditStore(options), { warm: true })
      const cold = createRedisAuditStore(options) // another replica: no head cached
      const counted = counters()
      proxy.freeze()
      let persisted = false
      const outcome = await settled(
        cold.transaction(async ({ readLastIntegrity, persist }) => {
          const head = (await readLastIntegrity()) as Integrity | null
          persisted = true
          await persist(buildNextRecord({ ours: true }, head))
        })
      )
      const counts = counted()
      proxy.thaw()
      await append(cold, { next: true })
      return { outcome, persisted, counts, events: await eventsOf(direct, prefix) }
    })
    expect(lane.outcome).toEqual({ error: "OperationTimeout", operation: "audit transaction" })
    expect(lane.persisted).toBe(false)
    expect(lane.counts).toMatchObject({ conflicts: 0, samples: 1 })
    expect(lane.events).toEqual([{ warm: true }, { next: true }])
  })

  for (const lock of ["never", "adaptive"] as const) {
    it(`lock "${lock}": the deadline passes in the continuation (the lane's attempt lost, the retry's append frozen): CommitOutcomeUnknown, as on the Effect path`, async () => {
      const direct = connect()
      const lane = await samePaths(async (path, runtime) => {
        const { proxy, client } = await proxied()
        const prefix = uniquePrefix(`lane-frozen-retry-${lock}-${path}`)
        const store = createRedisAuditStore({
          client,
          keyPrefix: prefix,
          startupChecks: "off",
          runtime,
          lock,
          timeout: 600
        })
        const rival = createRedisAuditStore({ client: direct, keyPrefix: prefix, startupChecks: "off", lock: "never" })
        await append(store, { warm: true })
        const counted = counters()
        let builds = 0
        let frozen: Promise<void> | undefined
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            builds += 1
            const head = (await readLastIntegrity()) as Integrity | null
            if (builds === 1) await append(rival, { rival: true })
            else frozen ??= proxy.freezeWhen("evalsha", { passRequest: true })
            await persist(buildNextRecord({ ours: builds }, head))
          })
        )
        await frozen
        proxy.thaw()
        await client.ping()
        const counts = counted()
        return { outcome, builds, counts, events: await eventsOf(direct, prefix) }
      })
      expect(lane.builds).toBe(2)
      expect(lane.outcome).toEqual({ error: "CommitOutcomeUnknown", cause: "OperationTimeout" })
      expect(lane.counts).toMatchObject({ conflicts: 1, retries: 1, samples: 2 })
      expect(lane.events).toEqual([{ warm: true }, { rival: true }, { ours: 2 }])
    })
  }
})
type Ctx = Parameters<Parameters<HaechiAuditStore["transaction"]>[0]>[0]

/**
 * Callers that misuse the transaction: each `fn` gets the store, a rival replica on the
 * same chain and its build number, and may return what it likes.
 */
const misuses: ReadonlyArray<{
  readonly name: string
  /** What the lane's run shows (the Effect path's must be the same). */
  readonly expected: object
  /** `late`: calls the test makes once the transaction settled (a persist not awaited is awaited there). */
  readonly fn: (ctx: Ctx, rival: HaechiAuditStore, build: number, late: Array<() => Promise<unknown>>) => unknown
}> = [
  {
    name: "does not await its persist",
    expected: { outcome: { value: "returned first" }, builds: 1, events: [{ warm: true }, { ours: 1 }] },
    fn: async ({ readLastIntegrity, persist }, _rival, build, late) => {
      const sent = persist(buildNextRecord({ ours: build }, (await readLastIntegrity()) as Integrity | null))
      late.push(() => sent)
      return "returned first"
    }
  },
  {
    name: "persists after the transaction settled",
    // Refused: the record would belong to no operation (no deadline, no retry).
    expected: {
      outcome: { value: "nothing yet" },
      lateOutcomes: [{ error: "PersistAfterTransaction" }],
      events: [{ warm: true }]
    },
    fn: async ({ readLastIntegrity, persist }, _rival, build, late) => {
      const head = (await readLastIntegrity()) as Integrity | null
      late.push(() => persist(buildNextRecord({ late: build }, head)))
      return "nothing yet"
    }
  },
  {
    name: "throws a FenceConflict of its own, then persists on the retry",
    expected: { builds: 2, counts: { conflicts: 1, retries: 1 }, events: [{ warm: true }, { ours: 2 }] },
    fn: async ({ readLastIntegrity, persist }, _rival, build) => {
      const head = (await readLastIntegrity()) as Integrity | null
      if (build === 1) throw new FenceConflict({ store: "audit", prefix: "its own", expected: "" })
      await persist(buildNextRecord({ ours: build }, head))
    }
  },
  {
    name: "swallows its persist's FenceConflict and returns",
    expected: {
      outcome: { value: "swallowed FenceConflict" },
      counts: { conflicts: 0 },
      events: [{ warm: true }, { rival: 1 }]
    },
    fn: async ({ readLastIntegrity, persist }, rival, build) => {
      const head = (await readLastIntegrity()) as Integrity | null
      await append(rival, { rival: build })
      try {
        await persist(buildNextRecord({ ours: build }, head))
      } catch (error) {
        return `swallowed ${(error as { _tag?: string })._tag}`
      }
    }
  },
  {
    name: "commits, then throws a FenceConflict of its own (its record is there: not retried, the error as thrown)",
    expected: { outcome: { error: "FenceConflict" }, builds: 1, events: [{ warm: true }, { ours: 1 }] },
    fn: async ({ readLastIntegrity, persist }, _rival, build) => {
      await persist(buildNextRecord({ ours: build }, (await readLastIntegrity()) as Integrity | null))
      if (build === 1) throw new FenceConflict({ store: "audit", prefix: "its own", expected: "" })
      return build
    }
  },
  {
    name: "returns a plain value, persisting nothing",
    expected: { outcome: { value: 42 }, events: [{ warm: true }] },
    fn: () => 42
  },
  {
    name: "returns a thenable that persists",
    expected: { outcome: { value: "thenable" }, events: [{ warm: true }, { ours: 1 }] },
    fn: ({ readLastIntegrity, persist }, _rival, build) => ({
      then: (resolve: (value: unknown) => void, reject: (error: unknown) => void) =>
        readLastIntegrity()
          .then((head) => persist(buildNextRecord({ ours: build }, head as Integrity | null)))
          .then(() => resolve("thenable"), reject)
    })
  },
  {
    name: "throws synchronously",
    expected: { outcome: { error: "TypeError: not a function of the store's" }, builds: 1 },
    fn: () => {
      throw new TypeError("not a function of the store's")
    }
  },
  {
    name: "rejects with undefined",
    expected: { outcome: { error: "undefined" }, builds: 1 },
    fn: () => Promise.reject(undefined)
  },
  {
    name: "persists a record built on no head (the chain has one)",
    expected: { outcome: { error: "RetriesExhausted" }, counts: { exhausted: 1 }, events: [{ warm: true }] },
    fn: ({ persist }, _rival, build) => persist(buildNextRecord({ ours: build }, null))
  },
  {
    name: "calls persist twice at once",
    expected: {
      outcome: { value: ["ok", { tag: "PersistCalledTwice", first: "pending" }] },
      events: [{ warm: true }, { ours: 1 }]
    },
    fn: async ({ readLastIntegrity, persist }, _rival, build) => {
      const record = buildNextRecord({ ours: build }, (await readLastIntegrity()) as Integrity | null)
      const both = await Promise.allSettled([persist(record), persist(record)])
      return both.map((s) =>
        s.status === "fulfilled"
          ? "ok"
          : {
              tag: (s.reason as { _tag?: string })._tag,
              first: (s.reason as { first?: string }).first
            }
      )
    }
  },
  {
    name: "persists a record that is not one",
    expected: { outcome: { error: "InvalidRecord" }, events: [{ warm: true }] },
    fn: ({ persist }) => persist({ event: "no integrity" })
  }
]

describe("callers that misuse the transaction", () => {
  for (const { name, fn, expected } of misuses) {
    for (const lock of ["never", "adaptive"] as const) {
      it(`lock "${lock}", fn ${name}: the same outcome, builds, counts and chain as on the Effect path`, async () => {
        const lane = await samePaths(async (path, runtime) => {
          const client = connect()
          const prefix = uniquePrefix(`lane-misuse-${path}`)
          const options = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
          const store = createRedisAuditStore({ ...options, lock })
          const rival = createRedisAuditStore({ ...options, lock: "never" })
          await append(store, { warm: true })
          const counted = counters()
          let builds = 0
          const late: Array<() => Promise<unknown>> = []
          const unhandled: Array<unknown> = []
          const onUnhandled = (reason: unknown) => unhandled.push((reason as { _tag?: string })?._tag)
          process.on("unhandledRejection", onUnhandled)
          try {
            const outcome = await settled(store.transaction((ctx) => fn(ctx, rival, ++builds, late) as never))
            const lateOutcomes = []
            for (const call of late) lateOutcomes.push(await settled(call()))
            const counts = counted()
            return { outcome, lateOutcomes, builds, counts, unhandled, events: await eventsOf(client, prefix) }
          } finally {
            process.off("unhandledRejection", onUnhandled)
          }
        })
        expect(lane).toMatchObject(expected)
      })
    }
  }
})

/** The keys under `prefix`, dumped: restoring them rewinds the store to this point (a restored snapshot). */
const snapshot = async (client: Redis, prefix: string) => {
  const keys = await client.keys(`${prefix}*`)
  const dumps = await Promise.all(keys.map((key) => client.dumpBuffer(key)))
  return async () => {
    const now = await client.keys(`${prefix}*`)
    if (now.length > 0) await client.del(...now)
    for (let i = 0; i < keys.length; i++) if (dumps[i] !== null) await client.restore(keys[i]!, 0, dumps[i]!)
  }
}

describe("a chain rewound under the lane", () => {
  for (const onRewind of ["record", "fail"] as const) {
    for (const rewind of ["flushed", "restored"] as const) {
      for (const lock of ["never", "adaptive"] as const) {
        it(`lock "${lock}", onRewind "${onRewind}", the chain ${rewind} under a replica's head: the same outcome, gap record and counts as on the Effect path`, async () => {
          const lane = await samePaths(async (path, runtime) => {
            const client = connect()
            const prefix = uniquePrefix(`lane-rewind-${path}`)
            const options = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
            const store = createRedisAuditStore({ ...options, lock, onRewind })
            const other = createRedisAuditStore({ ...options, lock: "never" })
            await append(other, { first: true })
            const restore = rewind === "restored" ? await snapshot(client, prefix) : undefined
            await append(store, { second: true })
            await append(store, { third: true })
            if (restore !== undefined) await restore()
            else await client.del(...(await client.keys(`${prefix}*`)))
            const rewinds = Metrics.chainRewinds.pipe(Metric.tagged("prefix", prefix))
            const rewindsBefore = count(rewinds)
            const counted = counters()
            let builds = 0
            const outcome = await settled(
              store.transaction(async ({ readLastIntegrity, persist }) => {
                builds += 1
                await persist(buildNextRecord({ ours: builds }, (await readLastIntegrity()) as Integrity | null))
                return "ok"
              })
            )
            const counts = { ...counted(), rewinds: count(rewinds) - rewindsBefore }
            const events = (await eventsOf(client, prefix)).map((e) =>
              "ours" in e || "first" in e ? e : Object.keys(e)
            )
            // The store goes on from the chain as it is now ("fail": it refuses again, loudly).
            const after = await settled(append(store, { after: true }))
            await eventsOf(client, prefix)
            return { outcome, builds, counts, events, after: "error" in after ? after.error : "ok" }
          })
          expect(lane.counts).toMatchObject({ rewinds: 1 })
          if (onRewind === "fail") expect(lane.outcome).toEqual({ error: "ChainRewound" })
          else expect(lane.outcome).toEqual({ value: "ok" })
        })
      }
    }
  }
})

describe("the lane next to a writer that holds the lock", () => {
  it('lock "adaptive": the lane\'s attempt yields (LockHeld) to an "always" writer, queues, and commits after it, as on the Effect path', async () => {
    const lane = await samePaths(async (path, runtime) => {
      const client = connect()
      const prefix = uniquePrefix(`lane-held-${path}`)
      const options = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
      const store = createRedisAuditStore({ ...options, lock: "adaptive" })
      const holder = createRedisAuditStore({ ...options, lock: "always" })
      await append(store, { warm: true })
      const { open, holderDone } = await holdingTheLock(holder)
      const counted = counters()
      let builds = 0
      const persisted: Array<string> = []
      const ours = store.transaction(async ({ readLastIntegrity, persist }) => {
        builds += 1
        const head = (await readLastIntegrity()) as Integrity | null
        try {
          await persist(buildNextRecord({ ours: builds }, head))
          persisted.push("committed")
        } catch (error) {
          persisted.push((error as { _tag?: string; lockHeld?: boolean }).lockHeld === true ? "yielded" : "lost")
          throw error
        }
      })
      // Ours has yielded by the time it waits for its turn; then the holder commits.
      for (let i = 0; i < 200 && persisted.length === 0; i++) await sleep(5)
      open()
      const outcomes = [await settled(holderDone), await settled(ours)]
      const counts = counted()
      const events = await eventsOf(client, prefix)
      expect(events).toEqual([{ warm: true }, { holder: true }, { ours: builds }])
      expect(persisted).toHaveLength(builds)
      // How often it yields or loses before its turn comes depends on timing: not compared.
      return {
        outcomes,
        first: persisted[0],
        last: persisted.at(-1),
        conflicts: counts.conflicts === builds - 1,
        retries: counts.retries === builds - 1,
        samples: counts.samples
      }
    })
    expect(lane).toMatchObject({ first: "yielded", last: "committed", conflicts: true, retries: true, samples: 2 })
  })
})

type Kind = "plain" | "ownConflict" | "noPersist" | "failAfterCommit"

describe("many transactions at once, on the lane and the Effect path, with rival replicas", () => {
  it("no fork, no lost or duplicate record, each outcome says what is in the chain, and it verifies (property)", async () => {
    const client = connect()
    const op = fc.record({
      replica: fc.nat({ max: 7 }),
      kind: fc.constantFrom<Kind>("plain", "plain", "plain", "ownConflict", "noPersist", "failAfterCommit")
    })
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 4, maxLength: 24 }), async (ops) => {
        const prefix = uniquePrefix("lane-property")
        const options = { client, keyPrefix: prefix, startupChecks: "off" } as const
        // Replicas: lane ("never", "adaptive"), the Effect path (traced), and "always".
        const replicas = [
          createRedisAuditStore({ ...options, lock: "never" }),
          createRedisAuditStore({ ...options, lock: "adaptive" }),
          createRedisAuditStore({ ...options, lock: "adaptive" }),
          createRedisAuditStore({ ...options, lock: "adaptive", runtime: runtimeFor("effect") }),
          createRedisAuditStore({ ...options, lock: "never", runtime: runtimeFor("effect") }),
          createRedisAuditStore({ ...options, lock: "always" }),
          // Short budgets: some run out (RetriesExhausted, nothing written).
          createRedisAuditStore({ ...options, lock: "never", retry: Schedule.recurs(1) }),
          createRedisAuditStore({ ...options, lock: "never", retry: Schedule.recurs(1), runtime: runtimeFor("effect") })
        ]
        const counted = counters()
        const outcomes = await Promise.all(
          ops.map(({ replica, kind }, id) => {
            let builds = 0
            return settled(
              replicas[replica]!.transaction(async ({ readLastIntegrity, persist }) => {
                builds += 1
                const head = (await readLastIntegrity()) as Integrity | null
                if (kind === "ownConflict" && builds === 1)
                  throw new FenceConflict({ store: "audit", prefix, expected: "" })
                if (kind === "noPersist") return id
                await persist(buildNextRecord({ id }, head))
                if (kind === "failAfterCommit") throw new Error(`failed after ${id}`)
                return id
              })
            )
          })
        )
        const events = await eventsOf(client, prefix)
        const ids = events.map((e) => e.id as number)
        let exhausted = 0
        expect(new Set(ids).size).toBe(ids.length)
        ops.forEach(({ kind }, id) => {
          const outcome = outcomes[id]!
          if ("error" in outcome && outcome.error === "RetriesExhausted") {
            exhausted += 1
            expect(ids.includes(id)).toBe(false)
            return
          }
          if (kind === "noPersist") expect(outcome).toEqual({ value: id })
          else if (kind === "failAfterCommit") expect(outcome).toEqual({ error: `Error: failed after ${id}` })
          else expect(outcome).toEqual({ value: id })
          expect(ids.includes(id)).toBe(kind !== "noPersist")
        })
        const counts = counted()
        expect(counts.samples).toBe(ops.length)
        expect(counts.exhausted).toBe(exhausted)
      }),
      { numRuns: 12 }
    )
  }, 120_000)
})

describe("the lane's continuation meets the deadline where it waits", () => {
  it("in the retry schedule's sleep: OperationTimeout (the lost attempt committed nothing), one build, as on the Effect path", async () => {
    const lane = await samePaths(async (path, runtime) => {
      const client = connect()
      const prefix = uniquePrefix(`lane-retry-sleep-${path}`)
      const options = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
      const store = createRedisAuditStore({
        ...options,
        lock: "never",
        timeout: 400,
        retry: Schedule.spaced("5 seconds")
      })
      const rival = createRedisAuditStore({ ...options, lock: "never" })
      await append(store, { warm: true })
      const counted = counters()
      const race = losingRaces(store, rival, 1)
      const outcome = await settled(race.done)
      return { outcome, builds: race.builds(), counts: counted(), events: await eventsOf(client, prefix) }
    })
    expect(lane).toMatchObject({
      outcome: { error: "OperationTimeout", operation: "audit transaction" },
      builds: 1,
      counts: { conflicts: 1, retries: 0, samples: 2 },
      events: [{ warm: true }, { rival: 1 }]
    })
  })

  it('waiting for its turn behind an "always" writer that never lets go: OperationTimeout, its queue entry given back, the store goes on, as on the Effect path', async () => {
    const lane = await samePaths(async (path, runtime) => {
      const client = connect()
      const prefix = uniquePrefix(`lane-turn-timeout-${path}`)
      const options = { client, keyPrefix: prefix, startupChecks: "off", runtime } as const
      const store = createRedisAuditStore({ ...options, lock: "adaptive", timeout: 500 })
      const holder = createRedisAuditStore({ ...options, lock: "always" })
      await append(store, { warm: true })
      const { open, holderDone } = await holdingTheLock(holder)
      const counted = counters()
      const outcome = await settled(append(store, { ours: true }))
      const counts = counted()
      const waiters = await client.zcard(`${prefix}lock:waiters`)
      open()
      const holderOutcome = await settled(holderDone)
      await append(store, { after: true })
      return {
        // At the deadline it waits for its turn, or its attempt is in flight (then
        // CommitOutcomeUnknown): which one depends on timing, on either path.
        outcome:
          "error" in outcome && outcome.error === "CommitOutcomeUnknown" && outcome.cause === "OperationTimeout"
            ? { error: "OperationTimeout", operation: "audit transaction" }
            : outcome,
        holderOutcome,
        waiters,
        conflicts: counts.conflicts >= 1,
        samples: counts.samples,
        events: await eventsOf(client, prefix)
      }
    })
    expect(lane).toMatchObject({
      outcome: { error: "OperationTimeout", operation: "audit transaction" },
      holderOutcome: { value: undefined },
      waiters: 0,
      conflicts: true,
      samples: 1,
      events: [{ warm: true }, { holder: true }, { after: true }]
    })
  })
})

describe("the lane's counts", () => {
  it("a runtime's metric labels tag the lane's latency sample and conflict counts as they tag the Effect path's", async () => {
    await samePaths(async (path) => {
      const base = runtimeFor(path)
      const runtime = Runtime.make({
        ...base,
        fiberRefs: Effect.runSync(
          Effect.getFiberRefs.pipe(Effect.provide(base.context), Effect.tagMetrics("replica", `labelled-${path}`))
        )
      } as Runtime.Runtime<never>)
      const client = connect()
      const prefix = uniquePrefix(`lane-labels-${path}`)
      const options = { client, keyPrefix: prefix, startupChecks: "off" } as const
      const store = createRedisAuditStore({ ...options, runtime: base })
      const labelled = createRedisAuditStore({ ...options, runtime })
      const rival = createRedisAuditStore({ ...options, lock: "never" })
      await append(labelled, { warm: true })
      let builds = 0
      await labelled.transaction(async ({ readLastIntegrity, persist }) => {
        builds += 1
        const head = (await readLastIntegrity()) as Integrity | null
        if (builds === 1) await append(rival, { rival: true })
        await persist(buildNextRecord({ ours: builds }, head))
      })
      await append(store, { unlabelled: true })
      const labels = { store: "audit", operation: "transaction", replica: `labelled-${path}` }
      return {
        samples: Effect.runSync(Metric.value(withTags(Metrics.keys.operationLatency, labels))).count,
        conflicts: count(withTags(Metrics.keys.fenceConflicts, labels)),
        retries: count(withTags(Metrics.keys.retries, labels)),
        builds
      }
    }).then((lane) => expect(lane).toEqual({ samples: 2, conflicts: 1, retries: 1, builds: 2 }))
  })
})

describe("turns kept and handed on around the lane", () => {
  it('lock "adaptive", two replicas racing in bursts: every append commits once, and no lock or queue entry is left behind, as on the Effect path', async () => {
    const lane = await samePaths(async (path, runtime) => {
      const client = connect()
      const prefix = uniquePrefix(`lane-bursts-${path}`)
      const options = { client, keyPrefix: prefix, startupChecks: "off", runtime, lock: "adaptive" } as const
      const replicas = [createRedisAuditStore(options), createRedisAuditStore(options)]
      await append(replicas[0]!, { warm: true })
      const counted = counters()
      const outcomes = []
      for (let round = 0; round < 4; round++) {
        outcomes.push(
          ...(await Promise.all(Array.from({ length: 12 }, (_, i) => settled(append(replicas[i % 2]!, { round, i })))))
        )
      }
      const counts = counted()
      // A kept turn's lease is 10 ms and a claim's 1 s: a lock given back is gone well before 300 ms.
      await sleep(300)
      const events = await eventsOf(client, prefix)
      return {
        failed: outcomes.filter((o) => "error" in o),
        records: events.length,
        distinct: new Set(events.map((e) => JSON.stringify(e))).size,
        lock: await client.exists(`${prefix}lock`),
        waiters: await client.zcard(`${prefix}lock:waiters`),
        samples: counts.samples
      }
    })
    expect(lane).toEqual({ failed: [], records: 49, distinct: 49, lock: 0, waiters: 0, samples: 48 })
  })
})

describe("many transactions at once while the link freezes and the deadlines pass", () => {
  it("each outcome says what is in the chain: committed once, OperationTimeout absent, no fork or duplicate (property)", async () => {
    const { proxy, client } = await proxied()
    const direct = connect()
    const op = fc.record({ replica: fc.nat({ max: 3 }), startMs: fc.nat({ max: 40 }) })
    await fc.assert(
      fc.asyncProperty(
        fc.array(op, { minLength: 3, maxLength: 14 }),
        fc.nat({ max: 60 }),
        fc.nat({ max: 500 }),
        async (ops, freezeAtMs, frozenMs) => {
          const prefix = uniquePrefix("lane-frozen-property")
          const options = { client, keyPrefix: prefix, startupChecks: "off", timeout: 250 } as const
          const replicas = [
            createRedisAuditStore({ ...options, lock: "never" }),
            createRedisAuditStore({ ...options, lock: "adaptive" }),
            createRedisAuditStore({ ...options, lock: "adaptive", runtime: runtimeFor("effect") }),
            createRedisAuditStore({ ...options, lock: "never", runtime: runtimeFor("effect") })
          ]
          await append(replicas[0]!, { warm: true })
          const fault = sleep(freezeAtMs).then(async () => {
            proxy.freeze()
            await sleep(frozenMs)
            proxy.thaw()
          })
          const outcomes = await Promise.all(
            ops.map(({ replica, startMs }, id) =>
              sleep(startMs).then(() =>
                settled(
                  replicas[replica]!.transaction(async ({ readLastIntegrity, persist }) => {
                    await persist(buildNextRecord({ id }, (await readLastIntegrity()) as Integrity | null))
                    return id
                  })
                )
              )
            )
          )
          await fault
          await client.ping() // every request held by the freeze has run
          const events = await eventsOf(direct, prefix)
          const ids = events.slice(1).map((e) => e.id as number)
          expect(new Set(ids).size).toBe(ids.length)
          outcomes.forEach((outcome, id) => {
            if ("value" in outcome) expect([id, ids.includes(id)]).toEqual([outcome.value, true])
            else if (outcome.error !== "CommitOutcomeUnknown") {
              expect(["OperationTimeout", "RetriesExhausted"]).toContain(outcome.error)
              expect(ids.includes(id)).toBe(false)
            }
          })
        }
      ),
      { numRuns: 10 }
    )
  }, 120_000)
})

describe("the deadline passes in fn, after or before its persist", () => {
  for (const lock of ["never", "adaptive"] as const) {
    it(`lock "${lock}": committed on the lane's attempt, then fn outlives the deadline: CommitOutcomeUnknown, the record there once, as on the Effect path`, async () => {
      const lane = await samePaths(async (path, runtime) => {
        const client = connect()
        const prefix = uniquePrefix(`lane-commit-then-late-${lock}-${path}`)
        const store = createRedisAuditStore({
          client,
          keyPrefix: prefix,
          startupChecks: "off",
          runtime,
          lock,
          timeout: 300
        })
        await append(store, { warm: true })
        const counted = counters()
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            await persist(buildNextRecord({ ours: true }, (await readLastIntegrity()) as Integrity | null))
            await sleep(500)
            return "late"
          })
        )
        await append(store, { next: true })
        return { outcome, counts: counted(), events: await eventsOf(client, prefix) }
      })
      expect(lane).toMatchObject({
        outcome: { error: "CommitOutcomeUnknown", cause: "OperationTimeout" },
        counts: { conflicts: 0, retries: 0, samples: 2 },
        events: [{ warm: true }, { ours: true }, { next: true }]
      })
    })

    it(`lock "${lock}": the lane's attempt lost, the retry's fn outlives the deadline before its persist: OperationTimeout, nothing of its own written, as on the Effect path`, async () => {
      // The retry's fn persists 200 ms past the deadline, after the call has rejected; the test waits for that.
      const lane = await samePaths((path, runtime) =>
        lostRace(path, runtime, {
          name: "lane-retry-late",
          lock,
          timeout: 300,
          lateBuild: () => sleep(500),
          settle: 500
        })
      )
      expect(lane).toMatchObject({
        outcome: { error: "OperationTimeout", operation: "audit transaction" },
        builds: 2,
        persisted: ["FenceConflict", "PersistAfterTransaction"], // (the call had rejected at the deadline)
        counts: { conflicts: 1, retries: 1, samples: 3 },
        events: [{ warm: true }, { rival: true }, { next: true }]
      })
    })
  }
})

describe("the lane on a Redis Cluster", () => {
  it("lost races and a short budget on a cluster client: the same builds, counts, error and chain as on the Effect path", async () => {
    const cluster = new Cluster([...sharedCluster().startupNodes], { redisOptions: { maxRetriesPerRequest: 5 } })
    try {
      for (const [recurs, losses] of [
        [3, 2],
        [1, 3]
      ] as const) {
        const lane = await samePaths(async (path, runtime) => {
          const prefix = uniqueClusterPrefix(`lane-cluster-${path}`)
          const options = { client: cluster, keyPrefix: prefix, startupChecks: "off", runtime } as const
          const store = createRedisAuditStore({ ...options, retry: Schedule.recurs(recurs) })
          const rival = createRedisAuditStore({ ...options, lock: "never" })
          await append(store, { warm: true })
          const counted = counters()
          const race = losingRaces(store, rival, losses)
          const outcome = await settled(race.done)
          const builds = race.builds()
          const chain = (await cluster.lrange(`${prefix}chain`, 0, -1)).map((json) => JSON.parse(json) as object)
          expect(verifyAuditChain(chain).valid).toBe(true)
          return { outcome, builds, counts: counted(), length: chain.length }
        })
        const attempts = Math.min(losses, recurs) + 1
        expect(lane.builds).toBe(attempts)
        expect(lane.counts).toMatchObject({ conflicts: Math.min(losses, attempts), retries: attempts - 1 })
        if (losses > recurs) expect(lane.outcome).toMatchObject({ error: "RetriesExhausted", attempts })
        else expect(lane.outcome).toEqual({ value: undefined })
      }
    } finally {
      cluster.disconnect()
    }
  })
})
