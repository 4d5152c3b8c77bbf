import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";
import { fromFieldText } from "./field-format.ts";

/**
 * A write refused for its binding seals nothing, so it must not count against the cached data
 * key's `maxValues`: a stream of bad requests would otherwise force a new data key (and a KMS
 * call) as often as one per `maxValues` refusals.
 */

const STRING: FieldSpec = { type: "string" };
const context = { tenantId: "a" };
const good = { model: "User", field: "email", context };
// Read as a binding (the context is fine), refused when it is encoded: an empty model name.
const bad = { model: "", field: "email", context };
const dataKeyOf = (sealed: Uint8Array | string) =>
  Buffer.from(
    (typeof sealed === "string" ? fromFieldText(sealed) : sealed).subarray(1, 17),
  ).toString("hex");

async function setup() {
  const kms = await createKms({ audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  return new FieldEncryptionEngine({
    kms,
    dataKeyStore: new MemoryDataKeyStore(),
    keyId,
    cache: { maxValues: 2 },
  });
}

describe("a binding refused under a cached data key", () => {
  test("is not charged to the key, and maxValues still holds exactly", async () => {
    const engine = await setup();
    const first = await engine.encrypt(good, STRING, "v");
    expect(() => engine.encryptIfCached(bad, STRING, "v")).toThrow(ValidationError);
    await expect(engine.encrypt(bad, STRING, "v")).rejects.toThrow(ValidationError);
    await expect(engine.encryptText(bad, STRING, "v")).rejects.toThrow(ValidationError);
    // The key's second value: still the same key.
    const second = engine.encryptIfCached(good, STRING, "v");
    expect(second && dataKeyOf(second)).toBe(dataKeyOf(first));
    // Its third would exceed maxValues: a new key.
    expect(engine.encryptIfCached(good, STRING, "v")).toBeUndefined();
    expect(dataKeyOf(await engine.encryptText(good, STRING, "v"))).not.toBe(dataKeyOf(first));
  });

  test("concurrent writes never put more than maxValues values under one key", async () => {
    const engine = await setup();
    const sealed = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        i % 3 === 0
          ? engine.encrypt(bad, STRING, "v").then(
              () => undefined,
              () => undefined,
            )
          : engine.encrypt(good, STRING, `v${i}`),
      ),
    );
    const perKey = new Map<string, number>();
    for (const value of sealed) {
      if (value === undefined) continue;
      const id = dataKeyOf(value);
      perKey.set(id, (perKey.get(id) ?? 0) + 1);
    }
    expect(Math.max(...perKey.values())).toBeLessThanOrEqual(2);
    expect([...perKey.values()].reduce((a, b) => a + b)).toBe(13);
  });
});
