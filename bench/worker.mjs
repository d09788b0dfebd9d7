// One measurement in a fresh process, so no case inherits another's heap, JIT state or
// cached vault. The parent (run.mjs) sends `{ mode, impl, port, ... }` over IPC and gets
// the figures back; a replica of the 4-process audit case also waits for a "go".
import { setTimeout as sleep } from "node:timers/promises"
import { buildRecord, createAuditSink, createTokenVault, plaintextOf, sampleEvent } from "./core.mjs"
import { commandStats, slowlogStart, slowlogStop, statsDelta } from "./admin.mjs"
import { AUDIT_PREFIX, LOCK_KEY, open, openIoredis, openLock, ours } from "./impls.mjs"
import { now, runFor, runPaced, summarize } from "./stats.mjs"

const message = () => new Promise((resolve) => process.once("message", resolve))

const throughput = (run) => ({
  ops: run.ops,
  errors: run.errors,
  firstError: run.firstError,
  ms: run.ms,
  opsPerSec: (run.ops / run.ms) * 1000,
  cpuUsPerOp: run.cpuUs / Math.max(1, run.ops),
  allocBytesPerOp: run.allocBytes / Math.max(1, run.ops),
  ...summarize(run.latencies)
})

/** One sink appending serially. */
const audit = async ({ impl, port, warmup, maxOps, maxMs }) => {
  const store = await open(impl, port)
  const sink = createAuditSink({ store: store.audit() })
  await runFor(() => sink.record(sampleEvent()), { maxOps: warmup, maxMs: 5000 })
  const run = await runFor(() => sink.record(sampleEvent()), { maxOps, maxMs })
  await store.close()
  return throughput(run)
}

/**
 * One replica process of the 4-process case, kept for a whole round: for each variant it
 * opens its own client and sink on the shared chain, warms up, says ready, waits for "go",
 * appends until the deadline, goes on appending unmeasured until "stop" (a cool-down, so
 * that no replica measures the others' shutdown), reports and closes; "exit" ends it.
 */
const replica = async ({ replica: name }) => {
  process.send({ up: true })
  for (;;) {
    const task = await message()
    if (task.exit) return { done: true }
    // `separate`: each replica on a chain of its own (nothing shared: the machine's floor).
    const auditPrefix = task.separate ? `${AUDIT_PREFIX}${name}:` : AUDIT_PREFIX
    const store = await open(task.impl, task.port, { lock: task.lock, auditPrefix })
    const sink = createAuditSink({ store: store.audit() })
    const warm = await runFor(() => sink.record(sampleEvent(name)), { maxOps: task.warmup, maxMs: 2000 })
    process.send({ ready: true })
    const { maxOps, maxMs } = await message()
    const before = { ...sink.counts }
    const append = () => sink.record(sampleEvent(name))
    // `rate`: open-loop at that many appends/s per replica instead of as fast as possible.
    const run = task.rate ? await runPaced(append, { rate: task.rate, maxMs }) : await runFor(append, { maxOps, maxMs })
    // Cool-down: go on writing, unmeasured, until every replica has finished measuring, so
    // no replica's last operations meet the others' shutdown (a replica closing its client).
    let stopping = false
    let coolOk = 0
    const stop = message().then(() => (stopping = true))
    process.send({ measured: true })
    while (!stopping) {
      await append().then(
        () => (coolOk += 1),
        () => {}
      )
    }
    await stop
    await store.close()
    process.send({
      result: {
        coolOk,
        ops: run.ops,
        errors: run.errors,
        firstError: run.firstError,
        ms: run.ms,
        cpuUs: run.cpuUs,
        allocBytes: run.allocBytes,
        attempts: sink.counts.attempts - before.attempts,
        rejected: sink.counts.rejected - before.rejected,
        latencies: run.latencies,
        warmupOk: warm.ops
      }
    })
  }
}

/** tokenize (phase "tokenize") or reveal (phase "reveal") over a pre-loaded vault. */
const vault = async ({ impl, port, phase, tokens, warmup, maxOps, maxMs }) => {
  const store = await open(impl, port)
  const v = createTokenVault({ store: store.vault() })
  // Warm-up also loads our replica cache: the cold load is measured by the memory case.
  const mine = []
  const warm = await runFor(async () => mine.push(await v.tokenize()), { maxOps: warmup, maxMs: 10_000 })
  const pool = tokens.length > 0 ? tokens : mine
  let wrong = 0
  const op =
    phase === "tokenize"
      ? () => v.tokenize()
      : async (i) => {
          const token = pool[(i * 7919) % pool.length]
          if ((await v.reveal(token)) !== plaintextOf(token)) wrong += 1
        }
  if (phase === "reveal") await runFor(op, { maxOps: warmup, maxMs: 10_000 })
  const run = await runFor(op, { maxOps, maxMs })
  await store.close()
  return { ...throughput(run), wrong, tokenized: warm.ops + (phase === "tokenize" ? run.ops : 0) }
}

/**
 * Redis accounting per operation: commands the client sent (round trips) and their server
 * time from the slowlog, and INFO commandstats deltas (which also count script-internal calls).
 */
const account = async ({ impl, port, what, tokens, warmup, ops, maxMs }) => {
  const store = await open(impl, port)
  const admin = await openIoredis(port)
  const phases = {}
  const measure = async (name, op) => {
    const before = await commandStats(admin)
    await slowlogStart(admin)
    const run = await runFor(op, { maxOps: ops, maxMs })
    const log = await slowlogStop(admin)
    const delta = statsDelta(before, await commandStats(admin))
    phases[name] = {
      ops: run.ops,
      errors: run.errors,
      roundTrips: log.sent / run.ops,
      scriptCalls: log.scripted / run.ops,
      redisUsec: log.sentUsecMedian / run.ops,
      redisUsecMean: log.sentUsec / run.ops,
      statsCalls: delta.calls / run.ops,
      statsUsec: delta.usec / run.ops,
      sentByCommand: Object.fromEntries(Object.entries(log.byCommand).map(([k, n]) => [k, n / run.ops])),
      statsByCommand: Object.fromEntries(Object.entries(delta.byCommand).map(([k, s]) => [k, { calls: s.calls / run.ops, usec: s.usec / run.ops }])),
      p50: summarize(run.latencies).p50
    }
  }
  if (what === "audit") {
    const sink = createAuditSink({ store: store.audit() })
    await runFor(() => sink.record(sampleEvent()), { maxOps: warmup, maxMs: 10_000 })
    await measure("append", () => sink.record(sampleEvent()))
  } else {
    const v = createTokenVault({ store: store.vault() })
    const mine = []
    await runFor(async () => mine.push(await v.tokenize()), { maxOps: warmup, maxMs: 10_000 })
    const pool = tokens.length > 0 ? tokens : mine
    await runFor((i) => v.reveal(pool[i % pool.length]), { maxOps: warmup, maxMs: 10_000 })
    await measure("tokenize", () => v.tokenize())
    await measure("reveal", (i) => v.reveal(pool[(i * 7919) % pool.length]))
  }
  await admin.quit()
  await store.close()
  return phases
}

/** Heap and RSS a replica holds for a pre-loaded vault after its first mutate. */
const memory = async ({ impl, port }) => {
  const gc = globalThis.gc
  if (typeof gc !== "function") throw new Error("the memory case needs --expose-gc")
  const store = await open(impl, port)
  const tokenStore = store.vault()
  const v = createTokenVault({ store: tokenStore })
  const settle = () => {
    gc()
    gc()
    return process.memoryUsage()
  }
  const before = settle()
  const maxRssBefore = process.resourceUsage().maxRSS * 1024
  const t0 = now()
  await v.tokenize()
  const firstMs = now() - t0
  const maxRssAfter = process.resourceUsage().maxRSS * 1024
  const after = settle()
  const t1 = now()
  await v.tokenize()
  const secondMs = now() - t1
  const retained = { store: tokenStore, v }
  const result = {
    heapDelta: after.heapUsed - before.heapUsed,
    rssDelta: after.rss - before.rss,
    externalDelta: after.external - before.external,
    peakRssDelta: maxRssAfter > maxRssBefore ? maxRssAfter - before.rss : undefined,
    firstMs,
    secondMs,
    kept: typeof retained.store.mutate
  }
  await store.close()
  return result
}

/**
 * Hand-off rounds between two lockers (`(fn) => Promise`, each on its own client): the
 * holder takes the lock, the waiter starts waiting, the holder lets go; each sample is the
 * time from the end of the holder's fn to the start of the waiter's.
 */
const handOffRounds = async (holderLock, waiterLock, { warmup, maxOps, maxMs }) => {
  // A uniformly random hold of 2-22 ms spans a whole 20 ms poll period of the reference,
  // so a polling waiter is caught at a random phase of its poll.
  const round = async (hold = () => 2 + Math.random() * 20) => {
    let released = 0
    let acquired = 0
    let waiting
    await holderLock(async () => {
      waiting = waiterLock(async () => {
        acquired = now()
      })
      await sleep(hold())
      released = now()
    })
    await waiting
    return acquired - released
  }
  // Warm-up rounds hold briefly: they only bring the code to a steady state (a lock in
  // service runs hot), which the measured rounds then sample.
  for (let i = 0; i < warmup; i++) await round(() => Math.random() * 2)
  const samples = []
  const run = await runFor(async () => samples.push(await round()), { maxOps, maxMs })
  return { ops: run.ops, errors: run.errors, firstError: run.firstError, ...summarize(samples) }
}

/** Lock hand-off with `withRedisLock`; `available: false` if ours has no lock. */
const lockHandoff = async ({ impl, port, warmup, maxOps, maxMs }) => {
  const holder = await openLock(impl, port)
  if (!holder) return { available: false }
  const waiter = await openLock(impl, port)
  const result = await handOffRounds(
    (fn) => holder.withRedisLock(holder.client, LOCK_KEY, fn),
    (fn) => waiter.withRedisLock(waiter.client, LOCK_KEY, fn),
    { warmup, maxOps, maxMs }
  )
  await holder.close()
  await waiter.close()
  return { available: true, ...result }
}

// The floor's scripts: the waiter queues its token; the release hands the lock to the first
// queued token and announces it, or deletes it. The least a queued hand-off can do.
const FLOOR_QUEUE = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 10000) then return 1 end redis.call('RPUSH', KEYS[2], ARGV[1]) return 0"
const FLOOR_RELEASE =
  "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end local t = redis.call('LPOP', KEYS[2]) " +
  "if t then redis.call('SET', KEYS[1], t, 'PX', 10000) redis.call('PUBLISH', ARGV[2], t) else redis.call('DEL', KEYS[1]) end return 1"

/**
 * The hand-off floor of this machine and Redis, with no library: bare ioredis, the same
 * rounds as `lockHandoff`, where the holder's release script hands the lock to the queued
 * waiter and PUBLISHes its token, and the waiter's fn starts on that message. One round
 * trip and a pub/sub delivery; what a hand-off costs beyond this is the library's.
 */
const lockFloor = async ({ port, warmup, maxOps, maxMs }) => {
  const holder = await openIoredis(port)
  const waiter = await openIoredis(port)
  const sub = await openIoredis(port)
  const key = `{${LOCK_KEY}:floor}`
  const queue = `${key}:queue`
  const channel = `${key}:released`
  for (const client of [holder, waiter]) {
    client.defineCommand("floorQueue", { numberOfKeys: 2, lua: FLOOR_QUEUE })
    client.defineCommand("floorRelease", { numberOfKeys: 2, lua: FLOOR_RELEASE })
  }
  const handed = new Map()
  sub.on("message", (_channel, token) => handed.get(token)?.())
  await sub.subscribe(channel)
  let n = 0
  const withFloorLock = async (client, fn) => {
    const token = `t${n++}`
    // Listening before queueing: the hand-off can arrive before the queue call's reply.
    const handOff = new Promise((resolve) => handed.set(token, resolve))
    if ((await client.floorQueue(key, queue, token)) !== 1) await handOff
    handed.delete(token)
    try {
      return await fn()
    } finally {
      await client.floorRelease(key, queue, token, channel)
    }
  }
  const result = await handOffRounds((fn) => withFloorLock(holder, fn), (fn) => withFloorLock(waiter, fn), {
    warmup,
    maxOps,
    maxMs
  })
  await Promise.all([holder, waiter, sub].map((c) => c.quit()))
  return result
}

/**
 * Which of our lock policies the audit store honours: a bogus policy must be refused (or the
 * store must expose the policy), and a transaction under "always" must run with a lock key
 * held, under "never" without.
 */
const probeLock = async ({ port }) => {
  const mod = await ours()
  const client = await openIoredis(port)
  const admin = await openIoredis(port)
  const oneTransaction = async (store) => {
    let held = false
    await store.transaction(async ({ readLastIntegrity, persist }) => {
      held = (await admin.keys("*lock*")).length > 0
      const record = buildRecord(sampleEvent(), await readLastIntegrity())
      await persist(record)
      return record
    })
    return held
  }
  let validated = false
  let bogus
  try {
    await oneTransaction(mod.createRedisAuditStore({ client, keyPrefix: `${AUDIT_PREFIX}probe:`, lock: "no-such-policy" }))
    bogus = "accepted silently"
  } catch (error) {
    const text = `${error?.message ?? ""} ${error?.option ?? ""} ${error?.reason ?? ""}`
    validated = /lock/i.test(text)
    bogus = `refused (${String(error?.message ?? error).slice(0, 120)})`
  }
  const policies = {}
  for (const policy of ["always", "never", "adaptive"]) {
    await admin.flushall()
    try {
      const store = mod.createRedisAuditStore({ client, keyPrefix: AUDIT_PREFIX, lock: policy })
      const exposes = [store.lock, store.lockPolicy, store.policy].includes(policy)
      const held = await oneTransaction(store)
      const known = validated || exposes
      const honoured = policy === "always" ? held : policy === "never" ? known && !held : known
      policies[policy] = { accepted: true, exposes, lockHeldUncontended: held, honoured }
    } catch (error) {
      policies[policy] = { accepted: false, honoured: false, error: String(error?.message ?? error).slice(0, 200) }
    }
  }
  await admin.flushall()
  await admin.quit()
  await client.quit()
  return { validated, bogus, policies }
}

const modes = { audit, replica, vault, account, memory, lock: lockHandoff, "lock-floor": lockFloor, "probe-lock": probeLock }

const params = await message()
try {
  const result = await modes[params.mode](params)
  process.send({ ok: true, result }, () => process.exit(0))
} catch (error) {
  process.send({ ok: false, error: String(error?.stack ?? error) }, () => process.exit(1))
}
