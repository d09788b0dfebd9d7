/**
 * Ed25519 signing keys and verifier keys for checkpoint notes, on node:crypto only.
 *
 * Guarantees:
 * - A `Signer` holds its private key as a node:crypto KeyObject inside the instance; the
 *   seed bytes are zeroed once the KeyObject exists. Printing, logging or JSON-encoding
 *   a signer shows its verifier key only (`toString`, `toJSON`, `util.inspect`).
 * - Key files: `writeKeyFile` creates the file with mode 0600 and refuses to replace an
 *   existing one; `readKeyFile` fails with ONE typed error, `CheckpointKeyInvalid`, for a
 *   file that is missing, unreadable, not a signing key, or whose key id does not match
 *   its key. No message ever holds key material.
 * - `openNote` verifies as c2sp.org/signed-note says: signatures by unknown keys (another
 *   name or key id) are ignored; a signature by the trusted key that fails refuses the
 *   whole note; a note with no valid signature by the trusted key is refused.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto"
import { constants as fsConstants } from "node:fs"
import { open, readFile } from "node:fs/promises"
import { inspect } from "node:util"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { CheckpointKeyInvalid } from "../../Errors.js"
import {
  checkKeyName,
  formatNote,
  formatPrivateKey,
  formatSignatureLine,
  formatVerifierKey,
  holdsPrivateKey,
  keyIdHex,
  keyIdOf,
  parseNote,
  parsePrivateKey,
  parseVerifierKey,
  type ParsedNote,
  type VerifierKey
} from "./note.js"

// DER framing of a raw Ed25519 key (RFC 8410): node:crypto takes keys as PKCS#8 / SPKI.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex")
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex")

const rawPublicKey = (key: KeyObject): Buffer =>
  key.export({ format: "der", type: "spki" }).subarray(SPKI_PREFIX.length)

/** A signing key: signs note texts; shows only its verifier key. */
export class Signer {
  readonly #key: KeyObject
  readonly name: string
  readonly keyId: number
  readonly publicKey: Uint8Array
  /** `<name>+<key id>+<base64(0x01 || public key)>`, for verifiers. */
  readonly verifierKey: string

  private constructor(name: string, key: KeyObject) {
    this.#key = key
    this.name = name
    this.publicKey = new Uint8Array(rawPublicKey(createPublicKey(key)))
    this.keyId = keyIdOf(name, this.publicKey)
    this.verifierKey = formatVerifierKey(name, this.publicKey)
  }

  /** A signer from a 32-byte seed; the seed buffer is zeroed afterwards. */
  static fromSeed(name: string, seed: Uint8Array): Signer {
    // A name a verifier refuses would sign notes nobody can open.
    const problem = checkKeyName(name)
    if (problem !== undefined) throw new TypeError(`Signer.fromSeed: the key name ${problem}`)
    const der = Buffer.concat([PKCS8_PREFIX, seed])
    try {
      return new Signer(name, createPrivateKey({ key: der, format: "der", type: "pkcs8" }))
    } finally {
      der.fill(0)
      seed.fill(0)
    }
  }

  /** A new random key named `name`, and its private key text (to be written to a key file). */
  static generate(
    name: string
  ): Either.Either<{ readonly signer: Signer; readonly privateKey: string }, CheckpointKeyInvalid> {
    const problem = checkKeyName(name)
    if (problem !== undefined)
      return Either.left(new CheckpointKeyInvalid({ source: "key name", reason: `the name ${problem}` }))
    const { privateKey } = generateKeyPairSync("ed25519")
    const signer = new Signer(name, privateKey)
    const seed = privateKey.export({ format: "der", type: "pkcs8" }).subarray(PKCS8_PREFIX.length)
    try {
      return Either.right({ signer, privateKey: formatPrivateKey(name, signer.keyId, seed) })
    } finally {
      seed.fill(0)
    }
  }

  /** The signed note: `text` (ending in a newline), a blank line and this key's signature line. */
  signNote(text: string): string {
    const signature = sign(null, Buffer.from(text, "utf8"), this.#key)
    return formatNote(text, [formatSignatureLine(this.name, this.keyId, signature)])
  }

  toString(): string {
    return `Signer(${this.name}+${keyIdHex(this.keyId)})`
  }

  toJSON(): { readonly verifierKey: string } {
    return { verifierKey: this.verifierKey }
  }

  [inspect.custom](): string {
    return this.toString()
  }
}

/** A signer from a private key text (Go's note format), checked against its key id. */
export const signerFromText = (text: string, source: string): Either.Either<Signer, CheckpointKeyInvalid> => {
  const parsed = parsePrivateKey(text)
  if (Either.isLeft(parsed)) return Either.left(new CheckpointKeyInvalid({ source, reason: parsed.left }))
  const { name, keyId, seed } = parsed.right
  let signer: Signer
  try {
    signer = Signer.fromSeed(name, seed)
  } catch {
    return Either.left(new CheckpointKeyInvalid({ source, reason: "not a usable Ed25519 key" }))
  }
  return signer.keyId === keyId
    ? Either.right(signer)
    : Either.left(new CheckpointKeyInvalid({ source, reason: "its key id does not match its key" }))
}

/** Reads a key file written by `writeKeyFile` (or Go's note.GenerateKey). One typed error for every problem. */
export const readKeyFile = (path: string): Effect.Effect<Signer, CheckpointKeyInvalid> =>
  // A key text given where a path belongs must not become an error's `source` (it would be logged).
  holdsPrivateKey(path)
    ? Effect.fail(
        new CheckpointKeyInvalid({
          source: "signing key",
          reason: "a key text was given where a key file path was expected (use signerFromKey)"
        })
      )
    : readKeyFileAt(path)

const readKeyFileAt = (path: string): Effect.Effect<Signer, CheckpointKeyInvalid> =>
  Effect.flatMap(
    Effect.tryPromise({
      try: () => readFile(path, "utf8"),
      catch: (error) => {
        const code = (error as { code?: string }).code
        const reason =
          code === "ENOENT"
            ? "no such file"
            : code === "EACCES" || code === "EPERM"
              ? "permission denied"
              : code === "EISDIR"
                ? "is a directory"
                : `cannot be read (${code ?? "error"})`
        return new CheckpointKeyInvalid({ source: path, reason })
      }
    }),
    // One trailing newline is allowed (an editor's); nothing else.
    (text) => signerFromText(text.endsWith("\n") ? text.slice(0, -1) : text, path)
  )

/**
 * Writes a private key text to a NEW file with mode 0600 (refusing to replace an existing
 * file), followed by a newline. Fails with `CheckpointKeyInvalid` naming the path.
 */
export const writeKeyFile = (path: string, privateKey: string): Effect.Effect<void, CheckpointKeyInvalid> =>
  Effect.tryPromise({
    try: async () => {
      const file = await open(path, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL, 0o600)
      try {
        // The mode given to open is masked by the umask; set it outright.
        await file.chmod(0o600)
        await file.writeFile(`${privateKey}\n`, "utf8")
        await file.sync()
      } finally {
        await file.close()
      }
    },
    catch: (error) => {
      const code = (error as { code?: string }).code
      const reason =
        code === "EEXIST" ? "already exists (a key file is never replaced)" : `cannot be written (${code ?? "error"})`
      return new CheckpointKeyInvalid({ source: path, reason })
    }
  })

/** A verifier key parsed and checked, or `CheckpointKeyInvalid`. */
export const verifierFromText = (text: string): Either.Either<VerifierKey, CheckpointKeyInvalid> =>
  Either.mapLeft(
    parseVerifierKey(text.trim()),
    (reason) => new CheckpointKeyInvalid({ source: "verifier key", reason })
  )

const publicKeyObjects = new WeakMap<VerifierKey, KeyObject>()

const publicKeyObject = (key: VerifierKey): KeyObject => {
  let object = publicKeyObjects.get(key)
  if (object === undefined) {
    object = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, key.publicKey]), format: "der", type: "spki" })
    publicKeyObjects.set(key, object)
  }
  return object
}

/** Whether `signature` is `key`'s Ed25519 signature of `text`. */
export const verifies = (key: VerifierKey, text: string, signature: Uint8Array): boolean => {
  if (signature.length !== 64) return false
  try {
    return verify(null, Buffer.from(text, "utf8"), publicKeyObject(key), signature)
  } catch {
    return false
  }
}

/**
 * Parses `note` strictly and verifies it against the trusted `key`; returns the parsed
 * note or why it is refused.
 */
export const openNote = (note: string, key: VerifierKey): Either.Either<ParsedNote, string> =>
  Either.flatMap(parseNote(note), (parsed) => {
    const ours = parsed.signatures.filter((s) => s.name === key.name && s.keyId === key.keyId)
    if (ours.length === 0) {
      const others = parsed.signatures.map((s) => `${s.name}+${keyIdHex(s.keyId)}`).join(", ")
      return Either.left(`no signature by ${key.name}+${keyIdHex(key.keyId)} (signed by ${others})`)
    }
    for (const signature of ours) {
      if (!verifies(key, parsed.text, signature.signature)) {
        return Either.left(
          `the signature by ${key.name}+${keyIdHex(key.keyId)} does not verify (the note was altered or signed by another key)`
        )
      }
    }
    return Either.right(parsed)
  })
