/**
 * vitest globalSetup: starts ONE shared standalone redis-server and ONE Redis Cluster
 * (3 masters, 1 replica each) for the whole run, provides their connection details to
 * tests (`inject("redis")`, `inject("redisCluster")`, typed in ./shared.ts), and stops
 * both when the run ends. If either fails to start, the run fails and nothing is left
 * running. It also builds dist/ once, before any test file runs: the CLI and package
 * tests use it, and two builds writing dist/ at once would hand one of them half a build.
 */
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import type { TestProject } from "vitest/node"
import { startCluster, startRedis, type RedisClusterHandle, type RedisServer } from "./redisServer.js"
import type {} from "./shared.js" // ProvidedContext declaration

const MASTERS = 3
const REPLICAS_PER_MASTER = 1

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  execFileSync("npm", ["run", "build", "--silent"], {
    cwd: fileURLToPath(new URL("../..", import.meta.url)),
    stdio: ["ignore", "ignore", "inherit"]
  })
  const [redis, cluster] = await Promise.allSettled([
    startRedis(),
    startCluster({ masters: MASTERS, replicasPerMaster: REPLICAS_PER_MASTER })
  ])
  const teardown = async () => {
    await Promise.all([
      redis.status === "fulfilled" ? redis.value.stop() : undefined,
      cluster.status === "fulfilled" ? cluster.value.stop() : undefined
    ])
  }
  if (redis.status === "rejected" || cluster.status === "rejected") {
    await teardown()
    throw redis.status === "rejected" ? redis.reason : (cluster as PromiseRejectedResult).reason
  }
  const server: RedisServer = redis.value
  const handle: RedisClusterHandle = cluster.value
  project.provide("redis", { host: server.host, port: server.port, url: server.url })
  project.provide("redisCluster", {
    startupNodes: handle.startupNodes.map((n) => ({ host: n.host, port: n.port })),
    masters: MASTERS,
    replicasPerMaster: REPLICAS_PER_MASTER
  })
  return teardown
}
