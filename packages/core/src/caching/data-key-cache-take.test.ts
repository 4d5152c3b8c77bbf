import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import type { EncryptedDataKey } from "../keyring/keyring.ts";
import { type CachedDataKey, DataKeyCache, type DataKeyUsage } from "./data-key-cache.ts";

/**
 * Found in review: `take` handed every caller the entry's own encrypted copies (the array, its
 * objects, their ciphertext bytes), so whatever one caller did to what it got — a keyring or
 * caller writing into a buffer it believed its own — was carried by every later message drawn
 * from the entry: copies that no longer unwrap, or another key's copy in their place.
 */

const ONE: DataKeyUsage = { messages: 1, bytes: 10 };

function entry(): CachedDataKey {
  return {
    dataKey: new Uint8Array(randomBytes(32)),
    encryptedDataKeys: [
      { providerId: "kms", providerInfo: "arn:a", ciphertext: new Uint8Array(randomBytes(184)) },
      { providerId: "raw", providerInfo: "b", ciphertext: new Uint8Array(randomBytes(60)) },
    ],
  };
}

/** The encrypted copies as plain data, to compare across takes. */
const snapshot = (edks: readonly EncryptedDataKey[]) =>
  edks.map((edk) => ({ ...edk, ciphertext: [...edk.ciphertext] }));

describe("take", () => {
  test("what one caller does to the encrypted copies it got, the next caller does not get", () => {
    const cache = new DataKeyCache({ maxAgeMs: 1000 });
    const put = entry();
    const expected = snapshot(put.encryptedDataKeys);
    cache.put("k", put, ONE);

    const first = cache.take("k", ONE);
    if (first === undefined) throw new Error("expected a hit");
    expect(snapshot(first.encryptedDataKeys)).toEqual(expected);
    (first.encryptedDataKeys[0] as EncryptedDataKey).ciphertext.fill(0);
    (first.encryptedDataKeys[1] as { providerInfo: string }).providerInfo = "attacker";
    (first.encryptedDataKeys as EncryptedDataKey[]).push({
      providerId: "raw",
      providerInfo: "extra",
      ciphertext: new Uint8Array(4),
    });
    first.dataKey.fill(0);

    const second = cache.take("k", ONE);
    if (second === undefined) throw new Error("expected a hit");
    expect(snapshot(second.encryptedDataKeys)).toEqual(expected);
    expect(second.dataKey).toEqual(put.dataKey);
  });

  test("no two takes share memory, nor share it with the entry's put", () => {
    const cache = new DataKeyCache({ maxAgeMs: 1000 });
    const put = entry();
    cache.put("k", put, ONE);
    const a = cache.take("k", ONE);
    const b = cache.take("k", ONE);
    if (a === undefined || b === undefined) throw new Error("expected hits");
    expect(a.encryptedDataKeys).not.toBe(b.encryptedDataKeys);
    a.encryptedDataKeys.forEach((edk, i) => {
      const other = b.encryptedDataKeys[i] as EncryptedDataKey;
      expect(edk).not.toBe(other);
      expect(edk.ciphertext.buffer).not.toBe(other.ciphertext.buffer);
      expect(edk.ciphertext.buffer).not.toBe(put.encryptedDataKeys[i]?.ciphertext.buffer);
    });
  });
});
