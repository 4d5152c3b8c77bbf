/**
 * A data-key row is unwrapped with the context stored in it, and whoever writes the database
 * writes that row. Someone who may use the KMS key only under tenant A's context (a key policy
 * on kms:EncryptionContext:tenant) can wrap a data key they know under A's context and plant
 * the row; a value of tenant B sealed with that key must still not open as B's (FORMAT §6.2).
 */
import { describe, expect, it } from "vitest";
import { InvalidCiphertextError, KmsInternalError } from "../errors.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import type { EncryptionContext } from "../types.ts";
import { type DataKeyRecord, MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

const TENANT_A = { tenant: "A" };

/** What the attacker's KMS rights allow: every data key is made under tenant A's context. */
function onlyTenantA(kms: Kms): KmsLike {
  return {
    encrypt: (r, o) => kms.encrypt({ ...r, encryptionContext: TENANT_A }, o),
    decrypt: (r, o) => kms.decrypt({ ...r, encryptionContext: TENANT_A }, o),
    generateDataKey: (r, o) => kms.generateDataKey({ ...r, encryptionContext: TENANT_A }, o),
  } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
}

/** The rows the attacker plants say what their wrapped keys really are under: tenant A. */
function planting(store: MemoryDataKeyStore): MemoryDataKeyStore {
  return Object.assign(Object.create(store) as MemoryDataKeyStore, {
    insert: (record: DataKeyRecord) =>
      store.insert({ ...record, encryptionContext: TENANT_A as EncryptionContext }),
    get: (id: string) => store.get(id),
  });
}

describe.each(["randomized", "deterministic"] as const)("a planted data-key row (%s)", (mode) => {
  it("does not open a value of another tenant, nor of no tenant", async () => {
    const kms = await createKms({ audit: false });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const store = new MemoryDataKeyStore();
    const victim = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: store });
    const attacker = new FieldEncryptionEngine({
      kms: onlyTenantA(kms),
      keyId,
      dataKeyStore: planting(store),
    });
    const spec: FieldSpec = { type: "string", mode };
    for (const context of [{ tenant: "B" }, { region: "eu" }]) {
      const binding = { model: "User", field: "ssn", context };
      const forged = await attacker.encryptText(binding, spec, "forged");
      await expect(victim.decryptText(binding, spec, forged)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      if (mode === "randomized") {
        // Each randomized data key has a fresh random id: the victim's own values still read.
        const own = await victim.encryptText(binding, spec, "real");
        expect(await victim.decryptText(binding, spec, own)).toBe("real");
      } else {
        // A stable key's id is derived from the context, so the planted row sits where the
        // victim's would: it is refused for writing rather than used with a key A knows.
        await expect(victim.encryptText(binding, spec, "real")).rejects.toBeInstanceOf(
          KmsInternalError,
        );
      }
    }
    // Under A's own context the planted key is A's key: A may write A's values.
    const a = { model: "User", field: "ssn", context: TENANT_A };
    const planted = await attacker.encryptText(a, spec, "a's own");
    expect(await victim.decryptText(a, spec, planted)).toBe("a's own");
  });
});
