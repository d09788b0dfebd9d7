/**
 * The checkpoint commands: `keygen`, `checkpoint`, and `verify`'s
 * `--checkpoints --public-key [--from-checkpoint]` mode (`verifyAgainstCheckpoints`,
 * which ./verify.ts runs when those options are given).
 *
 * Exit codes are the CLI's: 0 done / valid; 1 the chain is NOT valid against the
 * checkpoints, a note is refused, or `checkpoint` found a chain it must not sign (the
 * line says which checkpoint); 2 bad arguments (a malformed key, a key file that is
 * missing or not a key); 3 the work could not be done. Keys are never printed, except
 * the verifier key that `keygen` prints on purpose.
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import { AuditStore, Chain, Checkpoint, Verify } from "haechi-store-effect"
import { CliFailure, ExitCode, usage } from "../shared/failure.js"
import { prefixOption, timeoutOption, urlOption } from "../shared/options.js"
import { describeResult } from "../shared/output.js"
import { progress } from "../shared/progress.js"
import { withRedis } from "../shared/target.js"

const fail = (line: string | undefined, code: number) => new CliFailure({ line, code })

/** The options `verify` gains. */
export const checkpointVerifyOptions = {
  checkpoints: Options.file("checkpoints").pipe(
    Options.withPseudoName("FILE"),
    Options.withDescription(
      "signed checkpoint notes (as `checkpoint --out` appends them): the chain must hold every one"
    ),
    Options.optional
  ),
  publicKey: Options.text("public-key").pipe(
    Options.withPseudoName("VKEY"),
    Options.withDescription("the verifier key the notes must be signed with (<name>+<key id>+<base64>)"),
    Options.optional
  ),
  fromCheckpoint: Options.boolean("from-checkpoint").pipe(
    Options.withDescription("with --checkpoints: start at the newest checkpoint and read only what is new")
  )
}

export interface CheckpointVerifyArgs {
  readonly url: Option.Option<Redacted.Redacted>
  readonly prefix: string
  readonly pageSize: number
  readonly timeout: number
  readonly checkpoints: Option.Option<string>
  readonly publicKey: Option.Option<string>
  readonly fromCheckpoint: boolean
}

/** Whether `verify` was asked to check against checkpoints. */
export const wantsCheckpoints = (args: Pick<CheckpointVerifyArgs, "checkpoints" | "publicKey" | "fromCheckpoint">) =>
  Option.isSome(args.checkpoints) || Option.isSome(args.publicKey) || args.fromCheckpoint

const short = (hash: string | null) => (hash === null ? "nothing" : hash)

/** The last line of `verify --checkpoints` for a result. */
export const describeCheckpointed = (
  result: Verify.CheckpointedResult,
  notes: ReadonlyArray<Checkpoint.SignedCheckpoint>,
  fromCheckpoint: boolean
): string => {
  if (result.valid) {
    const from =
      fromCheckpoint && result.newest !== undefined
        ? { sequence: result.newest.size, eventHash: result.newest.hash }
        : undefined
    const newest = result.newest === undefined ? "no checkpoints" : `newest checkpoint ${result.newest.size}`
    return `${describeResult(result.chain, from)}; holds ${result.checkpoints} checkpoint${result.checkpoints === 1 ? "" : "s"} (${newest})`
  }
  const checkpoint = result.checkpoint
  if (checkpoint === undefined) return `${describeResult(result.chain, undefined)}; after the newest checkpoint`
  const note = notes.findIndex((c) => c.size === checkpoint.size) + 1
  const at = `invalid at checkpoint ${checkpoint.size} (note ${note}, ${checkpoint.hash})`
  switch (result.failure._tag) {
    case "NotHeld":
      return `${at}: the chain holds another record at sequence ${checkpoint.size} (${short(result.failure.found)})`
    case "Shorter":
      return `${at}: the chain ends at sequence ${result.failure.length}, before it`
    case "ChainInvalid": {
      const chain = result.chain
      const where = chain.valid
        ? ""
        : ` at sequence ${chain.failedSequence} (list index ${chain.index}): ${Chain.describeFailure(chain.reason)}`
      return `${at}: the chain fails before it${where}`
    }
  }
}

/** A key problem is the caller's: exit 2, except a file that cannot be written (3). */
const keyFailure = (error: { readonly _tag: string; readonly message: string; readonly reason?: string }) =>
  fail(
    error.message,
    error._tag === "CheckpointKeyInvalid" && !/cannot be written|already exists/.test(error.reason ?? "")
      ? ExitCode.usage
      : ExitCode.failed
  )

export const keygenCommand = Command.make(
  "keygen",
  {
    name: Options.text("name").pipe(
      Options.withPseudoName("ORIGIN"),
      Options.withDescription("the log's name, also the key's name (e.g. example.com/audit)")
    ),
    out: Options.file("out").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription("the private key file to create (mode 0600)")
    )
  },
  ({ name, out }) =>
    Checkpoint.keygen({ name, out }).pipe(
      Effect.mapError(keyFailure),
      Effect.flatMap((verifierKey) => Console.log(verifierKey))
    )
).pipe(Command.withDescription("create a checkpoint signing key (mode 0600) and print its verifier key"))

export const checkpointCommand = Command.make(
  "checkpoint",
  {
    url: urlOption,
    prefix: prefixOption("prefix", AuditStore.DEFAULT_PREFIX, "audit store"),
    key: Options.file("key").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription("the signing key file (see keygen)")
    ),
    out: Options.file("out").pipe(
      Options.withPseudoName("FILE"),
      Options.withDescription("append the note to FILE (its newest note is where verification starts); default stdout"),
      Options.optional
    ),
    timeout: timeoutOption,
    waitReplicas: Options.integer("wait-replicas").pipe(
      Options.withPseudoName("N"),
      Options.withDescription(
        "sign only once N replicas acknowledged the fence (WAIT, within --timeout): a failover to one keeps it"
      ),
      Options.optional
    )
  },
  ({ url, prefix, key, out, timeout, waitReplicas }) =>
    Effect.gen(function* () {
      const signer = yield* Effect.mapError(Checkpoint.loadKey(key), keyFailure)
      const sink = Option.isSome(out) ? Checkpoint.fileSink(out.value) : Checkpoint.stdoutSink
      const outcome = yield* withRedis(url, () =>
        Effect.scoped(
          Effect.flatMap(
            Checkpoint.make({
              key: signer,
              sink,
              timeout,
              durability: Option.match(waitReplicas, {
                onNone: () => undefined,
                onSome: (replicas) => ({ replicas, timeout })
              })
            }),
            (c) => c.checkpoint
          )
        ).pipe(
          Effect.provide(AuditStore.layer({ keyPrefix: prefix, timeout })),
          Effect.catchTags({
            ChainMissesCheckpoint: (e) => Effect.fail(fail(`refused: ${e.message}`, ExitCode.invalid)),
            CorruptData: (e) => Effect.fail(fail(`refused: ${e.message}`, ExitCode.invalid)),
            CheckpointNoteRejected: (e) =>
              Effect.fail(fail(`refused: ${e.message} (in ${Option.getOrElse(out, () => "")})`, ExitCode.invalid)),
            CheckpointSinkFailed: (e) => Effect.fail(fail(e.message, ExitCode.failed)),
            DurabilityTimeout: (e) => Effect.fail(fail(`not signed: ${e.message}`, ExitCode.failed))
          })
        )
      )
      // With --out the note is in the file and stdout says what happened; without, stdout is the note only.
      if (Option.isNone(out)) return
      switch (outcome._tag) {
        case "Signed":
          return yield* Console.log(
            `signed checkpoint ${outcome.checkpoint.size} ${outcome.checkpoint.hash} to ${out.value}`
          )
        case "Unchanged":
          return yield* Console.log(
            outcome.size === 0 ? "nothing to sign: the chain is empty" : `nothing new since checkpoint ${outcome.size}`
          )
        case "Behind":
          return yield* Console.log(`not signed: another checkpointer already signed size ${outcome.recorded}`)
      }
    })
).pipe(Command.withDescription("sign the chain's head once as a C2SP checkpoint note (appended to --out, else stdout)"))

/**
 * `verify --checkpoints FILE --public-key VKEY [--from-checkpoint]`: every note must
 * verify with the key, and the chain must hold each one (exit 1 naming the first it
 * breaks). An empty store is judged by the notes, not as "nothing there".
 */
export const verifyAgainstCheckpoints = (args: CheckpointVerifyArgs) =>
  Effect.gen(function* () {
    if (Option.isNone(args.checkpoints))
      return yield* Effect.fail(usage("--public-key and --from-checkpoint need --checkpoints"))
    if (Option.isNone(args.publicKey))
      return yield* Effect.fail(usage("--checkpoints needs --public-key (the notes' verifier key)"))
    const key = yield* Effect.mapError(Checkpoint.verifierKey(args.publicKey.value), (e) =>
      usage(`--public-key: ${e.reason}`)
    )
    const fs = yield* FileSystem.FileSystem
    const path = args.checkpoints.value
    const text = yield* Effect.mapError(fs.readFileString(path), (e) =>
      fail(`cannot read --checkpoints ${path}: ${e.message}`, ExitCode.failed)
    )
    const notes = yield* Effect.catchTag(Checkpoint.openAll(text, key), "CheckpointNoteRejected", (e) =>
      Effect.zipRight(Console.log(`invalid: ${e.message}`), Effect.fail(fail(undefined, ExitCode.invalid)))
    )
    const bar = progress("verify", "records")
    const result = yield* withRedis(args.url, () =>
      Verify.verifyCheckpoints(notes, {
        fromCheckpoint: args.fromCheckpoint,
        pageSize: args.pageSize,
        onProgress: bar.update
      }).pipe(bar.around, Effect.provide(AuditStore.layer({ keyPrefix: args.prefix, timeout: args.timeout })))
    )
    yield* Console.log(`checkpoints: ${notes.length} notes signed by ${key.name} verified`)
    yield* Console.log(describeCheckpointed(result, notes, args.fromCheckpoint))
    if (!result.valid) return yield* Effect.fail(fail(undefined, ExitCode.invalid))
  })
