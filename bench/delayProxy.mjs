// A TCP proxy on 127.0.0.1 that delays every chunk by `delayMs` each way, in order: a
// simulated network round trip (2 x delayMs) between a client and Redis.
import net from "node:net"

/** One direction: chunks written to `to` no earlier than `delayMs` after they arrived. */
const delayed = (from, to, delayMs) => {
  const queue = []
  let timer
  let closed = false
  const flushDue = () => {
    timer = undefined
    const at = performance.now()
    while (queue.length > 0 && queue[0].due <= at) to.write(queue.shift().chunk)
    if (queue.length > 0) timer = setTimeout(flushDue, Math.max(0, queue[0].due - at))
    else if (closed) to.end()
  }
  from.on("data", (chunk) => {
    queue.push({ due: performance.now() + delayMs, chunk })
    timer ??= setTimeout(flushDue, delayMs)
  })
  // A side that closed still has its last bytes delivered (a QUIT's reply), then the other side ends.
  from.on("close", () => {
    closed = true
    if (timer === undefined) to.end()
  })
  from.on("error", () => to.destroy())
}

/** Starts a proxy to `targetPort`; resolves with `{ port, close() }`. */
export const delayProxy = (targetPort, delayMs) =>
  new Promise((resolve, reject) => {
    const sockets = new Set()
    const server = net.createServer((client) => {
      const upstream = net.connect(targetPort, "127.0.0.1")
      client.setNoDelay(true)
      upstream.setNoDelay(true)
      for (const s of [client, upstream]) {
        sockets.add(s)
        s.on("close", () => sockets.delete(s))
      }
      delayed(client, upstream, delayMs)
      delayed(upstream, client, delayMs)
    })
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: server.address().port,
        close: () =>
          new Promise((done) => {
            for (const s of sockets) s.destroy()
            server.close(() => done())
          })
      })
    )
  })
