/**
 * Public entry point of the Redis test infrastructure (real Redis only, never a mock):
 * - startRedis()   throwaway standalone redis-server   (./redisProcess.ts)
 * - startCluster() throwaway Redis Cluster              (./redisCluster.ts)
 * - startSentinelSet() primary + replica + sentinels    (./redisSentinel.ts)
 * - tcpProxy()     fault-injection proxy                (./tcpProxy.ts)
 * plus Effect `acquireRelease` wrappers so the same resources can be used from
 * `it.scoped(...)` / `layer(...)` of @effect/vitest and are always released with the Scope.
 * See each module's header for its guarantees.
 */
import { Context, Effect, Layer, type Scope } from "effect"
import { startCluster, type ClusterOptions, type RedisClusterHandle } from "./redisCluster.js"
import { startRedis, type RedisServer, type RedisServerOptions } from "./redisProcess.js"
import { tcpProxy, type TcpProxy } from "./tcpProxy.js"

export * from "./redisCluster.js"
export * from "./redisProcess.js"
export * from "./redisSentinel.js"
export * from "./tcpProxy.js"

/** A standalone server that lives exactly as long as the surrounding Scope. */
export const scopedRedis = (opts?: RedisServerOptions): Effect.Effect<RedisServer, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => startRedis(opts)),
    (server) => Effect.promise(() => server.stop())
  )

/** A cluster that lives exactly as long as the surrounding Scope. */
export const scopedCluster = (opts?: ClusterOptions): Effect.Effect<RedisClusterHandle, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => startCluster(opts)),
    (cluster) => Effect.promise(() => cluster.stop())
  )

/** A proxy that lives exactly as long as the surrounding Scope. */
export const scopedProxy = (targetPort: number, targetHost?: string): Effect.Effect<TcpProxy, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => tcpProxy(targetPort, targetHost)),
    (proxy) => Effect.promise(() => proxy.stop())
  )

/** Service for a private test server: `layer(TestRedis.layer({ appendonly: true }))(...)`. */
export class TestRedis extends Context.Tag("test/support/TestRedis")<TestRedis, RedisServer>() {
  static readonly layer = (opts?: RedisServerOptions): Layer.Layer<TestRedis> =>
    Layer.scoped(TestRedis, scopedRedis(opts))
}
