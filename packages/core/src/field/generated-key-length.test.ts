import { describe, expect, test } from "vitest";
import { KmsInternalError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import type { GenerateDataKeyResponse } from "../types.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine } from "./field-encryption-engine.ts";

/**
 * FORMAT §6.1 item 6: a data key of other than 32 bytes is refused. An unwrapped one always was;
 * one that GenerateDataKey answers with must be too, before its row is stored or anything is
 * sealed under it — a stable key feeds HKDF, which takes any length, so a 1-byte key would make
 * every deterministic value and blind index of the context a guess among 256.
 */

async function setup(length: number) {
  const kms = await createKms({ audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const handed: Uint8Array[] = [];
  // A KmsLike that keeps the real wrapped key but answers with `length` bytes of it (cut, or
  // padded with zeros).
  const short: KmsLike = {
    encrypt: (r, o) => kms.encrypt(r, o),
    decrypt: (r, o) => kms.decrypt(r, o),
    generateDataKey: async (r, o): Promise<GenerateDataKeyResponse> => {
      const generated = await kms.generateDataKey(r, o);
      const plaintext = new Uint8Array(length);
      plaintext.set(generated.plaintext.subarray(0, length));
      generated.plaintext.fill(0);
      handed.push(plaintext);
      return { ...generated, plaintext };
    },
    generateDataKeyWithoutPlaintext: (r, o) => kms.generateDataKeyWithoutPlaintext(r, o),
    sign: (r, o) => kms.sign(r, o),
    verify: (r, o) => kms.verify(r, o),
    generateMac: (r, o) => kms.generateMac(r, o),
    verifyMac: (r, o) => kms.verifyMac(r, o),
    getPublicKey: (r, o) => kms.getPublicKey(r, o),
  };
  const store = new MemoryDataKeyStore();
  const engine = new FieldEncryptionEngine({ kms: short, dataKeyStore: store, keyId });
  return { engine, store, handed };
}

const at = { model: "User", field: "email", context: { tenantId: "a" } };

describe.each([1, 16, 31, 33])("GenerateDataKey answering with %i bytes", (length) => {
  test.each([
    ["a blind index", (e: FieldEncryptionEngine) => e.blindIndex(at, {}, "alice")],
    [
      "a deterministic value",
      (e: FieldEncryptionEngine) =>
        e.encryptText(at, { type: "string", mode: "deterministic" }, "alice"),
    ],
    ["a randomized value", (e: FieldEncryptionEngine) => e.encrypt(at, { type: "string" }, "a")],
  ])("%s is refused, nothing is stored and the key is wiped", async (_, write) => {
    const { engine, store, handed } = await setup(length);
    const error = await write(engine).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toMatch(`${length} bytes`);
    expect(store.size).toBe(0);
    expect(handed.length).toBeGreaterThan(0);
    expect(handed.every((key) => key.every((byte) => byte === 0))).toBe(true);
  });
});
