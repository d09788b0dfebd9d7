/**
 * Schemas of the chain's format, for apps that decode heads with effect/Schema. Kept
 * apart from Chain.ts so that importing the stores or the facade never loads
 * effect/Schema (and the fast-check it pulls in); the stores parse heads by hand
 * (`AuditBacking.parseIntegrity`) with the chain's rules.
 */
import * as Schema from "effect/Schema"
import type { AuditIntegrity as Integrity } from "./Chain.js"
import { EVENT_HASH_PATTERN } from "./internal/eventHash.js"

/** An eventHash: a sha256 digest in base64url without padding, always 43 characters. */
export const EventHash: Schema.Schema<string> = Schema.String.pipe(Schema.pattern(EVENT_HASH_PATTERN))
const Hash = EventHash

/**
 * Decodes a stored chain head (an `auditIntegrity` object) to a `Chain.AuditIntegrity`
 * as haechi writes it. Stricter than haechi's verifier and the stores on shape (`alg`
 * and `canonicalization` must be haechi's, the hashes must look like sha256 base64url,
 * the sequence must be a positive integer), because a head is used as an append fence.
 */
export const AuditIntegrity: Schema.Schema<HaechiIntegrity> = Schema.mutable(
  Schema.Struct({
    alg: Schema.Literal("sha256"),
    canonicalization: Schema.Literal("json-stable-v1"),
    sequence: Schema.Int.pipe(Schema.positive()),
    previousHash: Schema.NullOr(Hash),
    eventHash: Hash
  })
)

/** A `Chain.AuditIntegrity` whose `alg` and `canonicalization` are haechi's: what `AuditIntegrity` decodes to. */
export type HaechiIntegrity = Integrity & { alg: "sha256"; canonicalization: "json-stable-v1" }

/** Decodes a stored chain head from its JSON text. */
export const AuditIntegrityFromJson: Schema.Schema<HaechiIntegrity, string> = Schema.parseJson(AuditIntegrity)
