/**
 * Verify.verifyCheckpoints given checkpoints opened one by one (Checkpoint.open),
 * two of which sign different heads for one size: a forked log.
 */
import { Effect } from "effect"
import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Checkpoint from "../src/Checkpoint.js"
import { verifyCheckpoints } from "../src/Verify.js"
import { uniquePrefix } from "./support/keys.js"
import { append, storeLayer } from "./support/auditChains.js"
import { sharedRedis } from "./support/shared.js"

let url: string
let redis: Redis
let signer: Checkpoint.Signer
beforeAll(async () => {
  url = sharedRedis().url
  redis = new Redis(url)
  signer = (await Effect.runPromise(Checkpoint.generateKey("test.example/log"))).signer
})
afterAll(async () => {
  await redis.quit()
})
const hashAt = async (prefix: string, size: number) =>
  JSON.parse((await redis.lindex(`${prefix}chain`, size - 1))!).auditIntegrity.eventHash as string

describe("verifyCheckpoints with two heads for one size", () => {
  for (const fromCheckpoint of [false, true]) {
    it(`a log that signed two heads for size 5 never verifies (fromCheckpoint: ${fromCheckpoint})`, async () => {
      const forkA = uniquePrefix("ck-forkA")
      const forkB = uniquePrefix("ck-forkB")
      await append(forkA, 5, "history A")
      await append(forkB, 5, "history B")
      // Both notes are genuine signatures of the trusted key (see the failover finding).
      const noteA = Checkpoint.sign(signer, { size: 5, hash: await hashAt(forkA, 5) }).note
      const noteB = Checkpoint.sign(signer, { size: 5, hash: await hashAt(forkB, 5) }).note
      const opened = await Effect.runPromise(
        Effect.all([Checkpoint.open(noteB, signer.verifierKey), Checkpoint.open(noteA, signer.verifierKey)])
      )
      const result = await Effect.runPromise(
        verifyCheckpoints(opened, { fromCheckpoint }).pipe(Effect.provide(storeLayer(forkB)))
      )
      // Chain B holds note B but not note A, a genuine checkpoint at the same size.
      expect(result.valid).toBe(false)
    })
  }
})
