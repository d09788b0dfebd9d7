/**
 * Where signed checkpoints go: an append-only file, stdout, or the caller's function
 * (object storage with a retention lock, a witness, a git repository...).
 *
 * Guarantees:
 * - The file sink appends each note whole with one write to a file opened O_APPEND and
 *   fsyncs it before the emit succeeds; it never rewrites or truncates the file.
 * - `readLastNote` reads only the file's tail (a few KiB), whatever its length, and
 *   returns the last note in it as text; it does not verify it (the caller does).
 */
import { constants as fsConstants } from "node:fs"
import { open } from "node:fs/promises"
import * as Effect from "effect/Effect"
import { CheckpointSinkFailed } from "../../Errors.js"
import type { SignedCheckpoint } from "./checkpoints.js"
import { SIGNATURE_PREFIX } from "./note.js"

export interface CheckpointSink {
  /** For errors: "file <path>", "stdout", "function". */
  readonly name: string
  readonly emit: (checkpoint: SignedCheckpoint) => Effect.Effect<void, CheckpointSinkFailed>
  /** The newest note the sink holds, when it can tell (a file can). */
  readonly latest?: Effect.Effect<string | undefined, CheckpointSinkFailed> | undefined
}

/** Appends each note to `path` (created with mode 0644 if missing), fsynced. */
export const fileSink = (path: string): CheckpointSink => {
  const name = `file ${path}`
  return {
    name,
    emit: (checkpoint) =>
      Effect.tryPromise({
        try: async () => {
          const file = await open(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_APPEND, 0o644)
          try {
            // A tail torn by a crash mid-append ends mid-line: end that line first, or this
            // note's first line would join it and the note would never open again.
            const { size } = await file.stat()
            const last = Buffer.alloc(1)
            const torn = size > 0 && (await file.read(last, 0, 1, size - 1)).bytesRead === 1 && last[0] !== 0x0a
            await file.write(torn ? "\n" + checkpoint.note : checkpoint.note)
            await file.sync()
          } finally {
            await file.close()
          }
        },
        catch: (cause) => new CheckpointSinkFailed({ sink: name, cause })
      }),
    latest: Effect.tryPromise({
      try: () => readLastNote(path, true),
      catch: (cause) => new CheckpointSinkFailed({ sink: name, cause })
    })
  }
}

/** Writes each note to stdout. */
export const stdoutSink: CheckpointSink = {
  name: "stdout",
  emit: (checkpoint) =>
    Effect.async<void, CheckpointSinkFailed>((resume) => {
      process.stdout.write(checkpoint.note, (error) =>
        resume(error ? Effect.fail(new CheckpointSinkFailed({ sink: "stdout", cause: error })) : Effect.void)
      )
    })
}

/** Hands each checkpoint to `f`; a rejection or a throw fails the emit. */
export const functionSink = (f: (checkpoint: SignedCheckpoint) => Promise<void> | void): CheckpointSink => ({
  name: "function",
  emit: (checkpoint) =>
    Effect.tryPromise({
      try: async () => f(checkpoint),
      catch: (cause) => new CheckpointSinkFailed({ sink: "function", cause })
    })
})

const TAIL_BYTES = 16 * 1024

/**
 * The last note of a checkpoints file (its signature lines, the blank line and the three
 * body lines before it), read from the tail only; undefined for an empty file, or for a
 * missing one when `missingIsEmpty`. A tail that does not end in a note is returned as
 * it is, so that opening it fails and says why.
 */
export const readLastNote = async (path: string, missingIsEmpty: boolean): Promise<string | undefined> => {
  let file
  try {
    file = await open(path, "r")
  } catch (error) {
    if (missingIsEmpty && (error as { code?: string }).code === "ENOENT") return undefined
    throw error
  }
  try {
    const { size } = await file.stat()
    if (size === 0) return undefined
    const length = Math.min(size, TAIL_BYTES)
    const buffer = Buffer.alloc(length)
    await file.read(buffer, 0, length, size - length)
    let text = buffer.toString("utf8")
    // A tail that starts mid-file starts mid-line (or mid-character): drop that line.
    if (length < size) text = text.slice(text.indexOf("\n") + 1)
    // A tail that does not end in a newline ends in a note torn by a crash mid-append: that
    // last line is no note's end. Every whole note of the tail is taken, last first, past
    // any fragment between them (notes appended by several checkpointers need not land in
    // size order, so the caller takes the newest of them, not the last).
    const lines = (text.endsWith("\n") ? text.slice(0, -1) : text.slice(0, Math.max(0, text.lastIndexOf("\n")))).split(
      "\n"
    )
    const notes: Array<string> = []
    let i = lines.length - 1
    while (i >= 0) {
      if (!lines[i]!.startsWith(SIGNATURE_PREFIX)) {
        i--
        continue
      }
      let start = i
      while (start > 0 && lines[start - 1]!.startsWith(SIGNATURE_PREFIX)) start--
      const top = start - 4
      const body = top >= 0 ? lines.slice(top, top + 3) : []
      if (top >= 0 && lines[start - 1] === "" && body.every((l) => l !== "" && !l.startsWith(SIGNATURE_PREFIX))) {
        notes.unshift(lines.slice(top, i + 1).join("\n") + "\n")
        i = top - 1
      } else i = start - 1
    }
    if (notes.length > 0) return notes.join("")
    // The whole file is one note's first lines, torn by a crash mid-append (the first note
    // ever appended): no note yet. Anything else is handed on, to be refused as no note.
    const torn = length === size && lines.length <= 4 && lines.every((l) => !l.startsWith(SIGNATURE_PREFIX))
    return torn ? undefined : text
  } finally {
    await file.close()
  }
}
