/**
 * A scoped Effect resource handed to a Promise caller: opened in a scope of its own that
 * `close()` closes; when opening fails, the scope is closed before the promise rejects,
 * so nothing it started (a schedule, a subscription) outlives the failure.
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"

export const openScoped = async <A>(
  run: <B>(effect: Effect.Effect<B, unknown>) => Promise<B>,
  open: Effect.Effect<A, unknown, Scope.Scope>
): Promise<{ readonly value: A; readonly close: () => Promise<void> }> => {
  const scope = await run(Scope.make())
  const close = () => run(Scope.close(scope, Exit.void))
  const made = await run(Effect.exit(Effect.provideService(open, Scope.Scope, scope)))
  if (Exit.isFailure(made)) {
    await close()
    return run(Effect.failCause(made.cause))
  }
  return { value: made.value, close }
}
