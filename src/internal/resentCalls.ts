/**
 * A call re-sent behind our back (ioredis re-sends unanswered commands after a
 * reconnect; a Cluster client re-sends after a redirect or a closed link) may meet its
 * own first send's commit. The scripts find it by commit id, and keep the ids of the last
 * 1,000 commits and of every commit younger than `COMMIT_IDS_KEPT_SECONDS` on Redis's
 * clock. So a call answered within half that span of being made cannot have committed
 * unseen: its Conflict is true however fast others committed meanwhile. A Conflict the
 * script could not prove (the call's place is below what Redis still keeps) on an older
 * call fails closed: the outcome is unknown, and `fn` is not run again. The other half
 * of the span is a margin for Redis's clock against ours (a step, a failover to a server
 * whose clock is ahead). A Conflict met where Redis lost the kept ids (`idsLost`: now, or
 * within their keep) fails closed on a call of any age.
 */
import * as Effect from "effect/Effect"
import { CommitOutcomeUnknown, type StoreKind } from "../Errors.js"
import { now } from "./deadline.js"
import { COMMIT_IDS_KEPT_SECONDS } from "./keys.js"

/** How old (ms since it was made) a call may be for a miss among the kept commit ids to prove it did not commit. */
export const PROVABLE_CALL_AGE_MS = (COMMIT_IDS_KEPT_SECONDS * 1000) / 2

/** When a call is made: what `cannotTell` measures its age from (before its first send). */
export const callMadeAt = (): number => now()

/** What a Conflict says of the proof that the call did not commit before. */
interface Proof {
  readonly unproven?: boolean
  readonly idsLost?: boolean
}

/**
 * Whether a Conflict cannot be trusted: Redis lost the kept ids, or the script could not
 * prove the call did not commit before (`unproven`) and the call is too old for the kept
 * ids to prove it.
 */
const cannotTell = (proof: Proof, madeAt: number): boolean =>
  proof.idsLost === true || (proof.unproven === true && now() - madeAt >= PROVABLE_CALL_AGE_MS)

/** `outcome`, or `CommitOutcomeUnknown` for a Conflict of a call made at `madeAt` that `cannotTell`. */
export const trustedOutcome = <O extends { readonly _tag: string } & Proof>(
  where: { readonly store: StoreKind; readonly prefix: string },
  madeAt: number,
  outcome: O
): Effect.Effect<O, CommitOutcomeUnknown> =>
  outcome._tag === "Conflict" && cannotTell(outcome, madeAt)
    ? Effect.fail(new CommitOutcomeUnknown({ ...where, cause: unprovenConflict(outcome, madeAt) }))
    : Effect.succeed(outcome)

/** The cause of the `CommitOutcomeUnknown` a Conflict that `cannotTell` fails with. */
const unprovenConflict = (proof: Proof, madeAt: number): Error =>
  new Error(
    `a conflict on a call made ${Math.round(now() - madeAt)} ms ago, ` +
      (proof.idsLost === true
        ? "after Redis lost the commit ids (evicted or deleted) "
        : "after Redis dropped the commit ids ") +
      "that would prove it had not committed before (a re-sent call may have)"
  )
