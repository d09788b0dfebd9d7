/**
 * The token store's semantics, written once over any `VaultBacking` (Redis or memory):
 * `mutate` runs attempts under the lock policy's guard and the bounded retry schedule,
 * `read` brings the cache up to date and runs `f` over a pinned snapshot; every
 * operation is bounded by the store's deadline and observed (a span and a latency).
 */
import * as Effect from "effect/Effect"
import { defaultRetrySchedule } from "../../Retry.js"
import { withRetryBudget } from "../retryBudget.js"
import { budgetQueue, unsafeTimeoutMsOf, within, withinRead } from "../deadline.js"
import { observed } from "../observe.js"
import { noGuard, type StoreGuard } from "../storeGuard.js"
import type { VaultBacking } from "./backing.js"
import { VaultCache } from "./cache.js"
import { commitAttempts } from "./commit.js"
import type { TokenStoreOptions, TokenStoreShape } from "./contract.js"
import { vaultFreshness } from "./freshness.js"
import { registerPromiseMutate, type ResumableMutate } from "./promiseMutate.js"
import { registerPromiseRead } from "./promiseRead.js"
import { readView } from "./views.js"
import { attempted } from "../storeGuard.js"

/** A token store over `backing`: one replica's cache, views, commits and retries. */
export const makeVaultStore = (backing: VaultBacking, options: TokenStoreOptions = {}): TokenStoreShape => {
  const prefix = backing.keys.prefix
  const schedule = options.retry ?? defaultRetrySchedule
  const guard: StoreGuard = options.guard ?? noGuard
  const cache = new VaultCache(backing.keys.tokens)
  const freshness = vaultFreshness(backing, cache)
  const afterCommit = options.afterCommit ?? Effect.void
  const { attempt, settleSent } = commitAttempts(backing, cache, freshness, afterCommit)

  const timeoutMs = unsafeTimeoutMsOf(options.timeout)
  const deadline = (operation: string) =>
    ({ store: "vault", prefix, operation: `vault ${operation}`, timeoutMs }) as const
  // (The fiber-free mutate's deadlines and the Effect path's share one timer.)
  const mutateDeadlines = budgetQueue(deadline("mutate"))
  const boundMutate = within(deadline("mutate"), mutateDeadlines)
  const boundRead = withinRead(deadline("read"))
  const observeMutate = observed("vault", "mutate", prefix)
  const observeRead = observed("vault", "read", prefix)
  const retryOptions = { store: "vault", prefix, operation: "mutate", schedule } as const

  // `first`: the operation's first attempt was made already and lost (the facade's
  // fiber-free mutate, see `promiseMutate.ts`); it goes on from there.
  const mutating: ResumableMutate = (f, first) =>
    withRetryBudget(
      retryOptions,
      (budget) =>
        guard({
          first,
          // A lock-free attempt of the adaptive policy: it yields to a writer holding the lock.
          // (Every successful attempt ran the fenced script, which gives a claimed lock back.)
          attempt: (claim) => Effect.map(budget.attempt(attempt(f, claim)), (a) => attempted(a, true)),
          retrying: (fresh) =>
            Effect.zipRight(
              fresh ? freshness.bringUpToDate : Effect.void,
              budget.retrying(Effect.suspend(() => attempt(f)))
            )
        }),
      first
    ) as never

  const store: TokenStoreShape = {
    prefix,
    mutate: (f) => mutating(f).pipe(boundMutate, observeMutate),
    read: (f) =>
      Effect.flatMap(freshness.bringUpToDate, () => {
        const { snapshot, release } = cache.pin()
        return Effect.ensuring(f(readView(snapshot)), Effect.sync(release))
      }).pipe(boundRead, observeRead),
    ready: backing.ready,
    stats: backing.stats.pipe(withinRead(deadline("stats")), observed("vault", "stats", prefix))
  }
  if (backing.changesThen !== undefined) {
    registerPromiseRead(store, { changesThen: backing.changesThen, cache, freshness, deadline: deadline("read") })
  }
  if (backing.send !== undefined && afterCommit === Effect.void && guard.freeClaim !== undefined) {
    registerPromiseMutate(store, {
      prefix,
      send: backing.send,
      cache,
      freshness,
      freeClaim: guard.freeClaim,
      settleSent,
      resume: mutating,
      deadline: deadline("mutate"),
      deadlines: mutateDeadlines
    })
  }
  return store
}
