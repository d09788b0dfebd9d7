/**
 * `verify`: the audit chain checked in place. Exit 0 valid, 1 not valid (the failing
 * sequence and reason on the last line), 4 nothing there (unless --allow-empty);
 * `--json` prints the result as one JSON object instead of the text lines. Rewinds
 * recorded in the chain (`onRewind: "record"`) are listed. With `--checkpoints` the chain
 * is checked against signed checkpoints instead (./checkpoint.ts).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { AuditStore, Chain, Verify } from "haechi-store-effect"
import { CliFailure, ExitCode, usage } from "../shared/failure.js"
import {
  allowEmptyOption,
  checkpointOf,
  pageSizeOption,
  prefixOption,
  timeoutOption,
  urlOption
} from "../shared/options.js"
import { describeResult, describeRewind } from "../shared/output.js"
import { progress } from "../shared/progress.js"
import { requireChain } from "../shared/store.js"
import { withRedis } from "../shared/target.js"
import { checkpointVerifyOptions, verifyAgainstCheckpoints, wantsCheckpoints } from "./checkpoint.js"

/** The result as `verify --json` prints it. */
export const resultJson = (result: Verify.StoreVerifyResult, from: Chain.Checkpoint | undefined, prefix: string) =>
  result.valid
    ? {
        prefix,
        valid: true,
        records: result.records,
        from: from ?? null,
        headSequence: result.headSequence,
        headHash: result.headHash,
        rewinds: result.rewinds ?? []
      }
    : {
        prefix,
        valid: false,
        records: result.records,
        from: from ?? null,
        failedSequence: result.failedSequence,
        index: result.index,
        reason: result.reason._tag,
        detail:
          result.reason._tag === "HeadKeysDisagree"
            ? `${Chain.describeFailure(result.reason)}: ${result.reason.detail} (keys ${result.reason.keys.join(", ")})`
            : Chain.describeFailure(result.reason),
        // The last record that verified (the chain is good up to it).
        lastValidSequence: result.headSequence,
        lastValidHash: result.headHash,
        rewinds: result.rewinds ?? []
      }

export const verifyCommand = Command.make(
  "verify",
  {
    url: urlOption,
    prefix: prefixOption("prefix", AuditStore.DEFAULT_PREFIX, "audit store"),
    fromSequence: Options.integer("from-sequence").pipe(
      Options.withPseudoName("N"),
      Options.withDescription("trusted checkpoint: a sequence verified earlier (with --from-hash)"),
      Options.optional
    ),
    fromHash: Options.text("from-hash").pipe(
      Options.withPseudoName("HASH"),
      Options.withDescription("trusted checkpoint: the eventHash of --from-sequence"),
      Options.optional
    ),
    pageSize: pageSizeOption,
    allowEmpty: allowEmptyOption,
    json: Options.boolean("json").pipe(Options.withDescription("print the result as one JSON object")),
    timeout: timeoutOption,
    ...checkpointVerifyOptions
  },
  ({
    url,
    prefix,
    fromSequence,
    fromHash,
    pageSize,
    allowEmpty,
    json,
    timeout,
    checkpoints,
    publicKey,
    fromCheckpoint
  }) =>
    Effect.gen(function* () {
      if (wantsCheckpoints({ checkpoints, publicKey, fromCheckpoint })) {
        if (Option.isSome(fromSequence) || Option.isSome(fromHash)) {
          return yield* Effect.fail(usage("--from-sequence/--from-hash and --checkpoints do not go together"))
        }
        if (json) return yield* Effect.fail(usage("--json and --checkpoints do not go together"))
        return yield* verifyAgainstCheckpoints({
          url,
          prefix,
          pageSize,
          timeout,
          checkpoints,
          publicKey,
          fromCheckpoint
        })
      }
      const from = yield* checkpointOf(fromSequence, fromHash)
      const bar = progress("verify", "records")
      const result = yield* withRedis(url, (t) =>
        requireChain(t, prefix, allowEmpty).pipe(
          Effect.zipRight(Verify.verifyStore({ from, pageSize, onProgress: bar.update })),
          bar.around,
          Effect.provide(AuditStore.layer({ keyPrefix: prefix, timeout }))
        )
      )
      if (json) {
        yield* Console.log(JSON.stringify(resultJson(result, from, prefix)))
      } else {
        for (const rewind of result.rewinds ?? []) yield* Console.log(describeRewind(rewind))
        if (result.valid && result.headHash !== null) {
          yield* Console.log(`next time: --from-sequence ${result.headSequence} --from-hash ${result.headHash}`)
        }
        yield* Console.log(describeResult(result, from))
      }
      if (!result.valid) return yield* Effect.fail(new CliFailure({ line: undefined, code: ExitCode.invalid }))
    })
).pipe(Command.withDescription("verify the audit chain in Redis, in place (exit 1 if it is not valid)"))
