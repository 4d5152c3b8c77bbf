/**
 * `inspect(stored, binding)` refuses what `decrypt(binding, …)` refuses (FORMAT §6.2.3), whether
 * or not the engine already holds the value's data key: a warm engine must not tell a caller
 * bound to tenant A which data key and KMS key a value of tenant B is under, when a cold one
 * answers with the generic error.
 */
import { describe, expect, it } from "vitest";
import { InvalidCiphertextError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { EncryptionContext } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

const MODES = ["randomized", "deterministic"] as const;
const of = (tenantId: string): FieldBinding => ({
  model: "Invoice",
  field: "iban",
  context: { tenantId },
});

async function twoTenants() {
  const kms = await createKms({ audit: false });
  const keyA = (await kms.createKey()).keyMetadata.keyId;
  const keyB = (await kms.createKey()).keyMetadata.keyId;
  const store = new MemoryDataKeyStore();
  const engine = () =>
    new FieldEncryptionEngine({
      kms,
      dataKeyStore: store,
      keyId: (context: EncryptionContext) => (context.tenantId === "A" ? keyA : keyB),
    });
  return { engine };
}

describe.each(MODES)("inspect with another tenant's binding (%s)", (mode) => {
  const spec: FieldSpec = { type: "string", mode };

  it("fails like decrypt on a cold engine and on one that holds the key", async () => {
    const t = await twoTenants();
    const writer = t.engine();
    const theirs = await writer.encryptText(of("B"), spec, "DE00 tenant B");
    // Warmed two ways: by writing the value, and by a legitimate read of it.
    const reader = t.engine();
    expect(await reader.decryptText(of("B"), spec, theirs)).toBe("DE00 tenant B");
    const cold = t.engine();

    for (const engine of [cold, writer, reader]) {
      await expect(engine.inspect(theirs, of("A"))).rejects.toBeInstanceOf(InvalidCiphertextError);
      await expect(engine.decryptText(of("A"), spec, theirs)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
    }
  });

  it("still reports the key to the value's own tenant, cold and warm", async () => {
    const t = await twoTenants();
    const writer = t.engine();
    const theirs = await writer.encryptText(of("B"), spec, "DE00 tenant B");
    const cold = t.engine();
    const fromCold = await cold.inspect(theirs, of("B"));
    expect(fromCold).toMatchObject({ legacy: false, mode });
    expect(await writer.inspect(theirs, of("B"))).toEqual(fromCold);
  });
});
