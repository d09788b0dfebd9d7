/**
 * A rewind met on the last attempt the retry schedule allows: RetriesExhausted, with the
 * rewind's gap record written and nothing of the caller's (as the README says).
 */
import { describe, expect, it } from "@effect/vitest"
import { Schedule } from "effect"
import { createRedisAuditStore } from "../src/haechi.js"
import { uniquePrefix } from "./support/keys.js"
import { append, chainOf, PATHS, runtimeFor } from "./support/facadePaths.js"
import { laneLinks } from "./support/laneLinks.js"

const { connect } = laneLinks()

describe("RetriesExhausted after a recorded rewind", () => {
  for (const path of PATHS) {
    it(`${path}: the last attempt met a rewind: RetriesExhausted, the gap record written, nothing of the caller's`, async () => {
      const client = connect()
      const prefix = uniquePrefix(`audit-rewind-budget-${path}`)
      const store = createRedisAuditStore({
        client,
        keyPrefix: prefix,
        startupChecks: "off",
        lock: "never",
        retry: Schedule.recurs(0),
        runtime: runtimeFor(path)
      })
      await append(store, { n: 1 })
      await append(store, { n: 2 })
      await append(store, { n: 3 })
      // An older snapshot comes back: only record 1.
      const [first] = await client.lrange(`${prefix}chain`, 0, 0)
      const integrity = JSON.parse(first!).auditIntegrity
      await client.ltrim(`${prefix}chain`, 0, 0)
      await client.set(`${prefix}head`, JSON.stringify(integrity))
      await client.set(`${prefix}head:hash`, integrity.eventHash)
      let error: unknown
      try {
        await append(store, { n: "mine" })
      } catch (e) {
        error = e
      }
      const chain = await chainOf(client, prefix)
      expect((error as { _tag?: string })._tag).toBe("RetriesExhausted")
      // README: nothing of the caller's written; the rewind's gap record is.
      expect(chain.length).toBe(2)
      expect(JSON.stringify(chain[1])).toContain("chain_rewound")
      expect(JSON.stringify(chain)).not.toContain("mine")
    })
  }
})
