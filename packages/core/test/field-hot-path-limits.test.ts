/**
 * What the field engine's per-value shortcuts must keep (docs/FORMAT.md §6.1, §6.4): a fresh IV
 * per value from the CSPRNG pool, cache limits enforced to the exact value and millisecond, and
 * the same bytes whichever path (bytes, text, scratch or not) sealed a value.
 */
import { describe, expect, test } from "vitest";
import { DataKeyCache, type PreparedDataKey } from "../src/caching/data-key-cache.ts";
import { MemoryDataKeyStore } from "../src/field/data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "../src/field/field-encryption-engine.ts";
import { fromFieldText, toFieldText } from "../src/field/field-format.ts";
import { fillRandom } from "../src/hsm/random.ts";
import { createKms } from "../src/kms.ts";
import { ManualClock } from "../src/testing/manual-clock.ts";

const STRING: FieldSpec = { type: "string" };
const at = { model: "User", field: "email", context: { tenantId: "a" } };
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

async function setup(cache: { maxAgeMs?: number; maxValues?: number; maxBytes?: number } = {}) {
  const clock = new ManualClock();
  const kms = await createKms({ clock, audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const store = new MemoryDataKeyStore();
  const engine = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId, clock, cache });
  return { engine, clock, store };
}

const dataKeyOf = (sealed: Uint8Array) => hex(sealed.subarray(1, 17));

describe("IVs", () => {
  test("every value gets its own IV, across refills of the random pool", async () => {
    const { engine } = await setup();
    const ivs = new Set<string>();
    // 16 KiB of pooled randomness is ~1365 IVs: 3000 values cross two refills.
    for (let i = 0; i < 3000; i++) {
      const sealed =
        i % 2 === 0
          ? (engine.encryptIfCached(at, STRING, "same") ??
            (await engine.encrypt(at, STRING, "same")))
          : fromFieldText(await engine.encryptText(at, STRING, "same"));
      ivs.add(hex(sealed.subarray(17, 29)));
    }
    expect(ivs.size).toBe(3000);
    expect(ivs.has("00".repeat(12))).toBe(false);
  });

  test("fillRandom fills every byte, beyond the pool's size too", () => {
    for (const length of [1, 12, 32, 33, 4096, 4097, 40_000]) {
      const target = new Uint8Array(length + 2);
      fillRandom(target, 1, length);
      expect(target[0]).toBe(0);
      expect(target[length + 1]).toBe(0);
      // No 16-byte run of zeros in fresh randomness (chance 2^-128 per position).
      const body = Buffer.from(target.subarray(1, length + 1)).toString("hex");
      if (length >= 16) expect(body).not.toContain("00".repeat(16));
    }
  });
});

describe("cache limits on the hot path", () => {
  test("maxAgeMs holds to the millisecond for writing and reading", async () => {
    const { engine, clock } = await setup({ maxAgeMs: 1000 });
    const first = await engine.encrypt(at, STRING, "v");
    const text = await engine.encryptText(at, STRING, "v");
    clock.advance(999);
    const late = engine.encryptIfCached(at, STRING, "v");
    expect(late && dataKeyOf(late)).toBe(dataKeyOf(first));
    expect(engine.decryptIfCached(at, STRING, text)).toBe("v");
    clock.advance(1);
    expect(engine.encryptIfCached(at, STRING, "v")).toBeUndefined();
    expect(engine.decryptIfCached(at, STRING, text)).toBeUndefined();
    expect(dataKeyOf(await engine.encrypt(at, STRING, "v"))).not.toBe(dataKeyOf(first));
  });

  test("a clock set back retires the key at once", async () => {
    const { engine, clock } = await setup({ maxAgeMs: 1000 });
    await engine.encrypt(at, STRING, "v");
    clock.advance(-1);
    expect(engine.encryptIfCached(at, STRING, "v")).toBeUndefined();
  });

  test("maxValues and maxBytes hold to the exact value", async () => {
    const byCount = await setup({ maxValues: 3 });
    const keys: string[] = [];
    for (let i = 0; i < 7; i++) keys.push(dataKeyOf(await byCount.engine.encrypt(at, STRING, "v")));
    expect(keys.map((k) => keys.indexOf(k))).toEqual([0, 0, 0, 3, 3, 3, 6]);
    // Plaintext is tag || UTF-8: 5 bytes per "abcd"; 15 fit, the fourth value does not.
    const byBytes = await setup({ maxBytes: 15 });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++)
      ids.push(dataKeyOf(await byBytes.engine.encrypt(at, STRING, "abcd")));
    expect(ids.map((k) => ids.indexOf(k))).toEqual([0, 0, 0, 3]);
  });
});

describe("DataKeyCache's most recent entry", () => {
  test("follows move(), delete() and put() of its key", () => {
    const clock = new ManualClock();
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    const usage = { messages: 1, bytes: 1 };
    const a: PreparedDataKey & { name: string } = { name: "a" };
    const b: PreparedDataKey & { name: string } = { name: "b" };
    cache.put("tx\u0000k", undefined, usage, a);
    expect(cache.use("tx\u0000k", usage)).toBe(a);
    expect(cache.move("tx\u0000k", "k")).toBe(true);
    expect(cache.use("tx\u0000k", usage)).toBeUndefined();
    expect(cache.use("k", usage)).toBe(a);
    cache.delete("k");
    expect(cache.use("k", usage)).toBeUndefined();
    cache.put("k", undefined, usage, b);
    expect(cache.use("k", usage)).toBe(b);
    cache.clear();
    expect(cache.use("k", usage)).toBeUndefined();
  });

  test("an entry nobody uses is swept out once maxAgeMs has passed", () => {
    const clock = new ManualClock();
    const cache = new DataKeyCache({ maxAgeMs: 1000, clock });
    const usage = { messages: 1, bytes: 1 };
    let released = 0;
    cache.put("idle", undefined, usage, { release: () => released++ });
    cache.put("busy", undefined, usage, {});
    clock.advance(999);
    cache.use("busy", usage);
    expect(released).toBe(0);
    clock.advance(1001);
    cache.use("busy", usage);
    expect(released).toBe(1);
    expect(cache.size).toBe(0);
  });
});

describe("text and bytes forms", () => {
  test("small and large values round-trip through every encrypting method", async () => {
    const { engine } = await setup();
    for (const value of ["", "x", "é".repeat(100), "z".repeat(5000)]) {
      const texts = [
        await engine.encryptText(at, STRING, value),
        engine.encryptTextIfCached(at, STRING, value) as string,
      ];
      const bytes = [
        await engine.encrypt(at, STRING, value),
        engine.encryptIfCached(at, STRING, value) as Uint8Array,
      ];
      for (const text of texts) {
        expect(text).toMatch(/^kms1:[A-Za-z0-9_-]+$/);
        // One layout whichever path sealed it: 46 bytes of overhead, tag byte included.
        expect(fromFieldText(text).length).toBe(Buffer.byteLength(value) + 46);
        expect(await engine.decryptText(at, STRING, text)).toBe(value);
      }
      for (const sealed of bytes) {
        expect(sealed.length).toBe(Buffer.byteLength(value) + 46);
        expect(await engine.decrypt(at, STRING, sealed)).toBe(value);
      }
      // Each text is a value of its own, not a view of a shared buffer.
      expect(texts[0]).not.toBe(texts[1]);
      expect(await engine.decryptText(at, STRING, texts[0] as string)).toBe(value);
    }
  });

  test("the text form of a value is its bytes in base64url, whichever slab they sit in", async () => {
    const { engine } = await setup();
    const first = await engine.encrypt(at, STRING, "first");
    const expected = `kms1:${Buffer.from(first).toString("base64url")}`;
    expect(toFieldText(first)).toBe(expected);
    // 64 KiB slabs of ~56-byte values: 3000 more values move past the first one's slab.
    for (let i = 0; i < 3000; i++) engine.encryptIfCached(at, STRING, "x");
    expect(toFieldText(first)).toBe(expected);
    expect(await engine.decryptText(at, STRING, expected)).toBe("first");
  });
});
