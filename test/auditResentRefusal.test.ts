/**
 * A re-sent append answered with an error reply (its first send committed) is looked up
 * by commit id, not reported as a command that did not run; a persist in flight when the
 * deadline passes rejects with the store's typed failure, not Effect's interruption.
 */
import { describe, expect, it } from "@effect/vitest"
import { randomBytes } from "node:crypto"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, type Integrity } from "../src/haechi.js"
import { append, chainOf, PATHS, runtimeFor } from "./support/facadePaths.js"
import { uniquePrefix } from "./support/keys.js"
import { laneLinks, until } from "./support/laneLinks.js"

const { connect, proxied } = laneLinks()

const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    const e = error as { _tag?: string; reply?: string }
    return { error: e?._tag ?? (error as Error)?.constructor?.name ?? String(error), reply: e?.reply?.split(" ")[0] }
  }
}

describe("a re-sent append answered with an error reply", () => {
  for (const path of PATHS) {
    it(`${path}: a record that committed on its first send is not reported as a command that did not run`, async () => {
      const admin = connect()
      const user = `resent_${randomBytes(4).toString("hex")}`
      await admin.call("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all")
      try {
        const { proxy, client } = await proxied({
          username: user,
          password: "pw",
          retryStrategy: () => 200
        })
        const prefix = uniquePrefix(`audit-resend-error-${path}`)
        const store = createRedisAuditStore({
          client,
          keyPrefix: prefix,
          startupChecks: "off",
          lock: "never",
          runtime: runtimeFor(path)
        })
        await append(store, { warm: true })
        const outcome = settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            const head = (await readLastIntegrity()) as Integrity | null
            proxy.cutAfterNextRequest()
            await persist(buildNextRecord({ ours: 1 }, head))
            return "done"
          })
        )
        // The append ran (its reply cut); before ioredis reconnects and re-sends it, the user loses EVALSHA.
        await until(
          () => admin.llen(`${prefix}chain`),
          (n) => n === 2
        )
        await admin.call("ACL", "SETUSER", user, "-evalsha", "-eval")
        const result = await outcome
        const chain = await chainOf(admin, prefix)
        expect(chain.map(({ auditIntegrity: _, ...event }) => event)).toEqual([{ warm: true }, { ours: 1 }])
        // It committed: resolved, or at the least CommitOutcomeUnknown, never "did not run".
        expect(result).not.toMatchObject({ error: "RedisCommandFailed" })
      } finally {
        await admin.call("ACL", "DELUSER", user)
      }
    })
  }
})

describe("a persist in flight when the deadline passes", () => {
  for (const path of PATHS) {
    it(`${path}: the persist fn awaited rejects with a typed store error (CommitOutcomeUnknown), not an untyped interruption`, async () => {
      const admin = connect()
      const { proxy, client } = await proxied()
      const prefix = uniquePrefix(`audit-inflight-persist-${path}`)
      const store = createRedisAuditStore({
        client,
        keyPrefix: prefix,
        startupChecks: "off",
        timeout: 200,
        runtime: runtimeFor(path)
      })
      await append(store, { warm: true })
      proxy.delayReplies(400)
      let persisted: Promise<unknown> | undefined
      const outcome = await settled(
        store.transaction(async ({ readLastIntegrity, persist }) => {
          const head = (await readLastIntegrity()) as Integrity | null // cached: no round trip
          persisted = settled(persist(buildNextRecord({ ours: 1 }, head)))
          return persisted
        })
      )
      const persistOutcome = (await persisted) as { error?: string; name?: string }
      await new Promise((r) => setTimeout(r, 500))
      expect(outcome).toMatchObject({ error: "CommitOutcomeUnknown" })
      expect(await admin.llen(`${prefix}chain`)).toBe(2)
      expect(persistOutcome).toMatchObject({ error: "CommitOutcomeUnknown" })
    })
  }
})
