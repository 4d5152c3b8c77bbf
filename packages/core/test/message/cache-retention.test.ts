/**
 * What a DataKeyCache entry holds on to (docs/FORMAT.md §5.9): a decrypt entry keeps the data
 * key and nothing of the message it came from, and a cache key stays short whatever the sender
 * put in the header. Capacity counts entries, so an entry that pinned a whole ciphertext, or a
 * key string that embedded 64 KiB header fields, would let a cache of 100 entries hold gigabytes.
 */
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { PreparedDataKey } from "../../src/caching/data-key-cache.ts";
import {
  type CachedDataKey,
  createDecryptStream,
  DataKeyCache,
  type DataKeyCacheKeyParts,
  type DataKeyUsage,
  dataKeyCacheKey,
  decryptMessage,
  type EncryptedDataKey,
  encodeEncryptionContext,
  encryptMessage,
  type Keyring,
  MultiKeyring,
} from "../../src/index.ts";
import { aesKeyring } from "./helpers.ts";

const NONE: DataKeyUsage = { messages: 0, bytes: 0 };

/** A cache that remembers the keys its entries were stored under. */
class RecordingCache extends DataKeyCache {
  readonly keys: string[] = [];

  override put(
    key: string,
    value: CachedDataKey | undefined,
    usage: DataKeyUsage,
    prepared?: PreparedDataKey,
  ): void {
    this.keys.push(key);
    super.put(key, value, usage, prepared);
  }
}

/** The entry under `key`, as `take` hands it out. */
function entryOf(cache: RecordingCache, key: string): CachedDataKey {
  const entry = cache.take(key, NONE);
  if (entry === undefined) throw new Error("no entry");
  return entry;
}

/** A keyring child that adds `count` copies with every field at the 64 KiB limit. */
function junk(count: number): Keyring {
  const text = "x".repeat(0xffff);
  return {
    identity: "junk",
    async encryptDataKey(request) {
      return {
        dataKey: request.dataKey!,
        encryptedDataKeys: Array.from({ length: count }, (_, i) => ({
          providerId: text.slice(i),
          providerInfo: text,
          ciphertext: new Uint8Array(0xffff),
        })),
      };
    },
    async decryptDataKey() {
      return undefined;
    },
  };
}

describe("a decrypt entry holds the data key only", () => {
  const keyring = aesKeyring();

  it("decryptMessage: no encrypted data key, and nothing of the message, is kept", async () => {
    const message = await encryptMessage(new Uint8Array(1 << 20), { keyring });
    const cache = new RecordingCache({ maxAgeMs: 60_000 });
    await decryptMessage(message, { keyring, dataKeyCache: cache });
    expect(cache.keys).toHaveLength(1);
    const entry = entryOf(cache, cache.keys[0]!);
    expect(entry.dataKey).toHaveLength(32);
    // The copies were views into the 1 MiB message: keeping them kept the message.
    expect(entry.encryptedDataKeys).toEqual([]);
    // And the cached key still serves the next decryption of the message.
    const again = await decryptMessage(message, { keyring, dataKeyCache: cache });
    expect(again.plaintext).toHaveLength(1 << 20);
    expect(cache.keys).toHaveLength(1);
  });

  it("a stream: nothing of its first chunk is kept either", async () => {
    const message = await encryptMessage(new Uint8Array(1 << 16), { keyring });
    const cache = new RecordingCache({ maxAgeMs: 60_000 });
    await pipeline(
      Readable.from([Buffer.from(message)]),
      createDecryptStream({ keyring, dataKeyCache: cache }),
      new Writable({ write: (_chunk, _encoding, done) => done() }),
    );
    expect(cache.keys).toHaveLength(1);
    expect(entryOf(cache, cache.keys[0]!).encryptedDataKeys).toEqual([]);
  });

  it("the key of an entry stays short when the sender fills the header with 64 KiB fields", async () => {
    // 15 junk copies beside the real one: 16, the default policy limit, about 3 MiB of header.
    const sender = new MultiKeyring({ generator: keyring, children: [junk(15)] });
    const message = await encryptMessage(new Uint8Array(1), { keyring: sender });
    expect(message.length).toBeGreaterThan(15 * 3 * 0xffff);
    const cache = new RecordingCache({ maxAgeMs: 60_000 });
    await decryptMessage(message, { keyring, dataKeyCache: cache });
    expect(cache.keys).toHaveLength(1);
    expect(cache.keys[0]!.length).toBeLessThan(100 + keyring.identity.length);
    expect(entryOf(cache, cache.keys[0]!).encryptedDataKeys).toEqual([]);
  });
});

describe("DataKeyCache.put keeps its own memory", () => {
  it("an encrypted data key given as a view into a larger buffer is copied", () => {
    const whole = new Uint8Array(1 << 20).fill(7);
    const ciphertext = whole.subarray(100, 164);
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    const edk = { providerId: "p", providerInfo: "i", ciphertext };
    cache.put("k", { dataKey: new Uint8Array(32), encryptedDataKeys: [edk] }, NONE);
    whole.fill(0);
    const kept = cache.take("k", NONE)!.encryptedDataKeys[0]!;
    expect(kept.ciphertext.buffer).not.toBe(whole.buffer);
    expect(kept.ciphertext.buffer.byteLength).toBe(64);
    expect(kept.ciphertext).toEqual(new Uint8Array(64).fill(7));
    expect([kept.providerId, kept.providerInfo]).toEqual(["p", "i"]);
  });
});

describe("dataKeyCacheKey", () => {
  const edk = (providerId: string, providerInfo: string, ...bytes: number[]): EncryptedDataKey => ({
    providerId,
    providerInfo,
    ciphertext: new Uint8Array(bytes),
  });
  const base: DataKeyCacheKeyParts = {
    purpose: "decrypt",
    keyringIdentity: "ring",
    encryptionContext: encodeEncryptionContext({ tenant: "a" }),
    suite: 1,
  };

  it("is bounded by the keyring identity, not by the context or the copies", () => {
    const big = "y".repeat(0xffff);
    const key = dataKeyCacheKey({
      ...base,
      // A header's context field may hold up to 64 KiB.
      encryptionContext: new Uint8Array(0xffff),
      encryptedDataKeys: Array.from({ length: 16 }, () => ({
        providerId: big,
        providerInfo: big,
        ciphertext: new Uint8Array(0xffff),
      })),
    });
    expect(key.length).toBeLessThan(100);
    // An encrypt key: a short context verbatim, a long one as its digest.
    const encrypt = { ...base, purpose: "encrypt" } as const;
    expect(dataKeyCacheKey(encrypt)).toContain("tenant");
    const long = encodeEncryptionContext({ a: big.slice(0, 8000) });
    expect(dataKeyCacheKey({ ...encrypt, encryptionContext: long }).length).toBeLessThan(100);
  });

  it("starts with a digit (the field engine's prefixes never do)", () => {
    for (const purpose of ["encrypt", "decrypt"] as const) {
      expect(dataKeyCacheKey({ ...base, purpose })).toMatch(/^[0-9]/);
      expect(dataKeyCacheKey({ ...base, purpose, encryptedDataKeys: [] })).toMatch(/^[0-9]/);
    }
  });

  it("gives distinct keys where fields could run into each other", () => {
    const long = new Uint8Array(300).fill(1);
    const pairs: [string, Partial<DataKeyCacheKeyParts>, Partial<DataKeyCacheKeyParts>][] = [
      [
        "id | info",
        { encryptedDataKeys: [edk("ab", "c")] },
        { encryptedDataKeys: [edk("a", "bc")] },
      ],
      [
        "info | ciphertext",
        { encryptedDataKeys: [edk("a", "b", 0x63)] },
        { encryptedDataKeys: [edk("a", "bc")] },
      ],
      [
        "one copy | two",
        { encryptedDataKeys: [edk("a", "b", 1, 2)] },
        { encryptedDataKeys: [edk("a", "b", 1), edk("", "", 2)] },
      ],
      [
        "context | copies",
        { encryptionContext: new Uint8Array([1, 2]), encryptedDataKeys: [] },
        { encryptionContext: new Uint8Array([1]), encryptedDataKeys: [edk("", "", 2)] },
      ],
      [
        "no copies given | none",
        { purpose: "encrypt", encryptionContext: long },
        { purpose: "encrypt", encryptionContext: long, encryptedDataKeys: [] },
      ],
      // UTF-8 would write both as EF BF BD.
      [
        "lone surrogate | U+FFFD",
        { encryptedDataKeys: [edk("\ud800", "")] },
        { encryptedDataKeys: [edk("\ufffd", "")] },
      ],
      [
        "identity | suite",
        { keyringIdentity: "ring1", suite: 2 },
        { keyringIdentity: "ring", suite: 12 },
      ],
    ];
    for (const [name, a, b] of pairs) {
      expect(dataKeyCacheKey({ ...base, ...a }), name).not.toBe(dataKeyCacheKey({ ...base, ...b }));
    }
  });

  it("two part lists give one key only if they are equal", () => {
    // Small alphabets, so that near-collisions (shifted boundaries, split copies) come up often.
    const text = fc.string({
      unit: fc.constantFrom("a", "b", ":", "#", "\ud800", "\ufffd"),
      maxLength: 3,
    });
    const bytes = fc.uint8Array({ min: 0, max: 2, maxLength: 3 });
    const parts = fc.record(
      {
        purpose: fc.constantFrom("encrypt", "decrypt"),
        keyringIdentity: text,
        // Either side of the longest context kept verbatim (256 bytes).
        encryptionContext: fc.oneof(bytes, fc.uint8Array({ minLength: 255, maxLength: 258 })),
        suite: fc.constantFrom(1, 2, 12),
        encryptedDataKeys: fc.array(
          fc.record({ providerId: text, providerInfo: text, ciphertext: bytes }),
          { maxLength: 3 },
        ),
      },
      { requiredKeys: ["purpose", "keyringIdentity", "encryptionContext", "suite"] },
    );
    const canonical = (p: DataKeyCacheKeyParts): string =>
      JSON.stringify(p, (_key, value: unknown) =>
        value instanceof Uint8Array ? [...value] : value,
      );
    fc.assert(
      fc.property(parts, parts, (a, b) => {
        const same = canonical(a) === canonical(b);
        expect(dataKeyCacheKey(a) === dataKeyCacheKey(b)).toBe(same);
      }),
      { numRuns: 2000 },
    );
  });
});
