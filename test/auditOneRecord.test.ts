/**
 * One transaction, one record: a FenceConflict thrown by fn after its persist committed
 * is not retried (a re-run would append a second record); hostile but legal JSON is
 * stored as the verifier accepts it; a getter whose value changes between reads is refused.
 */
import { describe, expect, it } from "@effect/vitest"
import { FenceConflict } from "../src/Errors.js"
import { buildNextRecord, verifyRecords } from "../src/Chain.js"
import { createRedisAuditStore, type Integrity } from "../src/haechi.js"
import { uniquePrefix } from "./support/keys.js"
import { PATHS, runtimeFor, chainOf } from "./support/facadePaths.js"
import { laneLinks } from "./support/laneLinks.js"

const { connect } = laneLinks()
const settled = async (promise: Promise<unknown>) => {
  try {
    return { value: await promise }
  } catch (error) {
    const e = error as { _tag?: string; message?: string }
    return { error: e?._tag ?? String(error) }
  }
}

describe("one transaction, one record", () => {
  for (const path of PATHS) {
    it(`${path}: a FenceConflict thrown by fn after its persist committed does not append a second record`, async () => {
      const client = connect()
      const prefix = uniquePrefix(`audit-after-commit-${path}`)
      const store = createRedisAuditStore({
        client,
        keyPrefix: prefix,
        startupChecks: "off",
        runtime: runtimeFor(path)
      })
      let runs = 0
      const outcome = await settled(
        store.transaction(async ({ readLastIntegrity, persist }) => {
          runs += 1
          const record = buildNextRecord({ type: "x", run: runs }, (await readLastIntegrity()) as Integrity | null)
          await persist(record)
          // e.g. an anchor write or another store's call inside fn that lost a race
          if (runs === 1) throw new FenceConflict({ store: "audit", prefix: "elsewhere", expected: "" })
          return record
        })
      )
      const chain = await chainOf(client, prefix)
      expect({ runs, records: chain.length }).toEqual({ runs: 1, records: 1 })
      expect(outcome).toEqual({ error: "FenceConflict" })
    })
  }
})

describe("verifyRecords full hashes what is stored", () => {
  for (const path of PATHS) {
    it(`${path}: a record whose value changes between reads is not stored with a hash that does not verify`, async () => {
      const client = connect()
      const prefix = uniquePrefix(`audit-getter-${path}`)
      const store = createRedisAuditStore({
        client,
        keyPrefix: prefix,
        startupChecks: "off",
        verifyRecords: "full",
        runtime: runtimeFor(path)
      })
      const outcome = await settled(
        store.transaction(async ({ readLastIntegrity, persist }) => {
          let reads = 0
          const details = {}
          Object.defineProperty(details, "n", { enumerable: true, get: () => ++reads })
          const record = buildNextRecord({ type: "x", details }, (await readLastIntegrity()) as Integrity | null)
          await persist(record)
        })
      )
      const chain = await chainOf(client, prefix)
      const verdict = verifyRecords(chain as never)
      // Either refused (nothing stored) or stored verifiably.
      expect({ outcome, valid: chain.length === 0 || verdict.valid }).toEqual({
        outcome: chain.length === 0 ? { error: "InvalidRecord" } : { value: undefined },
        valid: true
      })
    })
  }
})

describe("hostile but legal JSON round-trips and verifies", () => {
  for (const path of PATHS) {
    it(`${path}: __proto__ keys, 1e21, -0, 5e-324, U+2028, non-characters`, async () => {
      const client = connect()
      const prefix = uniquePrefix(`audit-hostile-${path}`)
      const store = createRedisAuditStore({
        client,
        keyPrefix: prefix,
        startupChecks: "off",
        verifyRecords: "full",
        runtime: runtimeFor(path)
      })
      const events = [
        JSON.parse('{"__proto__":{"polluted":true},"type":"a","constructor":{"prototype":1}}'),
        { type: "n", big: 1e21, neg: -0, tiny: 5e-324, max: Number.MAX_VALUE, s: "\u2028\u2029\uffff\ufffe\u0000" },
        JSON.parse('{"type":"k","":{"__proto__":[1,{"__proto__":null}]},"10":1,"9":2,"a\\u0000b":3}')
      ]
      for (const event of events) {
        const outcome = await settled(
          store.transaction(async ({ readLastIntegrity, persist }) => {
            await persist(buildNextRecord(event, (await readLastIntegrity()) as Integrity | null))
          })
        )
        expect(outcome).toEqual({ value: undefined })
      }
      const raw = await client.lrange(`${prefix}chain`, 0, -1)
      const parsed = raw.map((j) => JSON.parse(j))
      expect(verifyRecords(parsed).valid).toBe(true)
      expect(parsed.length).toBe(3)
      expect(({} as Record<string, unknown>).polluted).toBeUndefined()
    })
  }
})
