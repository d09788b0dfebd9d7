/**
 * The checkpoint commands of `haechi-store`: `keygen`, `checkpoint`, and the
 * `--checkpoints --public-key [--from-checkpoint]` options of `verify`.
 *
 * Built by `makeCheckpointCommands(context)` from what the CLI already has (its URL and
 * prefix options, its Redis connection with password scrubbing, its progress bar and its
 * one-line failures), so this file imports nothing from Cli.ts and moves with it as is.
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
import * as AuditStore from "./AuditStore.js"
import { describeFailure, type VerifyResult } from "./Chain.js"
import * as Checkpoint from "./Checkpoint.js"
import type { RedisClient } from "./RedisClient.js"
import { type CheckpointedResult, verifyCheckpoints } from "./Verify.js"

const EXIT = { invalid: 1, usage: 2, failed: 3 } as const

/** What the CLI lends these commands. */
export interface CheckpointCliContext {
  readonly urlOption: Options.Options<Option.Option<Redacted.Redacted>>
  readonly prefixOption: Options.Options<string>
  /** Runs work against Redis (from --url / REDIS_URL), every failure made one scrubbed line. */
  readonly withRedis: <A, E, R>(
    url: Option.Option<Redacted.Redacted>,
    work: () => Effect.Effect<A, E, R | RedisClient>
  ) => Effect.Effect<A, unknown, Exclude<R, RedisClient>>
  readonly progress: (label: string, unit: string) => {
    readonly update: (done: number, total: number) => Effect.Effect<void>
    readonly finish: Effect.Effect<void>
  }
  /** The CLI's failure: one line on stderr (none when undefined) and an exit code. */
  readonly fail: (line: string | undefined, code: number) => unknown
  /** The line `verify` prints for a chain result (the CLI's `describeResult`). */
  readonly describeResult: (
    result: VerifyResult,
    from: { readonly sequence: number; readonly eventHash: string | null } | undefined
  ) => string
}

/** The options `verify` gains. */
export const verifyOptions = {
  checkpoints: Options.file("checkpoints").pipe(
    Options.withPseudoName("FILE"),
    Options.withDescription("signed checkpoint notes (as `checkpoint --out` appends them): the chain must hold every one"),
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

export interface VerifyArgs {
  readonly url: Option.Option<Redacted.Redacted>
  readonly prefix: string
  readonly pageSize: number
  readonly checkpoints: Option.Option<string>
  readonly publicKey: Option.Option<string>
  readonly fromCheckpoint: boolean
}

const short = (hash: string | null) => (hash === null ? "nothing" : hash)

/** The last line of `verify --checkpoints` for a result. */
export const describeCheckpointed = (
  result: CheckpointedResult,
  describeResult: CheckpointCliContext["describeResult"],
  notes: ReadonlyArray<Checkpoint.SignedCheckpoint>,
  fromCheckpoint: boolean
): string => {
  if (result.valid) {
    const from = fromCheckpoint && result.newest !== undefined ? { sequence: result.newest.size, eventHash: result.newest.hash } : undefined
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
      const where = chain.valid ? "" : ` at sequence ${chain.failedSequence} (list index ${chain.index}): ${describeFailure(chain.reason)}`
      return `${at}: the chain fails before it${where}`
    }
  }
}

/**
 * The commands, built on the CLI's context: `keygen`, `checkpoint`, and `verify`'s
 * checkpoint mode (`runVerify`, for the CLI's verify to call when --checkpoints is given).
 */
export const makeCheckpointCommands = (context: CheckpointCliContext) => {
  const { fail } = context
  const usage = (line: string) => Effect.fail(fail(line, EXIT.usage))

  /** A key problem is the caller's: exit 2, except a file that cannot be written (3). */
  const keyFailure = (error: { readonly _tag: string; readonly message: string; readonly reason?: string }) =>
    fail(error.message, error._tag === "CheckpointKeyInvalid" && !/cannot be written|already exists/.test(error.reason ?? "") ? EXIT.usage : EXIT.failed)

  const keygen = Command.make(
    "keygen",
    {
      name: Options.text("name").pipe(
        Options.withPseudoName("ORIGIN"),
        Options.withDescription("the log's name, also the key's name (e.g. example.com/audit)")
      ),
      out: Options.file("out").pipe(Options.withPseudoName("FILE"), Options.withDescription("the private key file to create (mode 0600)"))
    },
    ({ name, out }) =>
      Checkpoint.keygen({ name, out }).pipe(
        Effect.mapError(keyFailure),
        Effect.flatMap((verifierKey) => Console.log(verifierKey))
      )
  ).pipe(Command.withDescription("create a checkpoint signing key (mode 0600) and print its verifier key"))

  const checkpoint = Command.make(
    "checkpoint",
    {
      url: context.urlOption,
      prefix: context.prefixOption,
      key: Options.file("key").pipe(Options.withPseudoName("FILE"), Options.withDescription("the signing key file (see keygen)")),
      out: Options.file("out").pipe(
        Options.withPseudoName("FILE"),
        Options.withDescription("append the note to FILE (its newest note is where verification starts); default stdout"),
        Options.optional
      )
    },
    ({ url, prefix, key, out }) =>
      Effect.gen(function* () {
        const signer = yield* Effect.mapError(Checkpoint.loadKey(key), keyFailure)
        const sink = Option.isSome(out) ? Checkpoint.fileSink(out.value) : Checkpoint.stdoutSink
        const outcome = yield* context.withRedis(url, () =>
          Effect.scoped(Effect.flatMap(Checkpoint.make({ key: signer, sink }), (c) => c.checkpoint)).pipe(
            Effect.provide(AuditStore.layer({ keyPrefix: prefix })),
            Effect.catchTags({
              ChainMissesCheckpoint: (e) => Effect.fail(fail(`refused: ${e.message}`, EXIT.invalid)),
              CorruptData: (e) => Effect.fail(fail(`refused: ${e.message}`, EXIT.invalid)),
              CheckpointNoteRejected: (e) => Effect.fail(fail(`refused: ${e.message} (in ${Option.getOrElse(out, () => "")})`, EXIT.invalid)),
              CheckpointSinkFailed: (e) => Effect.fail(fail(e.message, EXIT.failed))
            })
          )
        )
        // With --out the note is in the file and stdout says what happened; without, stdout is the note only.
        if (Option.isNone(out)) return
        switch (outcome._tag) {
          case "Signed":
            return yield* Console.log(`signed checkpoint ${outcome.checkpoint.size} ${outcome.checkpoint.hash} to ${out.value}`)
          case "Unchanged":
            return yield* Console.log(
              outcome.size === 0 ? "nothing to sign: the chain is empty" : `nothing new since checkpoint ${outcome.size}`
            )
          case "Behind":
            return yield* Console.log(`not signed: another checkpointer already signed size ${outcome.recorded}`)
        }
      })
  ).pipe(Command.withDescription("sign the chain's head once as a C2SP checkpoint note (appended to --out, else stdout)"))

  const runVerify = (args: VerifyArgs) =>
    Effect.gen(function* () {
      if (Option.isNone(args.checkpoints)) return yield* usage("--public-key and --from-checkpoint need --checkpoints")
      if (Option.isNone(args.publicKey)) return yield* usage("--checkpoints needs --public-key (the notes' verifier key)")
      const key = yield* Effect.mapError(Checkpoint.verifierKey(args.publicKey.value), (e) => fail(`--public-key: ${e.reason}`, EXIT.usage))
      const fs = yield* FileSystem.FileSystem
      const text = yield* Effect.mapError(fs.readFileString(args.checkpoints.value), (e) =>
        fail(`cannot read --checkpoints ${args.checkpoints.pipe(Option.getOrElse(() => ""))}: ${e.message}`, EXIT.failed)
      )
      const notes = yield* Effect.catchTag(Checkpoint.openAll(text, key), "CheckpointNoteRejected", (e) =>
        Effect.zipRight(Console.log(`invalid: ${e.message}`), Effect.fail(fail(undefined, EXIT.invalid)))
      )
      const bar = context.progress("verify", "records")
      const result = yield* context.withRedis(args.url, () =>
        verifyCheckpoints(notes, { fromCheckpoint: args.fromCheckpoint, pageSize: args.pageSize, onProgress: bar.update }).pipe(
          Effect.ensuring(bar.finish),
          Effect.provide(AuditStore.layer({ keyPrefix: args.prefix }))
        )
      )
      yield* Console.log(`checkpoints: ${notes.length} notes signed by ${key.name} verified`)
      yield* Console.log(describeCheckpointed(result, context.describeResult, notes, args.fromCheckpoint))
      if (!result.valid) return yield* Effect.fail(fail(undefined, EXIT.invalid))
    })

  return { keygen, checkpoint, runVerify }
}
