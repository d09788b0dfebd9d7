/**
 * Per-test key prefixes so tests sharing one Redis (or one cluster) never collide.
 * Every call returns a new prefix (48 random bits), also across processes and runs.
 */
import { randomBytes } from "node:crypto"

// Braces would change the cluster hash tag, whitespace just hurts readability in redis-cli.
const clean = (name: string) => name.replace(/[{}\s]+/g, "_")
const random = () => randomBytes(6).toString("hex")

/** `t:<name>:<random>:` — for standalone Redis. */
export const uniquePrefix = (name: string): string => `t:${clean(name)}:${random()}:`

/**
 * `{t:<name>:<random>}:` — hash-tagged, so every key built from it lands in the same
 * cluster slot and multi-key commands / Lua scripts work in Redis Cluster.
 */
export const uniqueClusterPrefix = (name: string): string => `{t:${clean(name)}:${random()}}:`
