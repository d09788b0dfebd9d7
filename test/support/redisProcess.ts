/**
 * Throwaway, real `redis-server` processes for tests (never a mock).
 * Public entry point: ./redisServer.ts (re-exports this file).
 *
 * Guarantees:
 * - every server listens on a fresh free loopback port (bind races are retried) and
 *   owns a private temp dir under os.tmpdir(), removed by stop();
 * - startRedis()/restart() resolve only once *our* process (checked by pid) answers
 *   PING with +PONG; Redis answers -LOADING until the AOF/RDB is fully loaded;
 * - stop()/kill9() resolve only after the child has exited;
 * - no child outlives this Node process: all live children are SIGKILLed (and their
 *   dirs removed) on process "exit", on SIGINT/SIGTERM/SIGHUP (vitest terminates fork
 *   workers with SIGTERM, which skips "exit" handlers) and when a forked worker loses
 *   its parent (IPC "disconnect"). Only a SIGKILL of this process itself can leak them.
 */
import { spawn, type ChildProcess } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface RedisServerOptions {
  /** `appendonly yes` + `appendfsync always` (default false: no AOF). */
  readonly appendonly?: boolean
  /** Keep Redis' default RDB `save` schedule instead of `save ""` (default false). */
  readonly rdb?: boolean
  /** `cluster-enabled yes` with its own nodes.conf and a free cluster bus port. */
  readonly cluster?: boolean
  /**
   * Run as Redis Sentinel (`redis-server <conf> --sentinel`); `config` then carries the
   * `sentinel monitor ...` lines. Sentinel rewrites its conf file, which lives in `dir`.
   */
  readonly sentinel?: boolean
  /** Extra redis.conf lines, e.g. `["maxmemory 10mb", "cluster-node-timeout 2000"]`. */
  readonly config?: ReadonlyArray<string>
  /** How long start/restart may take before failing (default 10 000 ms). */
  readonly startTimeoutMs?: number
}

export interface RedisServer {
  readonly host: "127.0.0.1"
  readonly port: number
  readonly url: string
  /** Private working dir (AOF, RDB, nodes.conf, redis.log). */
  readonly dir: string
  /** pid of the current process (changes on restart). */
  readonly pid: number
  /** SIGTERM, await exit, remove dir. Idempotent. */
  stop(): Promise<void>
  /** SIGKILL (no shutdown save/fsync), await exit. The dir is kept for restart(). */
  kill9(): Promise<void>
  /** (Stop if running, then) start again on the same port, dir and config; resolves when loaded. */
  restart(): Promise<void>
}

// ---------------------------------------------------------------------------
// child tracking: nothing may outlive the test process

const live = new Map<ChildProcess, string>() // child -> dir to clean up
let hooksInstalled = false

function killAllSync(): void {
  for (const [child, dir] of live) {
    try {
      child.kill("SIGKILL")
    } catch {}
    try {
      rmSync(dir, { recursive: true, force: true })
    } catch {}
  }
  live.clear()
}

function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  // prepend: vitest's own "exit"/SIGINT listeners call process.exit() synchronously,
  // which would skip any listener registered after them.
  process.prependListener("exit", killAllSync)
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = () => {
      killAllSync()
      // If we were the only listener, restore the default behaviour (terminate).
      if (process.listenerCount(sig) === 1) {
        process.off(sig, onSignal)
        process.kill(process.pid, sig)
      }
    }
    process.prependListener(sig, onSignal)
  }
  // A forked worker whose parent (the vitest main process) died loses its IPC channel.
  if (process.send !== undefined) process.once("disconnect", killAllSync)
}

// ---------------------------------------------------------------------------
// small network helpers

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/** A port that was free on 127.0.0.1 a moment ago (bind :0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once("error", reject)
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

/**
 * A port where nothing listens, for "connection refused" tests. It lies below Linux's
 * ephemeral range (32768+), where `freePort` and every outgoing connection take theirs:
 * a server another test starts cannot land on it, and a client that keeps reconnecting
 * cannot connect to itself (a TCP self-connect, when the kernel picks the very port the
 * client dials as its local one). Free a moment ago: checked by binding it.
 */
export async function refusedPort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 10_000)
    const bound = await new Promise<boolean>((resolve) => {
      const srv = net.createServer()
      srv.unref()
      srv.once("error", () => resolve(false))
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)))
    })
    if (bound) return port
  }
  throw new Error("no free port between 20000 and 30000 on 127.0.0.1")
}

/** An error reply (`-ERR ...`) from Redis. */
export class RedisReplyError extends Error {
  override readonly name = "RedisReplyError"
}

export type RespValue = string | number | null

/**
 * Send ONE command on a fresh raw TCP connection and return its reply.
 * Supports simple-string, error (rejects with RedisReplyError), integer and bulk
 * replies — enough for PING / INFO / CLUSTER INFO|NODES|FAILOVER / SET / GET.
 */
export function redisCommand(
  port: number,
  args: ReadonlyArray<string | number>,
  opts: { readonly host?: string; readonly timeoutMs?: number } = {}
): Promise<RespValue> {
  const payload = `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join("")
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0)
    let settled = false
    const sock = net.connect({ port, host: opts.host ?? "127.0.0.1" })
    const finish = (err: Error | undefined, value?: RespValue) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      sock.destroy()
      if (err) reject(err)
      else resolve(value ?? null)
    }
    const timer = setTimeout(
      () => finish(new Error(`redis ${port}: no reply to ${args[0]} within ${opts.timeoutMs ?? 2000} ms`)),
      opts.timeoutMs ?? 2000
    )
    sock.on("error", (e) => finish(e))
    sock.on("close", () => finish(new Error(`redis ${port}: connection closed before reply`)))
    sock.on("connect", () => sock.write(payload))
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk])
      const eol = buf.indexOf("\r\n")
      if (eol < 0) return
      const line = buf.toString("utf8", 1, eol)
      switch (String.fromCharCode(buf[0] ?? 0)) {
        case "+":
          return finish(undefined, line)
        case "-":
          return finish(new RedisReplyError(line))
        case ":":
          return finish(undefined, Number(line))
        case "$": {
          const len = Number(line)
          if (len < 0) return finish(undefined, null)
          if (buf.length < eol + 2 + len + 2) return // wait for the rest
          return finish(undefined, buf.toString("utf8", eol + 2, eol + 2 + len))
        }
        default:
          return finish(new Error(`redis ${port}: unsupported reply type in ${JSON.stringify(line)}`))
      }
    })
  })
}

/** Parse `key:value` lines of INFO / CLUSTER INFO into a record. */
export function parseInfo(text: RespValue): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of String(text ?? "").split("\r\n")) {
    const i = line.indexOf(":")
    if (i > 0 && !line.startsWith("#")) out[line.slice(0, i)] = line.slice(i + 1)
  }
  return out
}

// ---------------------------------------------------------------------------
// standalone server

const exited = (child: ChildProcess) => child.pid === undefined || child.exitCode !== null || child.signalCode !== null

function waitExit(child: ChildProcess): Promise<void> {
  return exited(child) ? Promise.resolve() : new Promise((r) => child.once("exit", () => r()))
}

function logTail(dir: string): string {
  try {
    return readFileSync(join(dir, "redis.log"), "utf8").trim().split("\n").slice(-8).join("\n")
  } catch {
    return "(no redis.log)"
  }
}

function spawnRedis(dir: string, sentinel: boolean): ChildProcess {
  installExitHooks()
  const args = [join(dir, "redis.conf"), ...(sentinel ? ["--sentinel"] : [])]
  const child = spawn("redis-server", args, { stdio: "ignore" })
  child.on("error", () => {}) // ENOENT etc. surfaces as an early exit in waitReady
  // Not unref()'d: stop()/kill9() must be able to await the exit event.
  live.set(child, dir)
  child.once("exit", () => live.delete(child))
  return child
}

/** Resolve once `child` answers PING with PONG on `port`; reject if it exits or times out. */
async function waitReady(child: ChildProcess, port: number, dir: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (exited(child)) {
      throw new Error(`redis-server on port ${port} exited during startup:\n${logTail(dir)}`)
    }
    const pong = await redisCommand(port, ["PING"], { timeoutMs: 250 }).catch(() => undefined)
    if (pong === "PONG") {
      // Something answered; make sure it is our process and not a port-race winner.
      const info = parseInfo(await redisCommand(port, ["INFO", "server"]).catch(() => null))
      if (info["process_id"] === String(child.pid)) return
    }
    if (Date.now() > deadline) {
      throw new Error(`redis-server on port ${port} not ready after ${timeoutMs} ms:\n${logTail(dir)}`)
    }
    await sleep(10)
  }
}

/** Start a fresh redis-server on a free loopback port; resolves once it answers PING. */
export async function startRedis(opts: RedisServerOptions = {}): Promise<RedisServer> {
  const timeoutMs = opts.startTimeoutMs ?? 10_000
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const busPort = opts.cluster ? await freePort() : undefined
    const dir = mkdtempSync(join(tmpdir(), `haechi-redis-${port}-`))
    const conf = [
      `port ${port}`,
      `bind 127.0.0.1`,
      `protected-mode no`,
      `daemonize no`,
      `dir "${dir}"`,
      `logfile "${join(dir, "redis.log")}"`,
      ...(opts.rdb ? [] : [`save ""`]),
      ...(opts.appendonly ? [`appendonly yes`, `appendfsync always`] : [`appendonly no`]),
      ...(busPort ? [`cluster-enabled yes`, `cluster-config-file nodes.conf`, `cluster-port ${busPort}`] : []),
      ...(opts.config ?? [])
    ]
    writeFileSync(join(dir, "redis.conf"), conf.join("\n") + "\n")
    const sentinel = opts.sentinel ?? false
    let child = spawnRedis(dir, sentinel)
    try {
      await waitReady(child, port, dir, timeoutMs)
    } catch (e) {
      child.kill("SIGKILL")
      await waitExit(child)
      rmSync(dir, { recursive: true, force: true })
      if (attempt >= 5) throw e
      continue // most likely lost a bind race for the port: try another one
    }
    return makeServer(
      port,
      dir,
      () => child,
      (c) => (child = c),
      timeoutMs,
      sentinel
    )
  }
}

function makeServer(
  port: number,
  dir: string,
  current: () => ChildProcess,
  replace: (c: ChildProcess) => void,
  timeoutMs: number,
  sentinel: boolean
): RedisServer {
  let stopped = false
  const signal = async (sig: NodeJS.Signals) => {
    const child = current()
    if (!exited(child)) child.kill(sig)
    await waitExit(child)
  }
  return {
    host: "127.0.0.1",
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    get pid() {
      return current().pid ?? -1
    },
    async stop() {
      if (stopped) return
      stopped = true
      await signal("SIGTERM")
      rmSync(dir, { recursive: true, force: true })
    },
    kill9: () => signal("SIGKILL"),
    async restart() {
      if (stopped) throw new Error(`redis ${port}: restart() after stop()`)
      await signal("SIGTERM")
      // The same port is required; retry briefly in case it is still being released.
      for (let attempt = 1; ; attempt++) {
        const child = spawnRedis(dir, sentinel)
        replace(child)
        try {
          return await waitReady(child, port, dir, timeoutMs)
        } catch (e) {
          child.kill("SIGKILL")
          await waitExit(child)
          if (attempt >= 5) throw e
          await sleep(100)
        }
      }
    }
  }
}
