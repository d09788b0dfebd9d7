/**
 * A replica's seen head never goes back: a stale conflict reply settled after another of
 * its operations committed must not take `seen` back, or a later rewind losing that
 * acknowledged commit would go unreported.
 */
import { describe, expect, it } from "@effect/vitest"
import { Schedule } from "effect"
import { type Redis } from "ioredis"
import { buildNextRecord } from "../src/Chain.js"
import { createRedisAuditStore, type Integrity } from "../src/haechi.js"
import { uniquePrefix } from "./support/keys.js"
import { append, chainOf, PATHS, runtimeFor } from "./support/facadePaths.js"
import { laneLinks } from "./support/laneLinks.js"

const { connect } = laneLinks()

const headOf = async (client: Redis, prefix: string) => JSON.parse((await client.get(`${prefix}head`))!) as Integrity

describe("a replica's seen head never goes back", () => {
  for (const path of PATHS) {
    it(`${path}: its own acknowledged commit, then lost to a rewind, is reported (onRewind "fail")`, async () => {
      const admin = connect()
      const prefix = uniquePrefix(`audit-seen-regress-${path}`)
      const options = { keyPrefix: prefix, startupChecks: "off", lock: "never", onRewind: "fail" } as const
      const ours = createRedisAuditStore({
        ...options,
        client: connect(),
        retry: Schedule.recurs(0),
        runtime: runtimeFor(path)
      })
      const other = createRedisAuditStore({ ...options, client: connect() })
      for (let i = 0; i < 8; i++) await append(ours, { n: i + 1 })
      const head8 = await headOf(admin, prefix)
      await append(other, { n: 9 }) // ours still caches head 8
      const head9 = await headOf(admin, prefix)
      // Two sinks of this replica: the first builds on its cached (stale) head 8, the second on 9.
      const stale = ours.transaction(async ({ persist }) => {
        await persist(buildNextRecord({ sink: "stale" }, head8))
      })
      const fresh = ours.transaction(async ({ persist }) => {
        await persist(buildNextRecord({ sink: "fresh" }, head9))
      })
      const outcomes = await Promise.allSettled([stale, fresh])
      expect(outcomes.map((o) => o.status)).toEqual(["rejected", "fulfilled"]) // stale: RetriesExhausted
      const chain = await chainOf(admin, prefix)
      expect(chain.length).toBe(10)
      // A failover to a replica that lagged loses record 10 (acknowledged to "fresh").
      const [nine] = await admin.lrange(`${prefix}chain`, 8, 8)
      await admin.ltrim(`${prefix}chain`, 0, 8)
      await admin.set(`${prefix}head`, JSON.stringify(JSON.parse(nine!).auditIntegrity))
      await admin.set(`${prefix}head:hash`, head9.eventHash)
      let error: unknown
      try {
        await append(ours, { after: "failover" })
      } catch (e) {
        error = e
      }
      expect((error as { _tag?: string } | undefined)?._tag).toBe("ChainRewound")
    })
  }
})
