import { describe, expect, test, vi } from "vitest";
import { DisabledError } from "../errors.ts";
import type { KmsLike } from "../kms-like.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine } from "./field-encryption-engine.ts";

/**
 * A value whose data key cannot be had (the KMS key is disabled, the KMS is down) is refused,
 * and its encoded plaintext is wiped like a sealed one's: nothing of it stays in memory.
 */

const encoded = vi.hoisted(() => ({ buffers: [] as Uint8Array[] }));

vi.mock("./value-codec.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("./value-codec.ts")>();
  return {
    ...real,
    encodeFieldValue: (...args: Parameters<typeof real.encodeFieldValue>) => {
      const bytes = real.encodeFieldValue(...args);
      encoded.buffers.push(bytes);
      return bytes;
    },
  };
});

const refusingKms = {
  generateDataKey: () => Promise.reject(new DisabledError("the key is disabled")),
  decrypt: () => Promise.reject(new DisabledError("the key is disabled")),
} as unknown as KmsLike;

const at: FieldBinding = { model: "User", field: "email", context: { tenantId: "a" } };

describe("encrypt when no data key can be had", () => {
  test.each(["randomized", "deterministic"] as const)(
    "%s: refused, the encoded value wiped",
    async (mode) => {
      encoded.buffers.length = 0;
      const engine = new FieldEncryptionEngine({
        kms: refusingKms,
        dataKeyStore: new MemoryDataKeyStore(),
        keyId: "alias/app",
      });
      await expect(
        engine.encrypt(at, { type: "string", mode }, "alice@example.com"),
      ).rejects.toBeInstanceOf(DisabledError);
      const mine = encoded.buffers.filter((b) => b.length >= "alice@example.com".length);
      expect(mine.length).toBeGreaterThan(0);
      for (const bytes of mine) expect(bytes.every((b) => b === 0)).toBe(true);
    },
  );
});
