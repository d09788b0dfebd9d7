/**
 * Checkpoint notes: the C2SP signed-note text byte for byte, the strict parser's
 * refusals, verifier keys, and key files (mode 0600, one typed error for every problem,
 * never any key material in a message). No Redis needed.
 *
 * Two external anchors, so these tests do not just compare the code with itself:
 * - Go's golang.org/x/mod/sumdb/note reference example (the PeterNeumann key and its
 *   published signed note), which any C2SP-conformant implementation reproduces exactly
 *   (Ed25519 signatures are deterministic).
 * - Our own checkpoint vector, computed with an independent implementation (Python's
 *   `cryptography` package, Ed25519 of RFC 8032, and hashlib for the key id):
 *     seed    = the 32 bytes 0x00 0x01 … 0x1f
 *     origin  = "example.com/haechi-audit"          (also the key name)
 *     size    = 3
 *     hash    = base64url(sha256("record 3")), unpadded = "cyLhw5O_Lf_XwgRQprQhuGgTiGlrX67k5dIc8tNY61g"
 *     key id  = sha256(origin || 0x0a || 0x01 || public key)[:4] = 02c49844
 *   giving the note, the verifier key and the private key text below.
 */
import { mkdtemp, readFile, rm, stat, writeFile, chmod } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { inspect } from "node:util"
import { Effect, Either, Exit, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Checkpoint from "../src/Checkpoint.js"
import { CheckpointKeyInvalid, CheckpointNoteRejected } from "../src/Errors.js"
import { parseNote } from "../src/internal/checkpoint/note.js"

const VECTOR = {
  seedHex: "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
  origin: "example.com/haechi-audit",
  size: 3,
  hash: "cyLhw5O_Lf_XwgRQprQhuGgTiGlrX67k5dIc8tNY61g",
  privateKey: "PRIVATE+KEY+example.com/haechi-audit+02c49844+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f",
  verifierKey: "example.com/haechi-audit+02c49844+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
  note:
    "example.com/haechi-audit\n3\ncyLhw5O_Lf_XwgRQprQhuGgTiGlrX67k5dIc8tNY61g\n\n" +
    "\u2014 example.com/haechi-audit AsSYRJfbsUBkaQiAZLGgCipIpQ4kgLXbjodb1LRLTDrqn6QfEteKw1qQiBCI8yY+xQVLXaxLJ5UK/aoT9sOmJd3Nugc=\n"
}

// golang.org/x/mod/sumdb/note, note.go's package example.
const GO = {
  privateKey: "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
  verifierKey: "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
  text: "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n",
  note:
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n" +
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
}

const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect)
const failure = async <A, E>(effect: Effect.Effect<A, E>): Promise<E> => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
  if (error === undefined) throw new Error(`expected a typed failure, got ${exit.cause._tag}`)
  return error
}

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "haechi-note-"))
})
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe("the signed-note text, byte for byte", () => {
  it("our checkpoint vector: key seed, origin, size and hash give exactly this note", async () => {
    const signer = await run(Checkpoint.signerFromKey(VECTOR.privateKey))
    expect(signer.verifierKey).toBe(VECTOR.verifierKey)
    const signed = Checkpoint.sign(signer, { size: VECTOR.size, hash: VECTOR.hash })
    expect(signed.note).toBe(VECTOR.note)
    expect(Buffer.from(signed.note, "utf8").includes(Buffer.from([0xe2, 0x80, 0x94, 0x20]))).toBe(true)
    const opened = await run(Checkpoint.open(VECTOR.note, VECTOR.verifierKey))
    expect(opened).toEqual({ origin: VECTOR.origin, size: 3, hash: VECTOR.hash, note: VECTOR.note })
    // The private key text is the seed with the type byte.
    expect(Buffer.from(VECTOR.privateKey.split("+").slice(4).join("+"), "base64").subarray(1).toString("hex")).toBe(
      VECTOR.seedHex
    )
  })

  it("Go's sumdb/note example: the same key signs the same text into the published note", async () => {
    const signer = await run(Checkpoint.signerFromKey(GO.privateKey))
    expect(signer.verifierKey).toBe(GO.verifierKey)
    expect(signer.signNote(GO.text)).toBe(GO.note)
    const parsed = parseNote(GO.note)
    expect(Either.isRight(parsed) && parsed.right.text).toBe(GO.text)
  })

  it("a generated key round-trips: sign, open; its verifier key names it", async () => {
    const { signer, privateKey } = await run(Checkpoint.generateKey("log.example/audit"))
    expect(signer.verifierKey).toMatch(/^log\.example\/audit\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}$/)
    const again = await run(Checkpoint.signerFromKey(privateKey))
    expect(again.verifierKey).toBe(signer.verifierKey)
    const hash = VECTOR.hash
    const signed = Checkpoint.sign(signer, { size: 42, hash })
    expect(signed.note.startsWith(`log.example/audit\n42\n${hash}\n\n\u2014 log.example/audit `)).toBe(true)
    expect(await run(Checkpoint.open(signed.note, signer.verifierKey))).toMatchObject({ size: 42, hash })
  })
})

describe("the strict parser refuses", () => {
  const refused = async (note: string, reason: RegExp) => {
    const error = await failure(Checkpoint.open(note, VECTOR.verifierKey))
    expect(error).toBeInstanceOf(CheckpointNoteRejected)
    expect((error as CheckpointNoteRejected).reason).toMatch(reason)
  }
  const [origin, size, hash, blank, signature] = VECTOR.note.slice(0, -1).split("\n") as [
    string,
    string,
    string,
    string,
    string
  ]
  const join = (...lines: Array<string>) => lines.join("\n") + "\n"

  it("the vector itself is accepted (the base of every refusal below)", async () => {
    expect(join(origin, size, hash, blank, signature)).toBe(VECTOR.note)
    await expect(
      run(Checkpoint.open(join(origin, size, hash, blank, signature), VECTOR.verifierKey))
    ).resolves.toMatchObject({ size: 3 })
  })

  it("trailing spaces, on a body line or the signature line", async () => {
    await refused(
      join(origin + " ", size, hash, blank, signature),
      /signature.*does not verify|origin contains a space/
    )
    await refused(join(origin, size, hash, blank, signature + " "), /line 5: a signature line is/)
  })

  it("a missing blank line, an extra blank line in the signatures, no final newline", async () => {
    await refused([origin, size, hash, signature].join("\n") + "\n", /no blank line/)
    await refused(join(origin, size, hash, blank, signature, ""), /no signature lines/)
    await refused(VECTOR.note.slice(0, -1), /does not end with a newline/)
  })

  it("a wrong dash: hyphen, en dash, two hyphens, no space", async () => {
    for (const dash of ["- ", "\u2013 ", "-- ", "\u2014"]) {
      await refused(join(origin, size, hash, blank, dash + signature.slice(2)), /em dash/)
    }
  })

  it("bad base64: not base64, missing padding, slack bits, too short", async () => {
    const [, name, blob] = signature.split(" ") as [string, string, string]
    await refused(join(origin, size, hash, blank, `\u2014 ${name} ${blob.replace(/\+/, "*")}`), /not canonical base64/)
    await refused(join(origin, size, hash, blank, `\u2014 ${name} ${blob.slice(0, -1)}`), /not canonical base64/)
    await refused(join(origin, size, hash, blank, `\u2014 ${name} AAAAAB==`), /not canonical base64/)
    await refused(join(origin, size, hash, blank, `\u2014 ${name} AAAAAA==`), /shorter than a key id/)
  })

  it("an unknown key id or name: no signature by the trusted key", async () => {
    const [, name, blob] = signature.split(" ") as [string, string, string]
    const bytes = Buffer.from(blob, "base64")
    bytes[0] = bytes[0]! ^ 0xff
    await refused(
      join(origin, size, hash, blank, `\u2014 ${name} ${bytes.toString("base64")}`),
      /no signature by example\.com\/haechi-audit\+02c49844/
    )
    await refused(join(origin, size, hash, blank, `\u2014 other.example ${blob}`), /no signature by/)
  })

  it("an altered note: a body byte or a signature byte changed", async () => {
    await refused(join(origin, "4", hash, blank, signature), /does not verify/)
    await refused(join(origin, size, hash.replace(/^c/, "d"), blank, signature), /does not verify/)
    const [, name, blob] = signature.split(" ") as [string, string, string]
    const bytes = Buffer.from(blob, "base64")
    bytes[10] = bytes[10]! ^ 0x01
    await refused(join(origin, size, hash, blank, `\u2014 ${name} ${bytes.toString("base64")}`), /does not verify/)
  })

  it("a note signed by another key is refused, even with the same name", async () => {
    const { signer } = await run(Checkpoint.generateKey(VECTOR.origin))
    const forged = Checkpoint.sign(signer, { size: 3, hash: VECTOR.hash })
    await refused(forged.note, /no signature by example\.com\/haechi-audit\+02c49844/)
  })

  it("CR line endings, control characters, a lone surrogate", async () => {
    await refused(VECTOR.note.replace(/\n/g, "\r\n"), /carriage return/)
    await refused(
      VECTOR.note.replace("example.com/haechi-audit\n", "example.com/haechi-audit\t\n"),
      /control character U\+0009/
    )
    await refused(VECTOR.note.replace("example.com", "example.\ud800com"), /lone surrogate/)
  })

  it("bodies that are not checkpoints: an extension line, size 0 or 03, a hash that is not an eventHash", async () => {
    const signer = await run(Checkpoint.signerFromKey(VECTOR.privateKey))
    const body = async (text: string, reason: RegExp) => refused(signer.signNote(text), reason)
    await body(`${origin}\n3\n${hash}\nextension\n`, /3 lines/)
    await body(`${origin}\n0\n${hash}\n`, /size must be a decimal integer >= 1/)
    await body(`${origin}\n03\n${hash}\n`, /without leading zeros/)
    await body(`${origin}\n3\n${Buffer.from(hash, "base64url").toString("base64")}\n`, /eventHash/)
    await body(`${origin}\n3\n${hash.slice(0, -1)}h\n`, /eventHash/)
    await body(`other.example\n3\n${hash}\n`, /origin "other.example" is not the key's name/)
  })
})

describe("verifier keys", () => {
  it("a malformed or inconsistent verifier key is CheckpointKeyInvalid", async () => {
    const bad = [
      "",
      "example.com/haechi-audit",
      VECTOR.verifierKey.replace("02c49844", "02c49845"),
      VECTOR.verifierKey.replace("02c49844", "02C49844"),
      VECTOR.verifierKey.replace("+AQ", "+Ag"),
      VECTOR.verifierKey.slice(0, -1),
      "bad name+02c49844+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
    ]
    for (const key of bad) {
      const error = await failure(Checkpoint.verifierKey(key))
      expect(error, key).toBeInstanceOf(CheckpointKeyInvalid)
    }
    expect((await run(Checkpoint.verifierKey(VECTOR.verifierKey))).keyId).toBe(0x02c49844)
  })
})

describe("key files", () => {
  it("keygen writes a 0600 file that loads, prints only the verifier key, and never replaces a file", async () => {
    const out = join(dir, "log.key")
    const verifierKey = await run(Checkpoint.keygen({ name: "log.example/a", out }))
    expect((await stat(out)).mode & 0o777).toBe(0o600)
    const text = await readFile(out, "utf8")
    expect(text).toMatch(/^PRIVATE\+KEY\+log\.example\/a\+[0-9a-f]{8}\+\S+\n$/)
    const signer = await run(Checkpoint.loadKey(out))
    expect(signer.verifierKey).toBe(verifierKey)
    // A signer shows its verifier key only.
    const secret = text.trim().split("+").slice(4).join("+")
    for (const shown of [String(signer), JSON.stringify(signer), inspect(signer, { showHidden: true, depth: 5 })]) {
      expect(shown).not.toContain(secret)
      expect(shown).not.toContain("PRIVATE")
    }
    const again = await failure(Checkpoint.keygen({ name: "log.example/a", out }))
    expect(again).toMatchObject({
      _tag: "CheckpointKeyInvalid",
      source: out,
      reason: expect.stringMatching(/already exists/)
    })
    expect(await readFile(out, "utf8")).toBe(text)
  })

  it("a missing, unreadable, wrong or damaged key file is one CheckpointKeyInvalid naming the file, without key material", async () => {
    const cases: Array<[string, string | undefined, RegExp]> = [
      ["missing.key", undefined, /no such file/],
      ["verifier.key", VECTOR.verifierKey, /not a signing key/],
      ["damaged.key", VECTOR.privateKey.replace("02c49844", "02c49845"), /key id does not match/],
      ["short.key", VECTOR.privateKey.slice(0, -4), /not canonical base64|not an Ed25519 key/],
      ["crlf.key", VECTOR.privateKey + "\r\n", /not canonical base64/]
    ]
    for (const [name, content, reason] of cases) {
      const path = join(dir, name)
      if (content !== undefined) await writeFile(path, content)
      const error = await failure(Checkpoint.loadKey(path))
      expect(error, name).toBeInstanceOf(CheckpointKeyInvalid)
      expect(error, name).toMatchObject({ source: path, reason: expect.stringMatching(reason) })
      expect(error.message).not.toContain("AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f".slice(0, 20))
    }
    if (process.getuid?.() !== 0) {
      const path = join(dir, "unreadable.key")
      await writeFile(path, VECTOR.privateKey)
      await chmod(path, 0o000)
      expect(await failure(Checkpoint.loadKey(path))).toMatchObject({ reason: "permission denied" })
    }
    const dirError = await failure(Checkpoint.loadKey(dir))
    expect(dirError).toMatchObject({ _tag: "CheckpointKeyInvalid", reason: "is a directory" })
  })

  it("a key name that cannot be an origin is refused", async () => {
    for (const name of ["", "has space", "a+b", "tab\there"]) {
      expect(await failure(Checkpoint.generateKey(name)), JSON.stringify(name)).toBeInstanceOf(CheckpointKeyInvalid)
    }
    expect(Redacted.isRedacted((await run(Checkpoint.generateKey("ok.example"))).privateKey)).toBe(true)
  })
})
