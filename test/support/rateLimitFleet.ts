/**
 * Several rate limiter replicas in child processes (./ratelimit-replica.mjs) on one key,
 * and the check of what they were allowed against the rule.
 *
 * Guarantees:
 * - `runFleet` resolves with every replica's calls, or rejects if one fails or outlasts
 *   its run by 20 s (the child is killed);
 * - `windowViolations` reports a window only when it certainly held more than `limit`
 *   allowed requests: a request was decided between its `sent` and `received` times (the
 *   real clock, which Redis's TIME reads on this host), so `limit + 1` allowed requests
 *   whose latest `received` and earliest `sent` are less than W apart were decided
 *   within W, whatever the exact instants.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

export interface Call {
  readonly sent: number
  readonly received: number
  readonly allowed: boolean
  readonly remaining: number
  readonly retryAfterMs: number
  readonly resetAfterMs: number
  readonly replica: number
}

export interface ReplicaOptions {
  readonly url: string
  readonly prefix: string
  readonly key: string
  readonly limit: number
  readonly windowMs: number
  readonly startAt: number
  readonly durationMs: number
  readonly perSecond: number
  readonly inFlight: number
  readonly skewMs?: number
}

const CHILD = fileURLToPath(new URL("./ratelimit-replica.mjs", import.meta.url))

const runReplica = (index: number, options: ReplicaOptions): Promise<Array<Call>> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, JSON.stringify(options)], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let err = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`rate limit replica ${index} did not finish: ${err}`))
    }, options.startAt - Date.now() + options.durationMs + 20_000)
    child.stdout.on("data", (d) => (out += String(d)))
    child.stderr.on("data", (d) => (err += String(d)))
    child.once("exit", (code) => {
      clearTimeout(timer)
      if (code !== 0) return reject(new Error(`rate limit replica ${index} exited with ${code}: ${err}`))
      const { calls } = JSON.parse(out) as { calls: Array<[number, number, number, number, number, number]> }
      resolve(
        calls.map(([sent, received, allowed, remaining, retryAfterMs, resetAfterMs]) => ({
          sent,
          received,
          allowed: allowed === 1,
          remaining,
          retryAfterMs,
          resetAfterMs,
          replica: index
        }))
      )
    })
  })

/** Runs one replica per entry of `replicas` (its own options over `common`) and gathers their calls. */
export const runFleet = async (
  common: Omit<ReplicaOptions, "skewMs">,
  replicas: ReadonlyArray<{ readonly skewMs?: number }>
): Promise<Array<Call>> => (await Promise.all(replicas.map((r, i) => runReplica(i, { ...common, ...r })))).flat()

/**
 * Windows that certainly held more than `limit` allowed requests: each as the allowed
 * calls found in it. For each allowed call as the earliest, the `limit` other allowed calls
 * sent no earlier that were answered soonest make the tightest window starting there.
 */
export const windowViolations = (calls: ReadonlyArray<Call>, limit: number, windowMs: number): Array<Array<Call>> => {
  const allowed = calls.filter((c) => c.allowed).sort((a, b) => a.sent - b.sent)
  const found: Array<Array<Call>> = []
  allowed.forEach((first, i) => {
    const soonest = allowed
      .slice(i + 1)
      .sort((a, b) => a.received - b.received)
      .slice(0, limit)
    if (soonest.length < limit) return
    const group = [first, ...soonest]
    const last = Math.max(...group.map((c) => c.received))
    if (last - first.sent < windowMs) found.push(group)
  })
  return found
}
