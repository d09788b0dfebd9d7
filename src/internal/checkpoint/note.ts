/**
 * C2SP signed notes (c2sp.org/signed-note) with a checkpoint body, written and read
 * strictly. Pure: no keys, no I/O (Ed25519 itself is in ./ed25519.ts).
 *
 * Guarantees:
 * - `formatNote` writes exactly the signed-note form: the text (ending in a newline), one
 *   blank line, then one line per signature `— <key name> <base64(key id || signature)>`
 *   with the em dash U+2014. What is signed is the text including its final newline.
 * - `parseNote` accepts only that form, byte for byte: UTF-8 without lone surrogates,
 *   no control character but the newline (so no CR), a final newline, the text split
 *   from the signatures at the last blank line, every signature line well formed
 *   (em dash, one space, a valid key name, one space, canonical standard base64 of at
 *   least 4 + 1 bytes), at least one and at most `MAX_SIGNATURES` of them. Anything else
 *   is refused with a reason naming the line.
 * - `parseCheckpointBody` accepts exactly three lines: the origin (a valid key name),
 *   the size in decimal without leading zeros (>= 1: an empty chain is never signed) and
 *   the head's eventHash (43 base64url characters encoding 32 bytes). No extension lines.
 * - Key ids and verifier keys are c2sp.org/signed-note's for Ed25519: key id =
 *   SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4], big-endian; verifier key
 *   `<name>+<8 lowercase hex key id>+<base64(0x01 || public key)>`, checked against
 *   the key id it names. The private key text is Go's golang.org/x/mod/sumdb/note form,
 *   `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || 32-byte seed)>`, so keys move between
 *   this package and the Go tooling.
 */
import { createHash } from "node:crypto"
import * as Either from "effect/Either"
import { isWellFormed } from "../jsonRecord.js"
import { isCanonicalEventHash } from "../eventHash.js"

/** The signature type byte of Ed25519 in c2sp.org/signed-note. */
export const ED25519 = 0x01

/** The signature line's leading em dash and space (U+2014 U+0020). */
export const SIGNATURE_PREFIX = "\u2014 "

/** A note longer than this is refused (ours are about 200 bytes). */
export const MAX_NOTE_LENGTH = 64 * 1024

/** At most this many signature lines (the spec asks verifiers to accept at least 16). */
export const MAX_SIGNATURES = 100

/** The origin, size and head hash a checkpoint note's body holds. */
export interface CheckpointBody {
  readonly origin: string
  readonly size: number
  readonly hash: string
}

/** One signature line, parsed (not verified). */
export interface NoteSignature {
  readonly name: string
  /** The key id, as an unsigned 32-bit number. */
  readonly keyId: number
  /** The signature bytes after the key id. */
  readonly signature: Uint8Array
}

export interface ParsedNote {
  /** The signed text, ending in a newline. */
  readonly text: string
  readonly signatures: ReadonlyArray<NoteSignature>
}

/** A public key as a verifier holds it. */
export interface VerifierKey {
  readonly name: string
  readonly keyId: number
  /** The 32-byte Ed25519 public key. */
  readonly publicKey: Uint8Array
}

// ---------------------------------------------------------------------------
// names, key ids, key texts

const UNICODE_SPACE = /[\s\u0085]/u
const CONTROL = /[\u0000-\u0009\u000b-\u001f]/

/** A key name (and an origin): non-empty, no Unicode space, no "+", no control character. */
/** Longer names make notes past what `readLastNote`'s tail (16 KiB) or `parseNote` (64 KiB) reads. */
export const MAX_KEY_NAME_LENGTH = 1024

export const checkKeyName = (name: string): string | undefined => {
  if (name.length === 0) return "is empty"
  if (name.length > MAX_KEY_NAME_LENGTH) return `is longer than ${MAX_KEY_NAME_LENGTH} characters`
  if (UNICODE_SPACE.test(name)) return "contains a space"
  if (name.includes("+")) return 'contains "+"'
  if (CONTROL.test(name) || name.includes("\n")) return "contains a control character"
  if (!isWellFormed(name)) return "is not valid UTF-8 (a lone surrogate)"
  return undefined
}

/** c2sp.org/signed-note's Ed25519 key id of `name` and a 32-byte public key. */
export const keyIdOf = (name: string, publicKey: Uint8Array): number =>
  createHash("sha256")
    .update(name, "utf8")
    .update(Uint8Array.of(0x0a, ED25519))
    .update(publicKey)
    .digest()
    .readUInt32BE(0)

export const keyIdHex = (keyId: number): string => keyId.toString(16).padStart(8, "0")

/** Standard base64 that decodes to bytes which encode back to exactly it (no slack bits, padding right). */
const decodeBase64 = (text: string): Buffer | undefined => {
  if (text.length === 0 || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) return undefined
  const bytes = Buffer.from(text, "base64")
  return bytes.toString("base64") === text ? bytes : undefined
}

export const formatVerifierKey = (name: string, publicKey: Uint8Array): string =>
  `${name}+${keyIdHex(keyIdOf(name, publicKey))}+${Buffer.concat([Uint8Array.of(ED25519), publicKey]).toString("base64")}`

/** Splits `<name>+<hex id>+<base64>` (the base64 may hold "+" itself) and checks the pieces. */
const splitKeyText = (
  text: string,
  what: string
): Either.Either<{ name: string; keyId: number; key: Buffer }, string> => {
  const first = text.indexOf("+")
  const second = first === -1 ? -1 : text.indexOf("+", first + 1)
  if (second === -1) return Either.left(`a ${what} is <name>+<8 hex key id>+<base64 key>`)
  const name = text.slice(0, first)
  const hex = text.slice(first + 1, second)
  const nameProblem = checkKeyName(name)
  if (nameProblem !== undefined) return Either.left(`its name ${nameProblem}`)
  if (!/^[0-9a-f]{8}$/.test(hex)) return Either.left("its key id is not 8 lowercase hex digits")
  const bytes = decodeBase64(text.slice(second + 1))
  if (bytes === undefined) return Either.left("its key is not canonical base64")
  if (bytes.length !== 33 || bytes[0] !== ED25519)
    return Either.left("its key is not an Ed25519 key (0x01 and 32 bytes)")
  return Either.right({ name, keyId: Number.parseInt(hex, 16), key: bytes.subarray(1) })
}

/** Parses a verifier key and checks that its key id is the one its name and key give. */
export const parseVerifierKey = (text: string): Either.Either<VerifierKey, string> =>
  Either.flatMap(splitKeyText(text, "verifier key"), ({ name, keyId, key }) =>
    keyIdOf(name, key) === keyId
      ? Either.right({ name, keyId, publicKey: new Uint8Array(key) })
      : Either.left("its key id does not match its name and key")
  )

const PRIVATE_PREFIX = "PRIVATE+KEY+"

/** Whether `text` holds a private key text (so it must never be echoed, say as a path). */
export const holdsPrivateKey = (text: string): boolean => text.includes(PRIVATE_PREFIX)

export const formatPrivateKey = (name: string, keyId: number, seed: Uint8Array): string =>
  `${PRIVATE_PREFIX}${name}+${keyIdHex(keyId)}+${Buffer.concat([Uint8Array.of(ED25519), seed]).toString("base64")}`

/**
 * Splits a private key text into its name, key id and 32-byte seed (the caller derives
 * the public key and checks the id). Reasons never quote the text.
 */
export const parsePrivateKey = (text: string): Either.Either<{ name: string; keyId: number; seed: Buffer }, string> => {
  if (!text.startsWith(PRIVATE_PREFIX)) return Either.left("not a signing key (it must start with PRIVATE+KEY+)")
  return Either.map(splitKeyText(text.slice(PRIVATE_PREFIX.length), "signing key"), ({ name, keyId, key }) => ({
    name,
    keyId,
    seed: key
  }))
}

// ---------------------------------------------------------------------------
// notes

/** The checkpoint body: origin, size and hash, one per line, ending in a newline. */
export const formatCheckpointBody = (body: CheckpointBody): string => `${body.origin}\n${body.size}\n${body.hash}\n`

/** The signature line for `name`'s key `keyId` and `signature` (with its newline). */
export const formatSignatureLine = (name: string, keyId: number, signature: Uint8Array): string => {
  const blob = Buffer.alloc(4 + signature.length)
  blob.writeUInt32BE(keyId >>> 0, 0)
  blob.set(signature, 4)
  return `${SIGNATURE_PREFIX}${name} ${blob.toString("base64")}\n`
}

/** The note: text, blank line, signature lines. */
export const formatNote = (text: string, signatureLines: ReadonlyArray<string>): string =>
  `${text}\n${signatureLines.join("")}`

const lineOf = (note: string, index: number): number => {
  let line = 1
  for (let i = 0; i < index; i++) if (note.charCodeAt(i) === 0x0a) line++
  return line
}

/** Parses one signed note strictly (see the module's guarantees); the reason names the line. */
export const parseNote = (note: string): Either.Either<ParsedNote, string> => {
  if (note.length > MAX_NOTE_LENGTH) return Either.left(`longer than ${MAX_NOTE_LENGTH} characters`)
  if (!isWellFormed(note)) return Either.left("not valid UTF-8 (a lone surrogate)")
  const control = CONTROL.exec(note)
  if (control !== null) {
    const code = control[0].charCodeAt(0)
    const what =
      code === 0x0d
        ? "a carriage return (CRLF line endings?)"
        : `control character U+${code.toString(16).padStart(4, "0").toUpperCase()}`
    return Either.left(`line ${lineOf(note, control.index)}: ${what}`)
  }
  if (!note.endsWith("\n")) return Either.left("does not end with a newline")
  const split = note.lastIndexOf("\n\n")
  if (split === -1) return Either.left("no blank line between the text and the signatures")
  const text = note.slice(0, split + 1)
  if (text === "\n" || split === 0) return Either.left("the text is empty")
  const lines = note.slice(split + 2, -1).split("\n")
  const firstLine = lineOf(note, split + 2)
  if (lines.length === 1 && lines[0] === "")
    return Either.left(`line ${firstLine}: no signature lines after the blank line`)
  if (lines.length > MAX_SIGNATURES) return Either.left(`more than ${MAX_SIGNATURES} signatures`)
  const signatures: Array<NoteSignature> = []
  for (let i = 0; i < lines.length; i++) {
    const parsed = parseSignatureLine(lines[i]!)
    if (Either.isLeft(parsed)) return Either.left(`line ${firstLine + i}: ${parsed.left}`)
    signatures.push(parsed.right)
  }
  return Either.right({ text, signatures })
}

const parseSignatureLine = (line: string): Either.Either<NoteSignature, string> => {
  if (!line.startsWith(SIGNATURE_PREFIX)) {
    return Either.left("a signature line starts with an em dash (U+2014) and one space")
  }
  const fields = line.slice(SIGNATURE_PREFIX.length).split(" ")
  if (fields.length !== 2)
    return Either.left("a signature line is \u2014 <key name> <base64>, single spaces, nothing after")
  const [name, base64] = fields as [string, string]
  const problem = checkKeyName(name)
  if (problem !== undefined) return Either.left(`the key name ${problem}`)
  const blob = decodeBase64(base64)
  if (blob === undefined) return Either.left("the signature is not canonical base64")
  if (blob.length < 5) return Either.left("the signature is shorter than a key id and a signature")
  return Either.right({ name, keyId: blob.readUInt32BE(0), signature: new Uint8Array(blob.subarray(4)) })
}

/** Parses a note's text as a checkpoint body (see the module's guarantees). */
export const parseCheckpointBody = (text: string): Either.Either<CheckpointBody, string> => {
  const lines = text.slice(0, -1).split("\n")
  if (lines.length !== 3)
    return Either.left(`a checkpoint is 3 lines (origin, size, hash), this text has ${lines.length}`)
  const [origin, size, hash] = lines as [string, string, string]
  const problem = checkKeyName(origin)
  if (problem !== undefined) return Either.left(`line 1: the origin ${problem}`)
  if (!/^[1-9][0-9]*$/.test(size) || !Number.isSafeInteger(Number(size))) {
    return Either.left("line 2: the size must be a decimal integer >= 1 without leading zeros")
  }
  if (!isCanonicalEventHash(hash)) return Either.left("line 3: the hash must be an eventHash (43 base64url characters)")
  return Either.right({ origin, size: Number(size), hash })
}

/**
 * Splits a text of concatenated checkpoint notes (a checkpoints file) into notes: each
 * is three body lines, a blank line and its signature lines. Returns the notes' texts in
 * order, or where the text stops being notes.
 */
export const splitNotes = (text: string): Either.Either<ReadonlyArray<string>, string> => {
  if (text.length === 0) return Either.right([])
  if (!text.endsWith("\n")) return Either.left("the file does not end with a newline")
  const lines = text.slice(0, -1).split("\n")
  const notes: Array<string> = []
  let i = 0
  while (i < lines.length) {
    const start = i
    if (i + 4 > lines.length || lines[i + 3] !== "") {
      return Either.left(`line ${start + 1}: a note is 3 body lines, a blank line and its signature lines`)
    }
    i += 4
    const signaturesFrom = i
    while (i < lines.length && lines[i]!.startsWith(SIGNATURE_PREFIX)) i++
    if (i === signaturesFrom)
      return Either.left(`line ${i + 1}: a signature line starts with an em dash (U+2014) and one space`)
    notes.push(lines.slice(start, i).join("\n") + "\n")
  }
  return Either.right(notes)
}
