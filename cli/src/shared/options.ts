/** The options several commands share, and the checkpoint they describe. */
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { type Chain, ChainSchema, Verify } from "haechi-store-effect"
import { type CliFailure, usage } from "./failure.js"

export const urlOption = Options.redacted("url").pipe(
  Options.withPseudoName("URL"),
  Options.withDescription("Redis URL, redis://[[user]:password@]host[:port][/db]; default: $REDIS_URL"),
  Options.optional
)

export const prefixOption = (name: string, fallback: string, what: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("PREFIX"),
    Options.withDescription(`key prefix of the ${what} (default "${fallback}")`),
    Options.withDefault(fallback)
  )

export const pageSizeOption = Options.integer("page-size").pipe(
  Options.withPseudoName("N"),
  Options.withDescription(`records per LRANGE (default ${Verify.DEFAULT_PAGE_SIZE})`),
  Options.withDefault(Verify.DEFAULT_PAGE_SIZE)
)

export const timeoutOption = Options.integer("timeout").pipe(
  Options.withPseudoName("MS"),
  Options.withDescription("how long each read may wait for Redis, in ms (default 10000)"),
  Options.withDefault(10_000)
)

export const allowEmptyOption = Options.boolean("allow-empty").pipe(
  Options.withDescription(
    "succeed when there is no chain and no head under the prefix (default: exit 4, nothing there)"
  )
)

const isEventHash = Schema.is(ChainSchema.EventHash)

/** `--from-sequence` and `--from-hash`: both or neither. */
export const checkpointOf = (
  sequence: Option.Option<number>,
  hash: Option.Option<string>
): Effect.Effect<Chain.Checkpoint | undefined, CliFailure> => {
  if (Option.isNone(sequence) && Option.isNone(hash)) return Effect.succeed(undefined)
  if (Option.isNone(sequence) || Option.isNone(hash)) {
    return Effect.fail(
      usage("--from-sequence and --from-hash go together (a checkpoint is a sequence and its eventHash)")
    )
  }
  if (!Number.isSafeInteger(sequence.value) || sequence.value < 1) {
    return Effect.fail(usage("--from-sequence must be an integer >= 1"))
  }
  if (!isEventHash(hash.value)) return Effect.fail(usage("--from-hash must be an eventHash (43 base64url characters)"))
  return Effect.succeed({ sequence: sequence.value, eventHash: hash.value })
}
