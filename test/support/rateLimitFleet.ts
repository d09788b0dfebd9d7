/**
 * Several rate limiter replicas in child processes (./ratelimit-replica.mjs) on one key,
 * and the check of what they were allowed against the rule.
 *
 * Guarantees:
 * - `runFleet` starts the replicas together: each loads and connects, says READY, and only
 *   once all have is each sent the same start time (200 ms later), so a slow start on a
 *   busy machine shortens nobody's run; it resolves with every replica's calls, or
 *   rejects if one fails, is not ready within 60 s, or outlasts its run by 20 s (killed);
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
  readonly durationMs: number
  readonly perSecond: number
  readonly inFlight: number
  readonly skewMs?: number
}

const CHILD = fileURLToPath(new URL("./ratelimit-replica.mjs", import.meta.url))

interface Started {
  readonly ready: Promise<void>
  readonly start: (at: number) => void
  readonly calls: Promise<Array<Call>>
}

const startReplica = (index: number, options: ReplicaOptions): Started => {
  const child = spawn(process.execPath, [CHILD, JSON.stringify(options)], { stdio: ["pipe", "pipe", "pipe"] })
  let out = ""
  let err = ""
  let timer = setTimeout(() => child.kill("SIGKILL"), 60_000)
  let isReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => (isReady = resolve))
  child.stdout.on("data", (d) => {
    out += String(d)
    if (out.startsWith("READY\n")) {
      out = out.slice(6)
      isReady()
    }
  })
  child.stderr.on("data", (d) => (err += String(d)))
  const calls = new Promise<Array<Call>>((resolve, reject) => {
    child.once("exit", (code, signal) => {
      clearTimeout(timer)
      if (code !== 0) return reject(new Error(`rate limit replica ${index} exited with ${code ?? signal}: ${err}`))
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
  return {
    ready: Promise.race([
      ready,
      calls.then(() => Promise.reject(new Error(`rate limit replica ${index} exited before READY`)))
    ]),
    start: (at) => {
      clearTimeout(timer)
      timer = setTimeout(() => child.kill("SIGKILL"), at - Date.now() + options.durationMs + 20_000)
      child.stdin.end(`${at}\n`)
    },
    calls
  }
}

/**
 * Runs one replica per entry of `replicas` (its own options over `common`), started
 * together (not before `notBefore`, ms since epoch), and gathers their calls.
 */
export const runFleet = async (
  common: Omit<ReplicaOptions, "skewMs">,
  replicas: ReadonlyArray<{ readonly skewMs?: number }>,
  notBefore = 0
): Promise<Array<Call>> => {
  const started = replicas.map((r, i) => startReplica(i, { ...common, ...r }))
  await Promise.all(started.map((s) => s.ready))
  const at = Math.max(Date.now() + 200, notBefore)
  started.forEach((s) => s.start(at))
  return (await Promise.all(started.map((s) => s.calls))).flat()
}

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
