/**
 * What the lock needs to know of a client's connection, with one pair of listeners per
 * client object however many lock handles share it (a listener per handle warned past
 * ten): how many times its connection closed so far, and who to tell when it ends.
 */
import type { RedisConnection } from "../../RedisClient.js"

interface Life {
  /** Connections closed so far: a command answered across a close may have been sent twice. */
  closes: number
  readonly onEnd: Set<() => void>
}

const lives = new WeakMap<object, Life>()

const lifeOf = (client: RedisConnection): Life => {
  let life = lives.get(client)
  if (life === undefined) {
    const made: Life = { closes: 0, onEnd: new Set() }
    client.on("close", () => void (made.closes += 1))
    client.on("end", () => made.onEnd.forEach((f) => f()))
    lives.set(client, (life = made))
  }
  return life
}

/** How many times `client`'s connection has closed since the lock first looked (a Cluster's own closes only). */
export const closesOf = (client: RedisConnection): number => lifeOf(client).closes

/** Calls `f` each time `client` ends (quit, or gave up reconnecting) until the returned function is called. */
export const onClientEnd = (client: RedisConnection, f: () => void): (() => void) => {
  const { onEnd } = lifeOf(client)
  onEnd.add(f)
  return () => void onEnd.delete(f)
}
