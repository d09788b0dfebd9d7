/**
 * The facade's start-up gate. Its factories are synchronous, so what a store must ask
 * the server before it writes (start-up checks, durability's needs, a witness) runs
 * before the first call instead: every gated call awaits the checks, which run until
 * they pass once; concurrent first calls share one run, and a failed run is tried again
 * on the next call. Nothing is written before the checks have passed.
 */
import type * as Effect from "effect/Effect"

export interface StartupGate {
  /** Resolves once every check has passed (then at once); rejects with the first failure. */
  readonly checked: () => Promise<void>
  /** `f` once the checks have passed. */
  readonly gated: <A>(f: () => Promise<A>) => Promise<A>
}

/** One check, remembered once it passes. */
const gateOf = (
  run: <A>(effect: Effect.Effect<A, unknown>) => Promise<A>,
  check: Effect.Effect<void, unknown> | undefined
): StartupGate => {
  let passed = check === undefined
  let pending: Promise<void> | undefined
  const checked = (): Promise<void> => {
    if (passed || check === undefined) return Promise.resolve()
    pending ??= run(check).then(
      () => void (passed = true),
      (error: unknown) => {
        pending = undefined
        throw error
      }
    )
    return pending
  }
  return { checked, gated: <A>(f: () => Promise<A>): Promise<A> => (passed ? f() : checked().then(f)) }
}

/** The checks in order (undefined ones skipped), each remembered once it passes. */
export const startupGate = (
  run: <A>(effect: Effect.Effect<A, unknown>) => Promise<A>,
  ...checks: ReadonlyArray<Effect.Effect<void, unknown> | undefined>
): StartupGate =>
  checks
    .map((check) => gateOf(run, check))
    .reduce(
      (first, next) => ({
        checked: () => first.checked().then(next.checked),
        gated: (f) => first.gated(() => next.gated(f))
      }),
      gateOf(run, undefined)
    )
