/**
 * A loopback TCP proxy in front of ONE Redis (standalone) for deterministic fault injection.
 * (Cluster redirects carry real node addresses, so clients would bypass the proxy there.)
 *
 * Guarantees:
 * - bytes are never reordered, and a byte stream is never resumed with a gap: whenever
 *   the proxy discards bytes it also destroys that connection;
 * - every fault applies to the proxy as a whole and takes effect immediately;
 * - stop() closes the listener and every connection and resolves when closed.
 *
 * Faults (each also documented on the method/mode below):
 * - "forward"   normal operation;
 * - "stall"     bytes in both directions are held in order and delivered when the mode
 *               leaves "stall" (a network stall that heals; the server may still run
 *               commands sent during the stall, later);
 * - "blackhole" bytes in both directions are discarded (a partition); connections that
 *               lost bytes are destroyed when the mode leaves "blackhole", so commands
 *               sent during the blackhole were never seen by the server;
 * - "refuse"    new connections are reset right after accept; existing ones keep working;
 * - "dropReplies" bytes client->server are delivered, server->client discarded, the
 *               sockets stay open (Redis runs every command, no reply ever comes);
 *               connections that lost bytes are destroyed when the mode leaves it;
 * - cutAfterNextRequest(): one-shot, see below;
 * - delayReplies(ms): every server->client chunk is delivered `ms` later (order kept);
 * - freeze() / thaw(): = "stall" / "forward": a frozen link (no bytes either way, sockets
 *   open) that heals, so replies held meanwhile arrive after the client gave up;
 * - freezeWhen(text): one-shot, freezes at the first request that contains `text`.
 */
import * as net from "node:net"

export type ProxyMode = "forward" | "stall" | "blackhole" | "refuse" | "dropReplies"

export interface TcpProxy {
  readonly host: "127.0.0.1"
  readonly port: number
  readonly url: string
  /** Switch fault mode (see the module comment). */
  setMode(mode: ProxyMode): void
  /**
   * One-shot: the next client->server chunk (on any connection) is forwarded to Redis;
   * as soon as Redis starts replying on that connection the reply bytes are discarded
   * and both sides are closed. So Redis executed the command but the client never
   * hears the reply. Arm it only after the client is connected and ready (clients send
   * handshake commands such as INFO / CLIENT SETINFO on connect).
   */
  cutAfterNextRequest(): void
  /** Delay each server->client chunk by `ms` (0 = off). */
  delayReplies(ms: number): void
  /** = setMode("stall"): nothing moves either way, every socket stays open. */
  freeze(): void
  /** = setMode("forward"): what was held is delivered, in order. */
  thaw(): void
  /**
   * One-shot: the first client->server chunk (on any connection) containing `text`
   * (case-insensitive: ioredis sends command names in lower case) freezes the proxy. With `passRequest` that chunk still reaches Redis first (the
   * command runs, its reply is held); without, it is held too (Redis never sees it
   * until `thaw`). Resolves when it has frozen.
   */
  freezeWhen(text: string, options?: { readonly passRequest?: boolean }): Promise<void>
  /** = setMode("blackhole"). */
  dropAll(): void
  /** = setMode("forward"). */
  resume(): void
  /** Destroy all current client and upstream connections (clients see a closed socket). */
  closeAllConnections(): void
  /** Number of live client connections. */
  connectionCount(): number
  stop(): Promise<void>
}

interface Item {
  readonly at: number
  readonly data: Buffer
}

interface Conn {
  readonly client: net.Socket
  readonly upstream: net.Socket
  readonly toServer: Array<Item>
  readonly toClient: Array<Item>
  timer: NodeJS.Timeout | undefined
  lost: boolean // discarded bytes in blackhole mode
  cut: boolean // armed by cutAfterNextRequest
}

export async function tcpProxy(targetPort: number, targetHost = "127.0.0.1"): Promise<TcpProxy> {
  let mode: ProxyMode = "forward"
  let replyDelayMs = 0
  let cutArmed = false
  let freezeArmed: { readonly text: string; readonly passRequest: boolean; readonly done: () => void } | undefined
  const conns = new Set<Conn>()

  const destroy = (c: Conn) => {
    conns.delete(c)
    clearTimeout(c.timer)
    c.client.destroy()
    c.upstream.destroy()
  }

  // Deliver queued items in order; held while stalled, re-armed with a timer for delays.
  const pump = (c: Conn) => {
    clearTimeout(c.timer)
    c.timer = undefined
    if (mode === "stall" || !conns.has(c)) return
    while (c.toServer.length > 0) c.upstream.write(c.toServer.shift()!.data)
    while (c.toClient.length > 0) {
      const wait = c.toClient[0]!.at - Date.now()
      if (wait > 0) {
        c.timer = setTimeout(() => pump(c), wait)
        return
      }
      c.client.write(c.toClient.shift()!.data)
    }
  }

  const server = net.createServer((client) => {
    if (mode === "refuse") {
      client.on("error", () => {})
      client.resetAndDestroy()
      return
    }
    const upstream = net.connect({ port: targetPort, host: targetHost })
    const c: Conn = { client, upstream, toServer: [], toClient: [], timer: undefined, lost: false, cut: false }
    conns.add(c)
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    for (const s of [client, upstream]) {
      s.on("error", () => destroy(c))
      s.on("close", () => destroy(c))
    }
    client.on("data", (data) => {
      if (mode === "blackhole") return void (c.lost = true)
      const freeze = freezeArmed
      if (freeze !== undefined && mode === "forward" && data.toString("latin1").toLowerCase().includes(freeze.text)) {
        freezeArmed = undefined
        if (freeze.passRequest) {
          pump(c)
          c.upstream.write(data)
          setMode("stall")
        } else {
          setMode("stall")
          c.toServer.push({ at: 0, data })
        }
        return freeze.done()
      }
      if (cutArmed) {
        cutArmed = false
        c.cut = true
      }
      c.toServer.push({ at: 0, data })
      pump(c)
    })
    upstream.on("data", (data) => {
      if (c.cut) return destroy(c) // the server has executed and answered: drop reply + connection
      if (mode === "blackhole" || mode === "dropReplies") return void (c.lost = true)
      c.toClient.push({ at: Date.now() + replyDelayMs, data })
      pump(c)
    })
  })
  server.unref()
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve())
  })
  const { port } = server.address() as net.AddressInfo

  function setMode(next: ProxyMode) {
    const keepsLoss = next === "blackhole" || (next === "dropReplies" && mode === "dropReplies")
    mode = next
    for (const c of [...conns]) {
      if (!keepsLoss && c.lost) destroy(c)
      else pump(c)
    }
  }
  const closeAllConnections = () => {
    for (const c of [...conns]) destroy(c)
  }

  return {
    host: "127.0.0.1",
    port,
    url: `redis://127.0.0.1:${port}`,
    setMode,
    cutAfterNextRequest: () => void (cutArmed = true),
    delayReplies: (ms) => void (replyDelayMs = ms),
    freeze: () => setMode("stall"),
    thaw: () => setMode("forward"),
    freezeWhen: (text, options = {}) =>
      new Promise<void>((done) => {
        freezeArmed = { text: text.toLowerCase(), passRequest: options.passRequest === true, done }
      }),
    dropAll: () => setMode("blackhole"),
    resume: () => setMode("forward"),
    closeAllConnections,
    connectionCount: () => conns.size,
    stop: () =>
      new Promise<void>((resolve) => {
        closeAllConnections()
        server.close(() => resolve())
      })
  }
}
