import { describe, expect, test, vi } from "vitest";
import { InvalidCiphertextError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * The plaintext encoding a value opens to (AES-SIV's output in deterministic mode, GCM's in
 * randomized mode) is wiped once the value is decoded from it — and when it fails to decode —
 * on every read path. What a read returns is a copy that outlives the wipe.
 */

const opened = vi.hoisted(() => ({ plaintexts: [] as Uint8Array[] }));

vi.mock("@noble/ciphers/aes.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("@noble/ciphers/aes.js")>();
  const aessiv = (...args: Parameters<typeof real.aessiv>) => {
    const cipher = real.aessiv(...args);
    return {
      ...cipher,
      encrypt: (plaintext: Uint8Array) => cipher.encrypt(plaintext),
      decrypt: (ciphertext: Uint8Array) => {
        const plaintext = cipher.decrypt(ciphertext);
        opened.plaintexts.push(plaintext);
        return plaintext;
      },
    };
  };
  return { ...real, aessiv };
});

vi.mock("../hsm/aes-gcm.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("../hsm/aes-gcm.ts")>();
  return {
    ...real,
    gcmOpenFrom: (...args: Parameters<typeof real.gcmOpenFrom>) => {
      const plaintext = real.gcmOpenFrom(...args);
      if (plaintext !== undefined) opened.plaintexts.push(plaintext);
      return plaintext;
    },
  };
});

// Short values open through GcmKey (one at a time) or GcmOpenBatch (decryptMany's batch).
vi.mock("../hsm/gcm-key.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("../hsm/gcm-key.ts")>();
  class GcmKey extends real.GcmKey {
    override openFrom(...args: Parameters<InstanceType<typeof real.GcmKey>["openFrom"]>) {
      const plaintext = super.openFrom(...args);
      if (plaintext !== undefined) opened.plaintexts.push(plaintext);
      return plaintext;
    }
  }
  class GcmOpenBatch extends real.GcmOpenBatch {
    override open() {
      const failed = super.open();
      opened.plaintexts.push(this.plaintext);
      return failed;
    }
  }
  return { ...real, GcmKey, GcmOpenBatch };
});

const allZero = (bytes: Uint8Array) => bytes.every((b) => b === 0);

const at = (field: string): FieldBinding => ({ model: "User", field, context: { tenantId: "a" } });

async function engines() {
  const kms = await createKms({ audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const store = new MemoryDataKeyStore();
  const engine = () => new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId });
  return { writer: engine(), engine };
}

const bytes = new Uint8Array([1, 2, 3, 250]);
const values = [
  { type: "string", value: "alice@example.com" },
  { type: "bytes", value: bytes },
  { type: "json", value: { plan: "pro", seats: 3 } },
  { type: "number", value: 42.5 },
  // Past SHORT_GCM_MAX_BYTES: node:crypto's GCM (gcmOpenFrom) opens it.
  { type: "string", value: "a long note ".repeat(20) },
] as const;

describe.each(["deterministic", "randomized"] as const)("%s values", (mode) => {
  test("every read path wipes the plaintext it opened, and returns a copy", async () => {
    const { writer, engine } = await engines();
    for (const { type, value } of values) {
      const spec: FieldSpec = { type, mode };
      const stored = await writer.encrypt(at(type), spec, value);
      const text = await writer.encryptText(at(type), spec, value);
      const reader = engine();
      opened.plaintexts.length = 0;
      // Uncached (loads the key), then cached; bytes and text; one by one and in a batch.
      const read = [
        await reader.decrypt(at(type), spec, stored),
        await reader.decryptText(at(type), spec, text),
        reader.decryptIfCached(at(type), spec, stored),
        ...(await engine().decryptMany([{ binding: at(type), spec, stored: text }])),
        ...(await reader.decryptMany([{ binding: at(type), spec, stored }])),
      ];
      expect(read).toEqual(Array(5).fill(value));
      // A long value's buffer is seen twice: by GcmKey.openFrom and the gcmOpenFrom it calls.
      expect(new Set(opened.plaintexts).size).toBe(5);
      expect(opened.plaintexts.filter((p) => !allZero(p))).toEqual([]);
    }
  });

  test("a plaintext that fails to decode as the declared type is wiped too", async () => {
    const { writer, engine } = await engines();
    const stored = await writer.encrypt(at("email"), { type: "string", mode }, "alice");
    const reader = engine();
    opened.plaintexts.length = 0;
    const asNumber: FieldSpec = { type: "number", mode };
    await expect(reader.decrypt(at("email"), asNumber, stored)).rejects.toThrow(
      InvalidCiphertextError,
    );
    expect(() => reader.decryptIfCached(at("email"), asNumber, stored)).toThrow(
      InvalidCiphertextError,
    );
    expect(opened.plaintexts).toHaveLength(2);
    expect(opened.plaintexts.filter((p) => !allZero(p))).toEqual([]);
  });
});
