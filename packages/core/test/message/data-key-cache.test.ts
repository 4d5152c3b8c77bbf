/** DataKeyCache limits and its effect on KMS calls (docs/FORMAT.md §5.9). */
import { randomBytes } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import {
  createEncryptStream,
  createKms,
  DataKeyCache,
  dataKeyCacheKey,
  decryptMessage,
  encodeEncryptionContext,
  encryptMessage,
  type Kms,
  KmsKeyring,
  type KmsLike,
  ValidationError,
} from "../../src/index.ts";
import { ManualClock } from "../../src/testing/index.ts";
import { throughNode } from "./helpers.ts";

let kms: Kms;
let keyId: string;
beforeAll(async () => {
  kms = await createKms();
  keyId = (await kms.createKey()).keyMetadata.keyId;
});

function countingKeyring(): { keyring: KmsKeyring; calls: Record<string, number> } {
  const calls: Record<string, number> = { generateDataKey: 0, encrypt: 0, decrypt: 0 };
  const wrapper = {
    generateDataKey: (r, o) => {
      calls.generateDataKey!++;
      return kms.generateDataKey(r, o);
    },
    encrypt: (r, o) => {
      calls.encrypt!++;
      return kms.encrypt(r, o);
    },
    decrypt: (r, o) => {
      calls.decrypt!++;
      return kms.decrypt(r, o);
    },
  } as Pick<KmsLike, "encrypt" | "decrypt" | "generateDataKey"> as KmsLike;
  return { keyring: new KmsKeyring({ kms: wrapper, keyIds: [keyId] }), calls };
}

const context = { tenant: "acme" };
const small = randomBytes(100);

describe("DataKeyCache with messages", () => {
  it("reduces KMS calls on encrypt and decrypt, and the messages still decrypt", async () => {
    const { keyring, calls } = countingKeyring();
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    const messages: Uint8Array[] = [];
    for (let i = 0; i < 10; i++) {
      messages.push(
        await encryptMessage(small, { keyring, encryptionContext: context, dataKeyCache: cache }),
      );
    }
    expect(calls.generateDataKey).toBe(1);
    const decryptCache = new DataKeyCache({ maxAgeMs: 60_000 });
    for (const m of messages) {
      const out = await decryptMessage(m, {
        keyring,
        encryptionContext: context,
        dataKeyCache: decryptCache,
      });
      expect(Buffer.from(out.plaintext).equals(small)).toBe(true);
    }
    expect(calls.decrypt).toBe(1);
    // Same data key, but each message has its own id, so their bytes differ.
    expect(Buffer.from(messages[0]!).equals(Buffer.from(messages[1]!))).toBe(false);
  });

  it("never shares a key across contexts or keyrings", async () => {
    const { keyring, calls } = countingKeyring();
    const other = countingKeyring();
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    const encrypt = (by: KmsKeyring, tenant: string) =>
      encryptMessage(small, { keyring: by, encryptionContext: { tenant }, dataKeyCache: cache });
    await encrypt(keyring, "a");
    await encrypt(keyring, "b");
    await encrypt(other.keyring, "a");
    expect(calls.generateDataKey).toBe(2);
    expect(other.calls.generateDataKey).toBe(1);
    expect(cache.size).toBe(3);
    // The same keyring and context do share: the misses above are separation, not a dead cache.
    await encrypt(keyring, "a");
    await encrypt(other.keyring, "a");
    expect(calls.generateDataKey).toBe(2);
    expect(other.calls.generateDataKey).toBe(1);
  });

  it("keys entries by suite, and signing suites neither take from nor fill the cache", async () => {
    // Only one suite is unsigned, so no two messages can show separation by suite: the cache
    // key itself must differ (FORMAT §5.9).
    const { keyring, calls } = countingKeyring();
    const parts = {
      purpose: "encrypt",
      keyringIdentity: keyring.identity,
      encryptionContext: encodeEncryptionContext({ tenant: "a" }),
    } as const;
    const unsigned = dataKeyCacheKey({ ...parts, suite: 0x0001 });
    for (const signed of [0x0002, 0x0003]) {
      expect(dataKeyCacheKey({ ...parts, suite: signed })).not.toBe(unsigned);
    }

    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    const options = { keyring, encryptionContext: { tenant: "a" }, dataKeyCache: cache };
    await encryptMessage(small, options);
    expect(cache.size).toBe(1);
    const stats = cache.stats;
    for (const suite of [
      "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256",
      "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
      "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256",
    ] as const) {
      await encryptMessage(small, { ...options, suite });
    }
    // FORMAT §5.8: a fresh signing key per message is in the context, so no entry could ever
    // match; the cache is not even consulted, and holds nothing from signed messages.
    expect(calls.generateDataKey).toBe(4);
    expect(cache.size).toBe(1);
    expect(cache.stats).toEqual(stats);
    await encryptMessage(small, options);
    expect(calls.generateDataKey).toBe(4);
  });

  it("enforces maxMessages", async () => {
    const { keyring, calls } = countingKeyring();
    const cache = new DataKeyCache({ maxAgeMs: 60_000, maxMessages: 3 });
    for (let i = 0; i < 7; i++) await encryptMessage(small, { keyring, dataKeyCache: cache });
    // Messages 1–3 share a key, 4–6 the next, 7 a third.
    expect(calls.generateDataKey).toBe(3);
  });

  it("enforces maxBytes, and never caches a message that alone reaches it", async () => {
    const { keyring, calls } = countingKeyring();
    const cache = new DataKeyCache({ maxAgeMs: 60_000, maxBytes: 250 });
    for (let i = 0; i < 4; i++) await encryptMessage(small, { keyring, dataKeyCache: cache });
    expect(calls.generateDataKey).toBe(2); // 100 + 100 fit, the third would make 300
    await encryptMessage(randomBytes(250), { keyring, dataKeyCache: cache });
    await encryptMessage(randomBytes(250), { keyring, dataKeyCache: cache });
    expect(calls.generateDataKey).toBe(4);
  });

  it("enforces maxAgeMs with an injected clock, on encrypt and decrypt", async () => {
    const { keyring, calls } = countingKeyring();
    const clock = new ManualClock();
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    const m1 = await encryptMessage(small, { keyring, dataKeyCache: cache });
    clock.advance(999);
    await encryptMessage(small, { keyring, dataKeyCache: cache });
    expect(calls.generateDataKey).toBe(1);
    clock.advance(1);
    await encryptMessage(small, { keyring, dataKeyCache: cache });
    expect(calls.generateDataKey).toBe(2);

    const decryptCache = new DataKeyCache({ maxAgeMs: 1000, clock });
    await decryptMessage(m1, { keyring, dataKeyCache: decryptCache });
    await decryptMessage(m1, { keyring, dataKeyCache: decryptCache });
    expect(calls.decrypt).toBe(1);
    clock.advance(1000);
    await decryptMessage(m1, { keyring, dataKeyCache: decryptCache });
    expect(calls.decrypt).toBe(2);
  });

  it("streams use the cache only with a declared plaintextLength", async () => {
    const { keyring, calls } = countingKeyring();
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    for (let i = 0; i < 3; i++) {
      await throughNode(createEncryptStream({ keyring, dataKeyCache: cache }), [small]);
    }
    expect(calls.generateDataKey).toBe(3);
    for (let i = 0; i < 3; i++) {
      await throughNode(
        createEncryptStream({ keyring, dataKeyCache: cache, plaintextLength: small.length }),
        [small],
      );
    }
    expect(calls.generateDataKey).toBe(4);
    await expect(
      throughNode(createEncryptStream({ keyring, plaintextLength: 10 }), [small]),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      throughNode(createEncryptStream({ keyring, plaintextLength: 1000 }), [small]),
    ).rejects.toBeInstanceOf(ValidationError);
  });
});

describe("DataKeyCache as a module", () => {
  const entry = () => ({
    dataKey: randomBytes(32),
    encryptedDataKeys: [{ providerId: "p", providerInfo: "i", ciphertext: new Uint8Array(4) }],
  });

  it("evicts the least recently used entry beyond capacity and zeroes evicted keys", () => {
    const cache = new DataKeyCache({ maxAgeMs: 1000, capacity: 2 });
    const a = entry();
    cache.put("a", a, { messages: 1, bytes: 0 });
    cache.put("b", entry(), { messages: 1, bytes: 0 });
    expect(cache.take("a", { messages: 1, bytes: 0 })).toBeDefined(); // a is now most recent
    cache.put("c", entry(), { messages: 1, bytes: 0 });
    expect(cache.size).toBe(2);
    expect(cache.take("b", { messages: 0, bytes: 0 })).toBeUndefined();
    expect(cache.take("a", { messages: 0, bytes: 0 })).toBeDefined();
    expect(cache.stats.misses).toBe(1);
  });

  it("hands out copies, so a caller wiping its key does not wipe the cache", () => {
    const cache = new DataKeyCache({ maxAgeMs: 1000 });
    const original = entry();
    const bytes = Buffer.from(original.dataKey);
    cache.put("k", original, { messages: 1, bytes: 0 });
    original.dataKey.fill(0);
    const first = cache.take("k", { messages: 1, bytes: 0 })!;
    first.dataKey.fill(0);
    expect(Buffer.from(cache.take("k", { messages: 1, bytes: 0 })!.dataKey).equals(bytes)).toBe(
      true,
    );
    cache.clear();
    expect(cache.size).toBe(0);
  });

  it("builds distinct keys for distinct parts (no concatenation ambiguity)", () => {
    const base = {
      purpose: "encrypt",
      keyringIdentity: "ab",
      encryptionContext: new Uint8Array([1]),
      suite: 1,
    } as const;
    const keys = new Set([
      dataKeyCacheKey(base),
      dataKeyCacheKey({ ...base, keyringIdentity: "a", purpose: "encryptb" }),
      dataKeyCacheKey({ ...base, purpose: "decrypt" }),
      dataKeyCacheKey({ ...base, suite: 2 }),
      dataKeyCacheKey({ ...base, encryptionContext: new Uint8Array([2]) }),
      dataKeyCacheKey({
        ...base,
        encryptedDataKeys: [{ providerId: "p", providerInfo: "i", ciphertext: new Uint8Array(1) }],
      }),
    ]);
    expect(keys.size).toBe(6);
  });

  it("use() charges like take() and returns the prepared form, released when the entry goes", () => {
    const clock = new ManualClock();
    const cache = new DataKeyCache({ maxAgeMs: 1000, maxMessages: 2, clock });
    let released = 0;
    const prepared = { tag: "p", release: () => released++ };
    const original = entry();
    cache.put("k", original, { messages: 1, bytes: 0 }, prepared);
    expect(cache.use<typeof prepared>("k", { messages: 1, bytes: 0 })).toBe(prepared);
    expect(released).toBe(0);
    // A third message would pass maxMessages: the entry is evicted, its key zeroed, released.
    expect(cache.use("k", { messages: 1, bytes: 0 })).toBeUndefined();
    expect(released).toBe(1);
    expect(cache.size).toBe(0);

    const again = { release: () => released++ };
    cache.put("k", entry(), { messages: 0, bytes: 0 }, again);
    clock.advance(1000);
    expect(cache.use("k", { messages: 0, bytes: 0 })).toBeUndefined();
    expect(released).toBe(2);

    // A first use that alone reaches a limit is not cached at all.
    cache.put("k", entry(), { messages: 2, bytes: 0 }, { release: () => released++ });
    expect(released).toBe(3);
    expect(cache.size).toBe(0);

    // Replacing, deleting and clearing release too.
    cache.put("a", entry(), { messages: 0, bytes: 0 }, { release: () => released++ });
    cache.put("a", entry(), { messages: 0, bytes: 0 }, { release: () => released++ });
    expect(released).toBe(4);
    cache.delete("a");
    expect(released).toBe(5);
    cache.put("b", entry(), { messages: 0, bytes: 0 }, { release: () => released++ });
    cache.clear();
    expect(released).toBe(6);
  });

  it("move keeps an entry's age and uses under a free key, and never overwrites one", () => {
    const clock = new ManualClock(0);
    const cache = new DataKeyCache({ maxAgeMs: 1000, maxMessages: 3, clock });
    let released = 0;
    const prepared = { release: () => released++ };
    cache.put("tx\u0000k", entry(), { messages: 1, bytes: 0 }, prepared);
    cache.put("taken", entry(), { messages: 1, bytes: 0 });
    expect(cache.move("tx\u0000k", "taken")).toBe(false);
    expect(cache.move("absent", "k")).toBe(false);
    expect(cache.move("tx\u0000k", "k")).toBe(true);
    expect(cache.use("tx\u0000k", { messages: 1, bytes: 0 })).toBeUndefined();
    // Uses charged before the move count: 1 + 1 + 1 = the limit of 3, then eviction.
    expect(cache.use("k", { messages: 1, bytes: 0 })).toBe(prepared);
    expect(cache.use("k", { messages: 1, bytes: 0 })).toBe(prepared);
    expect(cache.use("k", { messages: 1, bytes: 0 })).toBeUndefined();
    expect(released).toBe(1);
    // Age counts from the original put.
    cache.put("tx\u0000j", entry(), { messages: 0, bytes: 0 });
    clock.advance(900);
    cache.move("tx\u0000j", "j");
    clock.advance(100);
    expect(cache.use("j", { messages: 0, bytes: 0 })).toBeUndefined();
  });

  it("validates its limits", () => {
    expect(() => new DataKeyCache({ maxAgeMs: 0 })).toThrow(ValidationError);
    expect(() => new DataKeyCache({ maxAgeMs: 10, maxMessages: 0 })).toThrow(ValidationError);
    expect(() => new DataKeyCache({ maxAgeMs: 10, capacity: 1.5 })).toThrow(ValidationError);
  });
});
