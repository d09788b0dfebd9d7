// A replica that dies mid-transaction (spawned and SIGKILLed by ./replica.ts).
//
// Plain Node + ioredis, no build step: it does what a writer in the middle of a
// transaction has done when it crashes. It takes the store's lock the way
// haechi-store-redis does (SET <prefix>lock <token> NX PX ttl), reads the head (audit) or
// the version (vault), builds a valid write on it, and sends only the FIRST HALF of the
// script call (EVAL audit_append / vault_apply) on a raw socket. Then it prints
// `READY {"payload", "lockedAt"}` and waits to be killed.
//
// argv[2]: JSON { store: "audit" | "vault", port, prefix, ttlMs }
import { createHash, randomBytes } from "node:crypto"
import * as net from "node:net"
import { Redis } from "ioredis"
import { luaSource } from "../../scripts/luaSource.mjs"

const { store, port, prefix, ttlMs } = JSON.parse(process.argv[2])
const redis = new Redis(port, "127.0.0.1")
const token = randomBytes(16).toString("hex")

if ((await redis.set(`${prefix}lock`, token, "PX", ttlMs, "NX")) !== "OK") {
  console.error("the lock is held by someone else")
  process.exit(2)
}
const lockedAt = Date.now()

// The script as Redis runs it (its shared parts spliced in).
const lua = luaSource
const resp = (args) =>
  Buffer.concat([
    Buffer.from(`*${args.length}\r\n`),
    ...args.map((a) => {
      const b = Buffer.from(String(a), "utf8")
      return Buffer.concat([Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n")])
    })
  ])

// haechi's json-stable-v1 canonical form (see /work/shared/docs/haechi-contracts.md).
const canonical = (v) =>
  Array.isArray(v)
    ? `[${v.map(canonical).join(",")}]`
    : v !== null && typeof v === "object"
      ? `{${Object.keys(v)
          .sort()
          .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
          .join(",")}}`
      : JSON.stringify(v)

let payload
let command
if (store === "audit") {
  const headJson = await redis.get(`${prefix}head`)
  const previous = headJson ? JSON.parse(headJson) : null
  payload = `crashed-${token.slice(0, 8)}`
  const integrity = {
    alg: "sha256",
    canonicalization: "json-stable-v1",
    sequence: previous ? previous.sequence + 1 : 1,
    previousHash: previous ? previous.eventHash : null
  }
  const record = { type: "fault-test", id: payload, auditIntegrity: integrity }
  integrity.eventHash = createHash("sha256").update(canonical(record)).digest("base64url")
  command = resp([
    "EVAL",
    lua("audit_append"),
    3,
    `${prefix}head:hash`,
    `${prefix}chain`,
    `${prefix}head`,
    integrity.previousHash ?? "",
    JSON.stringify(record),
    JSON.stringify(integrity),
    integrity.eventHash,
    integrity.sequence
  ])
} else {
  const version = (await redis.get(`${prefix}version`)) ?? ""
  await redis.hgetall(`${prefix}tokens`)
  payload = `crashed-${token.slice(0, 8)}`
  const id = `tok_email_${randomBytes(8).toString("hex")}`
  const now = Date.now()
  const record = {
    type: "email",
    createdAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    metadata: { fingerprint: "crashed" },
    envelope: { alg: "test", iv: "", ciphertext: Buffer.from(payload).toString("base64url") },
    aad: { purpose: "token-vault", token: id, type: "email", context: {} }
  }
  command = resp([
    "EVAL",
    lua("vault_apply"),
    3,
    `${prefix}version`,
    `${prefix}tokens`,
    `${prefix}log`,
    version,
    randomBytes(12).toString("base64url"),
    JSON.stringify([id]),
    1000,
    1,
    id,
    JSON.stringify(record)
  ])
}

const socket = net.connect({ port, host: "127.0.0.1" }, () => {
  socket.write(command.subarray(0, Math.floor(command.length / 2)), () => {
    process.stdout.write(`READY ${JSON.stringify({ payload, lockedAt })}\n`)
  })
})
socket.on("error", () => {})
setInterval(() => {}, 60_000)
