/**
 * AuditLog against the real shared redis-server: its records are haechi's format (they
 * verify with Chain.verifyRecords and with an independent oracle written here from the
 * contract page), several instances racing on one chain never fork it, one instance
 * never has two transactions in flight, and a chain shared with a haechi-style sink
 * (test/support/haechiCore.ts driving the store's Promise contract) stays one chain.
 */
import { Cause, Effect, Exit, Layer } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as AuditLog from "../src/AuditLog.js"
import * as AuditStore from "../src/AuditStore.js"
import { verifyRecords } from "../src/Chain.js"
import * as RedisClient from "../src/RedisClient.js"
import { createAuditSink, type AuditStore as HaechiAuditStore } from "./support/haechiCore.js"
import { uniquePrefix } from "./support/keys.js"
import { sharedRedis } from "./support/shared.js"
import { refVerify } from "./support/oracle.js"

let url: string
let redis: Redis

beforeAll(() => {
  url = sharedRedis().url
  redis = new Redis(url)
})

afterAll(async () => {
  await redis.quit()
})

/** One replica: its own connection, store instance and AuditLog. */
const replicaLayer = (prefix: string) =>
  AuditLog.layer.pipe(
    Layer.provideMerge(AuditStore.layer({ keyPrefix: prefix })),
    Layer.provide(RedisClient.layer(url))
  )

const run = <A, E>(prefix: string, effect: Effect.Effect<A, E, AuditLog.AuditLog | AuditStore.AuditStore>) =>
  Effect.runPromise(Effect.provide(effect, replicaLayer(prefix)))

const stored = async (prefix: string) => (await redis.lrange(`${prefix}chain`, 0, -1)).map((text) => JSON.parse(text))

describe("AuditLog.record", () => {
  it("appends haechi-format records that haechi's rules accept, returning what was stored", async () => {
    const prefix = uniquePrefix("auditlog-format")
    const returned = await run(
      prefix,
      Effect.gen(function* () {
        const log = yield* AuditLog.AuditLog
        const out = []
        for (let i = 0; i < 20; i++) {
          out.push(
            yield* log.record({ type: "login", user: `u${i}`, nested: { ok: i % 2 === 0, list: [i, "x", null] } })
          )
        }
        return out
      })
    )
    const chain = await stored(prefix)
    expect(chain).toEqual(returned)
    expect(chain.map((r) => r.auditIntegrity.sequence)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    expect(chain[0].auditIntegrity.previousHash).toBe(null)
    expect(chain[3]).toMatchObject({ type: "login", user: "u3", nested: { ok: false, list: [3, "x", null] } })
    expect(verifyRecords(chain)).toMatchObject({
      valid: true,
      records: 20,
      headHash: chain[19].auditIntegrity.eventHash
    })
    expect(refVerify(chain)).toEqual({ valid: true, records: 20 })
    // The store's head names the last record.
    expect(JSON.parse((await redis.get(`${prefix}head`))!)).toEqual(chain[19].auditIntegrity)
  })

  it("hashes what Redis holds: undefined fields dropped, a Date as its JSON, auditIntegrity replaced", async () => {
    const prefix = uniquePrefix("auditlog-normalize")
    const record = await run(
      prefix,
      Effect.flatMap(AuditLog.AuditLog, (log) =>
        log.record({
          type: "x",
          gone: undefined,
          at: new Date("2030-01-02T03:04:05.000Z"),
          auditIntegrity: { sequence: 99, eventHash: "forged" }
        })
      )
    )
    const chain = await stored(prefix)
    expect(chain).toEqual([record])
    expect(Object.keys(record).sort()).toEqual(["at", "auditIntegrity", "type"])
    expect(record.at).toBe("2030-01-02T03:04:05.000Z")
    expect(record.auditIntegrity.sequence).toBe(1)
    expect(refVerify(chain)).toEqual({ valid: true, records: 1 })
  })

  it("refuses what is not a JSON object with InvalidRecord, writing nothing", async () => {
    const prefix = uniquePrefix("auditlog-invalid")
    const cyclic: Record<string, unknown> = { type: "x" }
    cyclic.self = cyclic
    const bad: Array<unknown> = [null, [1, 2], "text", 42, { big: 1n }, cyclic, { toJSON: () => "a string" }]
    for (const event of bad) {
      const exit = await run(
        prefix,
        Effect.exit(Effect.flatMap(AuditLog.AuditLog, (log) => log.record(event as object)))
      )
      expect(Exit.isFailure(exit) && Cause.failureOption(exit.cause)._tag === "Some").toBe(true)
      if (Exit.isFailure(exit)) {
        const error = Cause.failureOption(exit.cause)
        expect(error._tag === "Some" && error.value._tag).toBe("InvalidRecord")
      }
    }
    expect(await redis.llen(`${prefix}chain`)).toBe(0)
    expect(await redis.exists(`${prefix}head`)).toBe(0)
  })

  it("serializes one instance's calls: never two transactions in flight", async () => {
    const prefix = uniquePrefix("auditlog-serial")
    let inFlight = 0
    let most = 0
    const result = await Effect.runPromise(
      Effect.gen(function* () {
        const store = yield* AuditStore.AuditStore
        const counted: AuditStore.AuditStoreShape = {
          ...store,
          transaction: (build) =>
            Effect.acquireUseRelease(
              Effect.sync(() => {
                inFlight++
                most = Math.max(most, inFlight)
              }),
              // A slow transaction: without the semaphore the others would start meanwhile.
              () => Effect.zipRight(Effect.sleep("2 millis"), store.transaction(build)),
              () => Effect.sync(() => void inFlight--)
            )
        }
        const log = yield* AuditLog.fromStore(counted)
        return yield* Effect.forEach(
          Array.from({ length: 30 }, (_, i) => i),
          (i) => log.record({ i }),
          {
            concurrency: "unbounded"
          }
        )
      }).pipe(Effect.provide(AuditStore.layer({ keyPrefix: prefix }).pipe(Layer.provide(RedisClient.layer(url)))))
    )
    expect(most).toBe(1)
    expect(result.map((r) => r.auditIntegrity.sequence).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 30 }, (_, i) => i + 1)
    )
    expect(refVerify(await stored(prefix))).toEqual({ valid: true, records: 30 })
  })
})

describe("several AuditLog instances on one Redis chain", () => {
  it("never fork it: every record lands once, at the sequence it was given", async () => {
    const prefix = uniquePrefix("auditlog-race")
    const replicas = 5
    const perReplica = 30
    const results = await Promise.all(
      Array.from({ length: replicas }, (_, r) =>
        run(
          prefix,
          Effect.flatMap(AuditLog.AuditLog, (log) =>
            // Each replica also fires its own calls concurrently (its semaphore queues them).
            Effect.forEach(
              Array.from({ length: perReplica }, (_, i) => i),
              (i) => log.record({ type: "race", replica: r, i }),
              { concurrency: "unbounded" }
            )
          )
        )
      )
    )
    const chain = await stored(prefix)
    expect(chain).toHaveLength(replicas * perReplica)
    expect(refVerify(chain)).toEqual({ valid: true, records: replicas * perReplica })
    expect(verifyRecords(chain).valid).toBe(true)
    // Every returned record is the stored one at its sequence; every event appears once.
    for (const record of results.flat()) {
      expect(chain[record.auditIntegrity.sequence - 1]).toEqual(record)
    }
    const events = new Set(chain.map((r) => `${r.replica}:${r.i}`))
    expect(events.size).toBe(replicas * perReplica)
  }, 60_000)

  it("share it with a haechi-style sink driving the store's Promise contract", async () => {
    const prefix = uniquePrefix("auditlog-mixed")
    // The store as haechi's core sees it: its own instance and connection.
    const client = new Redis(url)
    try {
      const store = Effect.runSync(
        Effect.provideService(
          AuditStore.make({ keyPrefix: prefix }),
          RedisClient.RedisClient,
          RedisClient.fromClient(client)
        )
      )
      const asPromise = <A>(effect: Effect.Effect<A, unknown>): Promise<A> =>
        Effect.runPromiseExit(effect).then((exit) =>
          Exit.isSuccess(exit) ? exit.value : Promise.reject(Cause.squash(exit.cause))
        )
      const haechiStore: HaechiAuditStore = {
        transaction: (fn) =>
          asPromise(
            store.transaction((tx) =>
              Effect.tryPromise({
                try: () =>
                  fn({
                    readLastIntegrity: () => asPromise(tx.readLastIntegrity) as never,
                    persist: (record) => asPromise(tx.persist(record))
                  }),
                catch: (error) => error as never
              })
            )
          )
      }
      const sink = createAuditSink({ store: haechiStore })
      const fromHaechi = Promise.all(Array.from({ length: 40 }, (_, i) => sink.record({ type: "haechi", i })))
      const fromEffect = run(
        prefix,
        Effect.flatMap(AuditLog.AuditLog, (log) =>
          Effect.forEach(
            Array.from({ length: 40 }, (_, i) => i),
            (i) => log.record({ type: "effect", i }),
            {
              concurrency: 4
            }
          )
        )
      )
      await Promise.all([fromHaechi, fromEffect])
    } finally {
      await client.quit()
    }
    const chain = await stored(prefix)
    expect(chain).toHaveLength(80)
    expect(refVerify(chain)).toEqual({ valid: true, records: 80 })
    expect(chain.filter((r) => r.type === "haechi")).toHaveLength(40)
    expect(chain.filter((r) => r.type === "effect")).toHaveLength(40)
  }, 60_000)
})
