/**
 * Checkpoint notes as values: signing a chain point, and opening one note or a whole
 * checkpoints file against a trusted verifier key.
 *
 * Guarantees:
 * - A note is accepted only if it parses strictly (./note.ts), its body is a checkpoint
 *   whose origin is the verifier key's name, and the trusted key's signature verifies.
 * - `openCheckpoints` accepts a file only if EVERY note in it is accepted, and refuses two
 *   notes that sign different hashes for one size (the log contradicted itself); the
 *   refusal names the note (1-based) and why.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { CheckpointNoteRejected } from "../../Errors.js"
import { openNote, type Signer } from "./ed25519.js"
import { formatCheckpointBody, parseCheckpointBody, splitNotes, type VerifierKey } from "./note.js"

/** A checkpoint and its signed note. */
export interface SignedCheckpoint {
  readonly origin: string
  /** The chain's size: the head's sequence. */
  readonly size: number
  /** The head's eventHash. */
  readonly hash: string
  /** The signed note, as written to a sink (ends in a newline). */
  readonly note: string
}

/** Signs the chain point (`size`, `hash`) as a checkpoint of the signer's origin (its key name). */
export const signCheckpoint = (signer: Signer, size: number, hash: string): SignedCheckpoint => ({
  origin: signer.name,
  size,
  hash,
  note: signer.signNote(formatCheckpointBody({ origin: signer.name, size, hash }))
})

/** Opens one note (position `index`, 1-based, for the error) against `key`. */
export const openCheckpoint = (
  note: string,
  key: VerifierKey,
  index?: number
): Either.Either<SignedCheckpoint, CheckpointNoteRejected> => {
  const opened = Either.flatMap(openNote(note, key), (parsed) =>
    Either.flatMap(parseCheckpointBody(parsed.text), (body) =>
      body.origin === key.name
        ? Either.right({ ...body, note })
        : Either.left(`its origin "${body.origin}" is not the key's name "${key.name}"`)
    )
  )
  return Either.mapLeft(opened, (reason) => new CheckpointNoteRejected({ note: index, reason }))
}

/** Opens every note of a checkpoints file (concatenated notes), in file order. */
export const openCheckpoints = (
  text: string,
  key: VerifierKey
): Effect.Effect<ReadonlyArray<SignedCheckpoint>, CheckpointNoteRejected> =>
  Effect.suspend(() => {
    const notes = splitNotes(text)
    if (Either.isLeft(notes)) return Effect.fail(new CheckpointNoteRejected({ reason: notes.left }))
    const out: Array<SignedCheckpoint> = []
    const bySize = new Map<number, number>()
    for (let i = 0; i < notes.right.length; i++) {
      const opened = openCheckpoint(notes.right[i]!, key, i + 1)
      if (Either.isLeft(opened)) return Effect.fail(opened.left)
      const checkpoint = opened.right
      const earlier = bySize.get(checkpoint.size)
      if (earlier !== undefined && out[earlier]!.hash !== checkpoint.hash) {
        return Effect.fail(
          new CheckpointNoteRejected({
            note: i + 1,
            reason: `it signs another head for size ${checkpoint.size} than note ${earlier + 1} (the log contradicted itself)`
          })
        )
      }
      if (earlier === undefined) bySize.set(checkpoint.size, out.length)
      out.push(checkpoint)
    }
    return Effect.succeed(out)
  })

/** The checkpoint with the largest size, or undefined for none. */
export const newestOf = (checkpoints: ReadonlyArray<SignedCheckpoint>): SignedCheckpoint | undefined => {
  let newest: SignedCheckpoint | undefined
  for (const checkpoint of checkpoints) if (newest === undefined || checkpoint.size > newest.size) newest = checkpoint
  return newest
}
