/**
 * The facade's fiber-free `mutate` (internal/vault/promiseMutate) under faults, against
 * real Redis: deadlines that pass while the lane's reply is being settled, fn returning
 * hostile thenables, concurrent lane mutates and reads pinning one cache, script flushes
 * and rewinds, keys of the wrong type, re-sent calls, and random interleavings of lane
 * and Effect-path replicas over frozen links and lost replies. Each compares the lane
 * with the same facade made to take the Effect path (a runtime with a tracer), or checks
 * the vault against what the outcomes said. (test/vaultLane.test.ts has the basics.)
 */
import { describe, expect, it } from "@effect/vitest"
import { afterAll, beforeAll } from "vitest"
import { Effect, Metric, type Runtime } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { createRedisTokenStore, type MutableView, type TokenRecord } from "../src/haechi.js"
import { withTags } from "../src/internal/metricTags.js"
import * as Metrics from "../src/Metrics.js"
import { uniquePrefix } from "./support/keys.js"
import { PATHS, type Path, runtimeFor } from "./support/facadePaths.js"
import { startRedis, tcpProxy, type RedisServer, type TcpProxy } from "./support/redisServer.js"
import { sharedRedis } from "./support/shared.js"

const clients: Array<Redis> = []
const proxies: Array<TcpProxy> = []
let own: RedisServer | undefined
const connect = (port = sharedRedis().port, options: RedisOptions = {}) => {
  const client = new Redis(port, "127.0.0.1", options)
  client.on("error", () => {})
  clients.push(client)
  return client
}
const proxied = async (options: RedisOptions = {}, port = sharedRedis().port) => {
  const proxy = await tcpProxy(port)
  proxies.push(proxy)
  const client = connect(proxy.port, options)
  await client.ping()
  return { proxy, client }
}
beforeAll(async () => {
  own = await startRedis()
})
afterAll(async () => {
  for (const c of clients) c.disconnect()
  await Promise.all(proxies.map((p) => p.stop()))
  await own?.stop()
})

const count = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count
const tags = { store: "vault", operation: "mutate" } as const
const metrics = {
  conflicts: withTags(Metrics.keys.fenceConflicts, tags),
  retries: withTags(Metrics.keys.retries, tags),
  exhausted: withTags(Metrics.keys.retriesExhausted, tags),
  resolved: Metrics.ambiguousCommitsResolved.pipe(Metric.tagged("store", "vault")),
  rewinds: Metrics.vaultRewinds
}
const samples = () => Effect.runSync(Metric.value(withTags(Metrics.keys.operationLatency, tags))).count
/** The counters' and the latency histogram's growth since `counters()` was called. */
const counters = () => {
  const read = () => ({
    conflicts: count(metrics.conflicts),
    retries: count(metrics.retries),
    exhausted: count(metrics.exhausted),
    resolved: count(metrics.resolved),
    rewinds: count(metrics.rewinds),
    samples: samples()
  })
  const before = read()
  return () => {
    const now = read()
    return Object.fromEntries(
      Object.entries(now).map(([k, v]) => [k, v - before[k as keyof typeof before]])
    ) as typeof before
  }
}

/** How a promise settled: its value, or the error's tag (and its cause's). */
const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    const e = error as { _tag?: string; cause?: { _tag?: string }; message?: string }
    return {
      error: e?._tag ?? e?.message ?? String(error),
      ...(e?.cause?._tag === undefined ? {} : { cause: e.cause._tag })
    }
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The vault's records under `prefix`, as Redis holds them, sorted by token. */
const vaultOf = async (client: Redis, prefix: string) =>
  Object.fromEntries(
    Object.entries(await client.hgetall(`${prefix}tokens`))
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([token, json]) => [token, JSON.parse(json) as TokenRecord])
  )

/** Runs `scenario` on both paths and expects the same result from each; returns the lane's. */
const samePaths = async <A>(scenario: (path: Path, runtime: Runtime.Runtime<never>) => Promise<A>): Promise<A> => {
  const results: Array<A> = []
  for (const path of PATHS) results.push(await scenario(path, runtimeFor(path)))
  expect(results[0]).toEqual(results[1])
  return results[0]!
}

const rec = (n: number): TokenRecord => ({ type: "email", n, envelope: { ciphertext: `c${n}` } })
/**
 * Text in the first vault_changes call a connection sends: ioredis sends a defined
 * script's text (EVAL) the first time on a connection, by SHA after that.
 */
const changesCall = "-- vault_changes:"
/** Whether `promise` settled within `ms`. */
const within = (promise: Promise<unknown>, ms: number) =>
  Promise.race([promise.then(() => true), sleep(ms).then(() => false)])

describe("the facade's fiber-free mutate under faults", () => {
  // Catches: the lane's own "commit in flight" mark kept on past the apply's reply, so a
  // deadline while a conflict is being settled (the cache brought up to date) says
  // CommitOutcomeUnknown although the fence wrote nothing (the Effect path: OperationTimeout).
  it("the deadline passes while a conflict reply is being settled: OperationTimeout, nothing written, as on the Effect path", async () => {
    const direct = connect()
    const lane = await samePaths(async (path, runtime) => {
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`vault-lane-faults-settling-${path}`)
      const common = { keyPrefix: prefix, startupChecks: "off" } as const
      const store = createRedisTokenStore({ ...common, client, runtime, timeout: 300, lock: "never" })
      const rival = createRedisTokenStore({ ...common, client: direct, lock: "never" })
      await store.mutate((view) => view.set("warm", rec(1)))
      await store.mutate((view) => view.set("warm2", rec(2)))
      await rival.mutate((view) => view.set("rival", rec(3)))
      const counted = counters()
      const frozen = proxy.freezeWhen(changesCall)
      const outcome = await settled(store.mutate((view) => view.set("ours", rec(4))))
      expect(await within(frozen, 1000)).toBe(true)
      proxy.thaw()
      await client.ping()
      const counts = counted()
      await store.mutate((view) => view.set("next", rec(5)))
      return { outcome, counts, vault: Object.keys(await vaultOf(direct, prefix)) }
    })
    expect(lane.outcome).toEqual({ error: "OperationTimeout" })
    expect(lane.vault).toEqual(["next", "rival", "warm", "warm2"])
  })

  // Catches: a value whose `then` cannot even be read escaping the lane's start (the
  // promise rejected, but the view left open and pinned, and the deadline and latency
  // sample left for the timer), where the Effect path ends the attempt at once.
  it("fn returns a hostile thenable (then throws, its getter throws, its getter throws on the second read): the same outcome, count and closed view as the Effect path", async () => {
    const direct = connect()
    const hostile: ReadonlyArray<readonly [string, () => unknown]> = [
      [
        "then throws",
        () => ({
          then: () => {
            throw new Error("then threw")
          }
        })
      ],
      [
        "then's getter throws",
        () => ({
          get then() {
            throw new Error("then's getter threw")
          }
        })
      ],
      [
        "then's getter throws on the second read",
        () => {
          let reads = 0
          return {
            get then() {
              reads += 1
              if (reads > 1) throw new Error("then's getter threw on read 2")
              return (resolve: (v: unknown) => void) => resolve("never")
            }
          }
        }
      ]
    ]
    for (const [name, make] of hostile) {
      await samePaths(async (path, runtime) => {
        const prefix = uniquePrefix(`vault-lane-faults-thenable-${path}`)
        const store = createRedisTokenStore({ client: direct, keyPrefix: prefix, startupChecks: "off", runtime })
        await store.mutate((view) => view.set("warm", rec(1)))
        await store.mutate((view) => view.set("warm2", rec(2)))
        const counted = counters()
        let kept: MutableView | undefined
        const outcome = await settled(
          store.mutate((view) => {
            kept = view
            view.set("kept-out", rec(3))
            return make() as never
          })
        )
        const counts = counted()
        let lateSet = "accepted"
        try {
          kept!.set("late", rec(4))
        } catch (error) {
          lateSet = (error as { _tag?: string })._tag ?? String(error)
        }
        await store.mutate((view) => view.set("next", rec(5)))
        return { name, outcome, counts, lateSet, vault: Object.keys(await vaultOf(direct, prefix)) }
      })
    }
  })
})
