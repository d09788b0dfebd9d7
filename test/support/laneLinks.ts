/**
 * What the lane tests share: connections (direct, or through a TCP proxy that can freeze,
 * drop or cut), all closed when the file ends; both paths run and compared
 * (`samePaths`); and, for the token store, its counters' growth and the vault as Redis
 * holds it.
 */
import { Effect, Metric, type Runtime } from "effect"
import { Redis, type RedisOptions } from "ioredis"
import { afterAll, expect } from "vitest"
import type { TokenRecord } from "../../src/haechi.js"
import { withTags } from "../../src/internal/metricTags.js"
import * as Metrics from "../../src/Metrics.js"
import { PATHS, type Path, runtimeFor } from "./facadePaths.js"
import { tcpProxy } from "./tcpProxy.js"
import { sharedRedis } from "./shared.js"

/** `connect(port?, options?)` and `proxied(options?, port?)`, every client and proxy closed after the file. */
export const laneLinks = () => {
  const clients: Array<Redis> = []
  const proxies: Array<{ stop(): Promise<void> }> = []
  afterAll(async () => {
    for (const c of clients) c.disconnect()
    await Promise.all(proxies.map((p) => p.stop()))
  })
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
  return { connect, proxied }
}

/** Polls `probe` every 2 ms for up to `ms`; its last value. */
export const until = async <A>(probe: () => Promise<A>, ok: (a: A) => boolean, ms = 1000): Promise<A> => {
  const end = performance.now() + ms
  let value = await probe()
  while (!ok(value) && performance.now() < end) {
    await new Promise((resolve) => setTimeout(resolve, 2))
    value = await probe()
  }
  return value
}

/** A promise and what resolves it (`open`): a point one side waits at until the other lets it on. */
export const latch = (): { readonly reached: Promise<void>; readonly open: () => void } => {
  let open!: () => void
  const reached = new Promise<void>((resolve) => (open = resolve))
  return { reached, open }
}

/** Runs `scenario` on both paths and expects the same result from each; returns the lane's. */
export const samePaths = async <A>(
  scenario: (path: Path, runtime: Runtime.Runtime<never>) => Promise<A>
): Promise<A> => {
  const results: Array<A> = []
  for (const path of PATHS) results.push(await scenario(path, runtimeFor(path)))
  expect(results[0]).toEqual(results[1])
  return results[0]!
}

/** A counter's count now. */
export const count = (metric: Metric.Metric.Counter<number>) => Effect.runSync(Metric.value(metric)).count

/**
 * The growth, since this call, of a store operation's conflict, retry, exhaustion and
 * resolution counters and its latency samples, and of `extra`'s counts.
 */
export const countersOf = <E extends string = never>(
  store: "audit" | "vault",
  operation: string,
  extra: Record<E, () => number> = {} as Record<E, () => number>
) => {
  const tags = { store, operation } as const
  const metrics = {
    conflicts: withTags(Metrics.keys.fenceConflicts, tags),
    retries: withTags(Metrics.keys.retries, tags),
    exhausted: withTags(Metrics.keys.retriesExhausted, tags),
    resolved: Metrics.ambiguousCommitsResolved.pipe(Metric.tagged("store", store))
  }
  const read = () => ({
    conflicts: count(metrics.conflicts),
    retries: count(metrics.retries),
    exhausted: count(metrics.exhausted),
    resolved: count(metrics.resolved),
    ...(Object.fromEntries(Object.entries(extra).map(([k, f]) => [k, (f as () => number)()])) as Record<E, number>),
    samples: Effect.runSync(Metric.value(withTags(Metrics.keys.operationLatency, tags))).count
  })
  const before = read()
  return () => {
    const now = read()
    return Object.fromEntries(
      Object.entries(now).map(([k, v]) => [k, (v as number) - (before[k as keyof typeof before] as number)])
    ) as typeof before
  }
}

/**
 * The token store's counters' and mutate latency histogram's growth since this call
 * (rewinds: of `prefix`; they are counted per store, the untagged counter never moves).
 */
export const vaultCounters = (prefix = "") =>
  countersOf("vault", "mutate", { rewinds: () => count(Metrics.vaultRewinds.pipe(Metric.tagged("prefix", prefix))) })

/** The vault's records under `prefix`, as Redis holds them, sorted by token. */
export const vaultOf = async (client: Redis, prefix: string) =>
  Object.fromEntries(
    Object.entries(await client.hgetall(`${prefix}tokens`))
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([token, json]) => [token, JSON.parse(json) as TokenRecord])
  )
