import { createDecipheriv, randomBytes, randomUUID } from "node:crypto";
import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { InvalidCiphertextError, ValidationError } from "../errors.ts";
import { RootKeySource } from "../hsm/root-key.ts";
import { SoftwareHsm } from "../hsm/software-hsm.ts";
import { MemoryKeyStore } from "../keystore/memory-key-store.ts";
import { createKms, type Kms } from "../kms.ts";
import type { EncryptionContext } from "../types.ts";
import { BLOB_OVERHEAD, parseBlob } from "./ciphertext-blob.ts";
import { encodeEncryptionContext } from "./encryption-context.ts";

// Section numbers refer to docs/FORMAT.md. The header is parsed here by hand, from the spec,
// rather than with parseBlob, so that the test pins the format and not the implementation.

/** §2, written out independently: count, then pairs sorted by UTF-8 key bytes, uint16 BE. */
function canonicalContext(context: EncryptionContext): Uint8Array {
  const pairs = Object.entries(context)
    .map(([k, v]) => [Buffer.from(k, "utf8"), Buffer.from(v, "utf8")] as const)
    .sort((x, y) => Buffer.compare(x[0], y[0]));
  if (pairs.length === 0) return new Uint8Array(0);
  const parts: Buffer[] = [u16(pairs.length)];
  for (const [k, v] of pairs) parts.push(u16(k.length), k, u16(v.length), v);
  return new Uint8Array(Buffer.concat(parts));
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

/** §3 header fields. */
function readHeader(blob: Uint8Array) {
  const b = Buffer.from(blob);
  const hex = b.subarray(2, 18).toString("hex");
  return {
    formatVersion: b[0],
    algorithm: b[1],
    keyId: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
    keyVersion: b.readUInt32BE(18),
    iv: b.subarray(22, 34),
    ciphertext: b.subarray(34, b.length - 16),
    tag: b.subarray(b.length - 16),
  };
}

const contextArb = fc.dictionary(
  fc.string({ minLength: 1, maxLength: 12, unit: "grapheme" }),
  fc.string({ maxLength: 24, unit: "grapheme" }),
  { maxKeys: 4, noNullPrototype: true },
);

/** Plaintext sizes 1–4096, weighted toward the edges that matter (1, a block, the maximum). */
const plaintextArb = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 4096 }),
  fc
    .constantFrom(1, 2, 15, 16, 17, 31, 32, 33, 4095, 4096)
    .chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
);

let kms: Kms;
let keyId: string;

beforeAll(async () => {
  kms = await createKms();
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

async function expectInvalidCiphertext(
  ciphertextBlob: Uint8Array,
  encryptionContext: EncryptionContext,
): Promise<void> {
  let outcome: unknown;
  try {
    outcome = await kms.decrypt({ ciphertextBlob, encryptionContext });
  } catch (error) {
    outcome = error;
  }
  if (!(outcome instanceof InvalidCiphertextError)) {
    throw new Error(
      `expected InvalidCiphertextError for a ${ciphertextBlob.length}-byte blob, got ${
        outcome instanceof Error ? `${outcome.name}: ${outcome.message}` : "plaintext"
      }`,
    );
  }
}

function flipBit(blob: Uint8Array, bit: number): Uint8Array {
  const copy = Uint8Array.from(blob);
  copy[bit >> 3]! ^= 1 << (bit & 7);
  return copy;
}

/** Every bit of a short blob; for a long one, every header/IV/tag bit plus a sample of the body. */
function bitsToFlip(length: number, random: () => number): number[] {
  const total = length * 8;
  if (length <= 128) return Array.from({ length: total }, (_, i) => i);
  const bits = new Set<number>();
  for (let i = 0; i < 34 * 8; i++) bits.add(i);
  for (let i = total - 16 * 8; i < total; i++) bits.add(i);
  for (let i = 0; i < 96; i++) bits.add(34 * 8 + Math.floor(random() * (total - 50 * 8)));
  return [...bits];
}

describe("canonical context encoding (FORMAT §2)", () => {
  it("matches the worked example and the independent encoder for random contexts", () => {
    expect(Buffer.from(encodeEncryptionContext({ b: "2", a: "" })).toString("hex")).toBe(
      "00020001610000000162000132",
    );
    expect(encodeEncryptionContext({})).toHaveLength(0);
    fc.assert(
      fc.property(contextArb, (context) => {
        expect(encodeEncryptionContext(context)).toEqual(canonicalContext(context));
      }),
    );
  });
});

describe("ciphertext blob v1 layout (FORMAT §3)", () => {
  it("matches the documented header, sizes and overhead for random plaintexts and contexts", async () => {
    const { keyMetadata } = await kms.describeKey({ keyId });
    await fc.assert(
      fc.asyncProperty(plaintextArb, contextArb, async (plaintext, encryptionContext) => {
        const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext, encryptionContext });
        const h = readHeader(ciphertextBlob);
        expect(ciphertextBlob.length).toBe(plaintext.length + 50);
        expect(h.formatVersion).toBe(0x01);
        expect(h.algorithm).toBe(0x01);
        expect(h.keyId).toBe(keyMetadata.keyId);
        expect(h.keyVersion).toBe(1);
        expect(h.ciphertext.length).toBe(plaintext.length);
      }),
      { numRuns: 60 },
    );
    expect(BLOB_OVERHEAD).toBe(50);
  });

  it("carries the current backing key version after rotation", async () => {
    const { keyMetadata } = await kms.createKey();
    await kms.rotateKeyOnDemand({ keyId: keyMetadata.keyId });
    await kms.rotateKeyOnDemand({ keyId: keyMetadata.keyId });
    const { ciphertextBlob } = await kms.encrypt({
      keyId: keyMetadata.keyId,
      plaintext: new Uint8Array([9]),
    });
    expect(readHeader(ciphertextBlob).keyVersion).toBe(3);
  });

  it("is AES-256-GCM with AAD = header || canonical context, decryptable from the spec alone", async () => {
    const root = randomBytes(32);
    const hsm = await SoftwareHsm.open(RootKeySource.fromBytes(root), new MemoryKeyStore());
    await fc.assert(
      fc.asyncProperty(
        plaintextArb,
        contextArb,
        fc.integer({ min: 1, max: 2 ** 32 - 1 }),
        async (plaintext, context, version) => {
          // A fresh key id per run: the HSM caches unwrapped material per key id and version.
          const id = randomUUID();
          const material = randomBytes(32);
          const wrappedMaterial = hsm.wrapMaterial(id, version, Uint8Array.from(material));
          const blob = hsm.encryptToBlob(
            { keyId: id, version, wrappedMaterial },
            plaintext,
            encodeEncryptionContext(context),
          );
          const h = readHeader(blob);
          expect(h.keyId).toBe(id);
          expect(h.keyVersion).toBe(version);
          const decipher = createDecipheriv("aes-256-gcm", material, h.iv);
          decipher.setAAD(Buffer.concat([blob.subarray(0, 22), canonicalContext(context)]));
          decipher.setAuthTag(h.tag);
          const opened = Buffer.concat([decipher.update(h.ciphertext), decipher.final()]);
          expect(opened.equals(Buffer.from(plaintext))).toBe(true);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("uses a fresh IV per encryption", async () => {
    const plaintext = new Uint8Array(16);
    const ivs = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext });
      ivs.add(readHeader(ciphertextBlob).iv.toString("hex"));
    }
    expect(ivs.size).toBe(200);
  });

  it("parseBlob reads the same fields as the spec", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: new Uint8Array(20) });
    const parsed = parseBlob(ciphertextBlob);
    const h = readHeader(ciphertextBlob);
    expect(parsed.keyId).toBe(h.keyId);
    expect(parsed.keyVersion).toBe(h.keyVersion);
    expect(Buffer.from(parsed.iv).equals(h.iv)).toBe(true);
    expect(Buffer.from(parsed.tag).equals(h.tag)).toBe(true);
    expect(parsed.header).toEqual(ciphertextBlob.subarray(0, 22));
  });
});

describe("tampered blobs always fail with InvalidCiphertextError (FORMAT §3.5)", () => {
  it("every single-bit flip is rejected", async () => {
    await fc.assert(
      fc.asyncProperty(
        plaintextArb,
        contextArb,
        fc.infiniteStream(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true })),
        async (plaintext, encryptionContext, randoms) => {
          const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext, encryptionContext });
          const decrypted = await kms.decrypt({ ciphertextBlob, encryptionContext });
          expect(Buffer.from(decrypted.plaintext).equals(Buffer.from(plaintext))).toBe(true);
          const iterator = randoms[Symbol.iterator]();
          const random = () => iterator.next().value as number;
          for (const bit of bitsToFlip(ciphertextBlob.length, random)) {
            await expectInvalidCiphertext(flipBit(ciphertextBlob, bit), encryptionContext);
          }
        },
      ),
      { numRuns: 25 },
    );
  });

  it("every bit of a 1-byte-plaintext blob, with and without a context", async () => {
    for (const encryptionContext of [{}, { purpose: "test", tenant: "ÅÉ🔑" }]) {
      const { ciphertextBlob } = await kms.encrypt({
        keyId,
        plaintext: new Uint8Array([0x42]),
        encryptionContext,
      });
      expect(ciphertextBlob.length).toBe(51);
      for (let bit = 0; bit < ciphertextBlob.length * 8; bit++) {
        await expectInvalidCiphertext(flipBit(ciphertextBlob, bit), encryptionContext);
      }
    }
  });

  it("every truncation (length 1 to len-1) and every one-byte extension is rejected", async () => {
    await fc.assert(
      fc.asyncProperty(
        plaintextArb,
        contextArb,
        fc.integer({ min: 0, max: 255 }),
        async (plaintext, encryptionContext, extra) => {
          const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext, encryptionContext });
          for (let length = 1; length < ciphertextBlob.length; length++) {
            await expectInvalidCiphertext(ciphertextBlob.slice(0, length), encryptionContext);
          }
          const extended = new Uint8Array(ciphertextBlob.length + 1);
          extended.set(ciphertextBlob);
          extended[ciphertextBlob.length] = extra;
          await expectInvalidCiphertext(extended, encryptionContext);
          // Dropping the first byte (a prefix truncation) shifts every field.
          await expectInvalidCiphertext(ciphertextBlob.slice(1), encryptionContext);
        },
      ),
      { numRuns: 15 },
    );
  });

  it("an empty blob is a ValidationError, as AWS's CiphertextBlob length constraint (min 1)", async () => {
    await expect(kms.decrypt({ ciphertextBlob: new Uint8Array(0) })).rejects.toBeInstanceOf(
      ValidationError,
    );
  });

  it("a blob naming an unknown key or version is InvalidCiphertext, like a tampered one", async () => {
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: new Uint8Array([1]) });
    const unknownKey = Uint8Array.from(ciphertextBlob);
    unknownKey.set(randomBytes(16), 2);
    await expectInvalidCiphertext(unknownKey, {});
    const unknownVersion = Uint8Array.from(ciphertextBlob);
    Buffer.from(unknownVersion.buffer).writeUInt32BE(7, 18);
    await expectInvalidCiphertext(unknownVersion, {});
    const versionZero = Uint8Array.from(ciphertextBlob);
    Buffer.from(versionZero.buffer).writeUInt32BE(0, 18);
    await expectInvalidCiphertext(versionZero, {});
  });
});
