/**
 * The demo's vault driver: it mutates the vault the way haechi's core does (prune
 * expired records over the whole vault on every mutation, then set), one mutation at a
 * time per replica, as the core queues its own.
 */
import { createCipheriv, createHash, randomBytes } from "node:crypto"
import * as Effect from "effect/Effect"
import type { StoreError, TokenStore } from "haechi-store-effect"

type TokenRecord = TokenStore.TokenRecord
type MutableView = TokenStore.MutableView

export interface TokenizeOutcome {
  readonly token: string
  readonly reused: boolean
  readonly pruned: number
}

const isExpired = (record: TokenRecord, now: number): boolean =>
  typeof record.expiresAt === "string" && Date.parse(record.expiresAt) <= now

/** A replica's vault driver over `store`, encrypting values with `key` (AES-256-GCM). */
export const makeVaultDriver = (store: TokenStore.TokenStoreShape, key: Buffer) =>
  Effect.map(Effect.makeSemaphore(1), (semaphore) => ({
    /**
     * haechi's tokenize: prune expired records over the whole vault, then reuse the live
     * token of the same value (extending its expiry in place, then `set`) or create one.
     */
    tokenize: (value: string, type: string, ttlMs: number): Effect.Effect<TokenizeOutcome, StoreError> =>
      store
        .mutate((view: MutableView) =>
          Effect.sync((): TokenizeOutcome => {
            const now = Date.now()
            let prunedHere = 0
            for (const [token, record] of view.entries()) {
              if (isExpired(record, now)) {
                view.delete(token)
                prunedHere++
              }
            }
            const fingerprint = createHash("sha256").update(`${type}:${value}`).digest("hex").slice(0, 32)
            const expiresAt = new Date(now + ttlMs).toISOString()
            const live = view
              .entries()
              .find(
                ([, record]) => (record.metadata as { fingerprint?: string } | undefined)?.fingerprint === fingerprint
              )
            if (live !== undefined) {
              const existing = view.get(live[0])!
              existing.expiresAt = expiresAt
              view.set(live[0], existing)
              return { token: live[0], reused: true, pruned: prunedHere }
            }
            const token = `tok_${type}_${randomBytes(8).toString("hex")}`
            const iv = randomBytes(12)
            const aad = `${token}:${type}`
            const cipher = createCipheriv("aes-256-gcm", key, iv)
            cipher.setAAD(Buffer.from(aad))
            const ciphertext = Buffer.concat([cipher.update(value, "utf8"), cipher.final()])
            view.set(token, {
              type,
              createdAt: new Date(now).toISOString(),
              expiresAt,
              metadata: { fingerprint },
              envelope: {
                alg: "aes-256-gcm",
                iv: iv.toString("base64url"),
                tag: cipher.getAuthTag().toString("base64url"),
                ciphertext: ciphertext.toString("base64url")
              },
              aad
            })
            return { token, reused: false, pruned: prunedHere }
          })
        )
        .pipe(semaphore.withPermits(1))
  }))
