/**
 * The key commitment is checked on its own (docs/FORMAT.md §5.4), not only through the header
 * tag that covers it. Flipping a commitment byte alone proves nothing: the header tag fails
 * first. So these tests change the commitment and then recompute the header tag under the
 * real message key, the way someone holding the data key would forge it; only the commitment
 * check can refuse what is left. Everything is derived from FORMAT §5.2–§5.4 with node:crypto,
 * starting from the raw AES wrapping key, without the library's own key schedule.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  createDecryptStream,
  DataKeyCache,
  decryptMessage,
  decryptTransformStream,
  encodeEncryptionContext,
  encryptMessage,
  InvalidCiphertextError,
  RawAesKeyring,
} from "../../src/index.ts";
import { throughNode, throughWeb } from "./helpers.ts";

const wrappingKey = randomBytes(32);
const NAMES = { keyNamespace: "commitment", keyName: "aes-1" } as const;
const keyring = new RawAesKeyring({ ...NAMES, wrappingKey });
const SUITE_ID = 0x0001; // AES_256_GCM_HKDF_SHA512_COMMIT_KEY: no signature to re-make

interface Parsed {
  messageId: Buffer;
  context: Buffer;
  /** The one encrypted data key's ciphertext (§5.3). */
  wrapped: Buffer;
  /** Offset of the 32-byte commitment; the 16-byte header tag follows it. */
  commitmentAt: number;
}

/** Walks the header of §5.2 (one encrypted data key). */
function parse(message: Uint8Array): Parsed {
  const bytes = Buffer.from(message);
  expect(bytes[0]).toBe(0x01);
  expect(bytes.readUInt16BE(1)).toBe(SUITE_ID);
  const messageId = bytes.subarray(3, 35);
  const contextLength = bytes.readUInt16BE(35);
  const context = bytes.subarray(37, 37 + contextLength);
  let at = 37 + contextLength;
  expect(bytes.readUInt16BE(at)).toBe(1);
  at += 2;
  const fields: Buffer[] = [];
  for (let i = 0; i < 3; i++) {
    const length = bytes.readUInt16BE(at);
    fields.push(bytes.subarray(at + 2, at + 2 + length));
    at += 2 + length;
  }
  expect(fields[0]!.toString()).toBe(NAMES.keyNamespace);
  expect(fields[1]!.toString()).toBe(NAMES.keyName);
  return { messageId, context, wrapped: fields[2]!, commitmentAt: at + 4 };
}

/** §5.3 raw AES: IV (12) | AES-256-GCM(data key) (32) | tag (16), AAD = names and context. */
function unwrap(parsed: Parsed): Buffer {
  const name = (s: string): Buffer => {
    const b = Buffer.from(s);
    const length = Buffer.alloc(2);
    length.writeUInt16BE(b.length);
    return Buffer.concat([length, b]);
  };
  const decipher = createDecipheriv("aes-256-gcm", wrappingKey, parsed.wrapped.subarray(0, 12));
  decipher.setAAD(Buffer.concat([name(NAMES.keyNamespace), name(NAMES.keyName), parsed.context]));
  decipher.setAuthTag(parsed.wrapped.subarray(44, 60));
  return Buffer.concat([decipher.update(parsed.wrapped.subarray(12, 44)), decipher.final()]);
}

/** §5.4: one HKDF-SHA-512 call, message key then commitment. */
function keySchedule(
  dataKey: Uint8Array,
  messageId: Uint8Array,
): { key: Buffer; commitment: Buffer } {
  const info = Buffer.alloc(14);
  info.write("KMSMSG1 KEYS", 0, "ascii");
  info.writeUInt16BE(SUITE_ID, 12);
  const okm = Buffer.from(hkdfSync("sha512", dataKey, messageId, info, 64));
  return { key: okm.subarray(0, 32), commitment: okm.subarray(32, 64) };
}

/** §5.2: AES-256-GCM, IV = 12 zero bytes, AAD = every header byte before the tag, no plaintext. */
function headerTag(key: Uint8Array, headerBody: Uint8Array): Buffer {
  const cipher = createCipheriv("aes-256-gcm", key, Buffer.alloc(12));
  cipher.setAAD(headerBody);
  cipher.final();
  return cipher.getAuthTag();
}

/** The message with `commitment` in place of its own and a header tag that is valid again. */
function withCommitment(message: Uint8Array, commitment: Uint8Array): Uint8Array {
  const parsed = parse(message);
  const { key } = keySchedule(unwrap(parsed), parsed.messageId);
  const forged = Buffer.from(message);
  forged.set(commitment, parsed.commitmentAt);
  const tagAt = parsed.commitmentAt + 32;
  forged.set(headerTag(key, forged.subarray(0, tagAt)), tagAt);
  return new Uint8Array(forged);
}

const plaintext = randomBytes(64 * 3 + 5);

async function encrypt(encryptionContext?: Record<string, string>): Promise<Uint8Array> {
  return encryptMessage(plaintext, {
    keyring,
    frameLength: 64,
    ...(encryptionContext === undefined ? {} : { encryptionContext }),
  });
}

describe("key commitment (FORMAT §5.4) is checked, not only covered by the header tag", () => {
  it("the hand-made key schedule reproduces the stored commitment and header tag", async () => {
    const message = await encrypt({ tenant: "acme" });
    const parsed = parse(message);
    expect(parsed.context.equals(encodeEncryptionContext({ tenant: "acme" }))).toBe(true);
    const { key, commitment } = keySchedule(unwrap(parsed), parsed.messageId);
    const stored = Buffer.from(message);
    const at = parsed.commitmentAt;
    expect(stored.subarray(at, at + 32).equals(commitment)).toBe(true);
    const tag = headerTag(key, stored.subarray(0, at + 32));
    expect(stored.subarray(at + 32, at + 48).equals(tag)).toBe(true);
    // Re-tagging with the message's own commitment changes nothing: the forgery below differs
    // from a valid message in the commitment alone.
    expect(Buffer.from(withCommitment(message, commitment)).equals(stored)).toBe(true);
  });

  const forgeries: [string, (own: Buffer, messageId: Buffer) => Uint8Array][] = [
    [
      "one bit of it flipped",
      (own) => {
        const flipped = Buffer.from(own);
        flipped[31] = flipped[31]! ^ 0x01;
        return flipped;
      },
    ],
    ["random bytes", () => randomBytes(32)],
    ["all zero", () => new Uint8Array(32)],
    ["another data key's commitment", (_own, id) => keySchedule(randomBytes(32), id).commitment],
  ];

  describe.each([
    ["no context", undefined],
    ["a context", { tenant: "acme", purpose: "commitment" }],
  ] as const)("with %s", (_label, encryptionContext) => {
    it.each(forgeries)(
      "a re-tagged header with the commitment replaced by %s is refused everywhere",
      async (_name, forge) => {
        const message = await encrypt(encryptionContext);
        const parsed = parse(message);
        const { commitment } = keySchedule(unwrap(parsed), parsed.messageId);
        const forged = withCommitment(message, forge(commitment, parsed.messageId));
        expect(Buffer.from(forged).equals(Buffer.from(message))).toBe(false);
        const expected = encryptionContext === undefined ? {} : { encryptionContext };

        await expect(decryptMessage(forged, { keyring, ...expected })).rejects.toBeInstanceOf(
          InvalidCiphertextError,
        );
        await expect(
          throughNode(createDecryptStream({ keyring, ...expected }), [forged]),
        ).rejects.toBeInstanceOf(InvalidCiphertextError);
        await expect(
          throughWeb(decryptTransformStream({ keyring, ...expected }), [forged]),
        ).rejects.toBeInstanceOf(InvalidCiphertextError);

        // A data key cached from the genuine message (same copies, same context) is checked too.
        const cache = new DataKeyCache({ maxAgeMs: 60_000 });
        const genuine = await decryptMessage(message, {
          keyring,
          dataKeyCache: cache,
          ...expected,
        });
        expect(Buffer.from(genuine.plaintext).equals(plaintext)).toBe(true);
        await expect(
          decryptMessage(forged, { keyring, dataKeyCache: cache, ...expected }),
        ).rejects.toBeInstanceOf(InvalidCiphertextError);
      },
    );
  });
});
