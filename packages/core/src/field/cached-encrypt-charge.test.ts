import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { EncryptionContext } from "../types.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * The cached encrypt path charges the data key (one of its `maxValues`) in one synchronous step,
 * after everything that can throw for the caller's input: a write that throws seals nothing and
 * must not use up a value. A value is encoded once before the charge; the only encoding after it
 * (a key selector that encrypted another value reused the shared plaintext buffer) is of a
 * primitive string, which runs no caller code.
 */

const JSON_SPEC: FieldSpec = { type: "json" };
const STRING: FieldSpec = { type: "string" };
const context = { tenantId: "a" };
const binding = { model: "User", field: "profile", context };
const dataKeyOf = (sealed: Uint8Array) => Buffer.from(sealed.subarray(1, 17)).toString("hex");

async function setup(selector?: (kmsKey: string) => (context: EncryptionContext) => string) {
  const kms = await createKms({ audit: false });
  const kmsKey = (await kms.createKey()).keyMetadata.keyId;
  return new FieldEncryptionEngine({
    kms,
    dataKeyStore: new MemoryDataKeyStore(),
    keyId: selector === undefined ? kmsKey : selector(kmsKey),
    cache: { maxValues: 2 },
  });
}

/** A JSON object whose member `a` is a getter that throws from its `throwFrom`-th read on. */
function readCounted(throwFrom: number): { readonly value: object; readonly reads: () => number } {
  let reads = 0;
  const value = {
    get a(): number {
      reads += 1;
      if (reads >= throwFrom) throw new Error("getter");
      return 1;
    },
  };
  return { value, reads: () => reads };
}

describe("the cached encrypt path charges the data key only for a value it seals", () => {
  test("a value whose getter throws is refused before the charge", async () => {
    const engine = await setup();
    const first = await engine.encrypt(binding, JSON_SPEC, { a: 0 });
    const throwing = readCounted(1).value;
    expect(() => engine.encryptIfCached(binding, JSON_SPEC, throwing)).toThrow(ValidationError);
    await expect(engine.encrypt(binding, JSON_SPEC, throwing)).rejects.toThrow(ValidationError);
    await expect(engine.encryptText(binding, JSON_SPEC, throwing)).rejects.toThrow(ValidationError);
    // The key's second value: still the same key; its third would exceed maxValues.
    const second = engine.encryptIfCached(binding, JSON_SPEC, { a: 2 });
    expect(second && dataKeyOf(second)).toBe(dataKeyOf(first));
    expect(engine.encryptIfCached(binding, JSON_SPEC, { a: 3 })).toBeUndefined();
  });

  test("a value is read once: a getter that would throw on a second read is never reached", async () => {
    const engine = await setup();
    const first = await engine.encrypt(binding, JSON_SPEC, { a: 0 });
    const counted = readCounted(2);
    const sealed = engine.encryptIfCached(binding, JSON_SPEC, counted.value);
    expect(counted.reads()).toBe(1);
    expect(sealed && dataKeyOf(sealed)).toBe(dataKeyOf(first));
    expect(await engine.decrypt(binding, JSON_SPEC, sealed!)).toEqual({ a: 1 });
    expect(engine.encryptIfCached(binding, JSON_SPEC, { a: 3 })).toBeUndefined();
  });

  test("a key selector that encrypts another value: each value charged once, and sealed as given", async () => {
    const other = { ...binding, context: { tenantId: "b" } };
    const reentrant = { ...binding, context: { tenantId: "a", reenter: "1" } };
    let engine: FieldEncryptionEngine | undefined;
    let inner = 0;
    engine = await setup((kmsKey) => (ctx) => {
      // Writes into the shared plaintext buffer the outer call encoded its value into.
      if (ctx.reenter === "1" && engine !== undefined) {
        inner += 1;
        engine.encryptIfCached(other, STRING, "the selector's own value");
      }
      return kmsKey;
    });
    await engine.encrypt(other, STRING, "warm");
    const first = await engine.encrypt(reentrant, STRING, "first");
    inner = 0;
    const second = engine.encryptIfCached(reentrant, STRING, "second");
    expect(inner).toBe(1);
    expect(second && dataKeyOf(second)).toBe(dataKeyOf(first));
    expect(await engine.decrypt(reentrant, STRING, second!)).toBe("second");
    // Two values under the key: a third would exceed maxValues.
    expect(engine.encryptIfCached(reentrant, STRING, "third")).toBeUndefined();
  });
});
