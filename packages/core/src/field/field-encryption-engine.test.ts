import { describe, expect, test } from "vitest";
import { DataKeyCache } from "../caching/data-key-cache.ts";
import { InvalidCiphertextError, InvalidStateError, ValidationError } from "../errors.ts";
import { KmsKeyring } from "../keyring/kms-keyring.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { decryptMessage, encryptMessage } from "../message/message.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import type { EncryptionContext } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { type DataKeyRecord, type DataKeyStore, MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";
import { DETERMINISTIC_OVERHEAD, RANDOMIZED_OVERHEAD, toFieldText } from "./field-format.ts";

/** Counts the KMS calls an engine makes, so tests can check what caching saves. */
function counting(kms: Kms): KmsLike & { calls: Record<string, number> } {
  const calls: Record<string, number> = { decrypt: 0, generateDataKey: 0 };
  return {
    calls,
    encrypt: (r, o) => kms.encrypt(r, o),
    decrypt: (r, o) => {
      calls.decrypt = (calls.decrypt ?? 0) + 1;
      return kms.decrypt(r, o);
    },
    generateDataKey: (r, o) => {
      calls.generateDataKey = (calls.generateDataKey ?? 0) + 1;
      return kms.generateDataKey(r, o);
    },
    generateDataKeyWithoutPlaintext: (r, o) => kms.generateDataKeyWithoutPlaintext(r, o),
    sign: (r, o) => kms.sign(r, o),
    verify: (r, o) => kms.verify(r, o),
    generateMac: (r, o) => kms.generateMac(r, o),
    verifyMac: (r, o) => kms.verifyMac(r, o),
    getPublicKey: (r, o) => kms.getPublicKey(r, o),
  };
}

async function setup(
  options: {
    clock?: ManualClock;
    cache?: { maxAgeMs?: number; maxValues?: number; maxBytes?: number };
  } = {},
) {
  const clock = options.clock ?? new ManualClock();
  const kms = await createKms({ clock });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const counted = counting(kms);
  const store = new MemoryDataKeyStore();
  const make = (legacyPlaintext = false) =>
    new FieldEncryptionEngine({
      kms: counted,
      dataKeyStore: store,
      keyId,
      clock,
      legacyPlaintext,
      ...(options.cache === undefined ? {} : { cache: options.cache }),
    });
  return { kms, keyId, counted, store, engine: make(), make, clock };
}

const at = (model: string, field: string, context: EncryptionContext = {}): FieldBinding => ({
  model,
  field,
  context,
});
const tenantA = at("User", "email", { tenantId: "a" });
const STRING: FieldSpec = { type: "string" };
const DET: FieldSpec = { type: "string", mode: "deterministic" };

describe("FieldEncryptionEngine", () => {
  const values: [FieldSpec["type"], unknown][] = [
    ["string", "héllo wörld"],
    ["string", ""],
    ["bytes", Uint8Array.of(0, 1, 2, 255)],
    ["number", -12.5],
    ["number", Number.MAX_SAFE_INTEGER],
    ["boolean", true],
    ["boolean", false],
    ["date", new Date("2026-03-04T05:06:07.089Z")],
    ["bigint", -(2n ** 80n)],
    ["decimal", "12345.6789"],
    ["json", { a: [1, "x", null], b: { c: true } }],
  ];

  test.each(values)("%s round-trips in both modes and both encodings", async (type, value) => {
    const { engine } = await setup();
    for (const mode of ["randomized", "deterministic"] as const) {
      const spec = { type, mode };
      const bytes = await engine.encrypt(tenantA, spec, value);
      expect(await engine.decrypt(tenantA, spec, bytes)).toEqual(value);
      const text = await engine.encryptText(tenantA, spec, value);
      expect(text.startsWith("kms1:")).toBe(true);
      expect(await engine.decryptText(tenantA, spec, text)).toEqual(value);
    }
  });

  test("per-value overhead is 46 bytes randomized, 34 deterministic (§6.1, ≤ 48)", async () => {
    const { engine } = await setup();
    const plain = "x".repeat(32);
    expect((await engine.encrypt(tenantA, STRING, plain)).length).toBe(32 + RANDOMIZED_OVERHEAD);
    expect((await engine.encrypt(tenantA, DET, plain)).length).toBe(32 + DETERMINISTIC_OVERHEAD);
    expect(RANDOMIZED_OVERHEAD).toBeLessThanOrEqual(48);
  });

  test("randomized values differ; deterministic ones are equal per field and tenant only", async () => {
    const { engine } = await setup();
    const a1 = await engine.encryptText(tenantA, STRING, "v");
    const a2 = await engine.encryptText(tenantA, STRING, "v");
    expect(a1).not.toBe(a2);
    const d1 = await engine.encryptText(tenantA, DET, "v");
    expect(await engine.encryptText(tenantA, DET, "v")).toBe(d1);
    expect(await engine.encryptText(tenantA, DET, "w")).not.toBe(d1);
    expect(await engine.encryptText(at("User", "email", { tenantId: "b" }), DET, "v")).not.toBe(d1);
    expect(await engine.encryptText(at("User", "phone", { tenantId: "a" }), DET, "v")).not.toBe(d1);
  });

  test.each([
    ["another field", at("User", "phone", { tenantId: "a" })],
    ["another model", at("Admin", "email", { tenantId: "a" })],
    ["another tenant", at("User", "email", { tenantId: "b" })],
    ["no tenant", at("User", "email")],
    ["an extra context key", at("User", "email", { tenantId: "a", region: "eu" })],
  ])("a value moved to %s does not decrypt", async (_, binding) => {
    const { engine } = await setup();
    for (const spec of [STRING, DET]) {
      const text = await engine.encryptText(tenantA, spec, "secret");
      await expect(engine.decryptText(binding, spec, text)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
    }
  });

  test("flipping any bit of a value fails authentication", async () => {
    const { engine } = await setup();
    for (const spec of [STRING, DET]) {
      const bytes = await engine.encrypt(tenantA, spec, "secret value");
      for (let i = 0; i < bytes.length; i++) {
        const bad = bytes.slice();
        bad[i] = (bad[i] as number) ^ 0x01;
        await expect(engine.decrypt(tenantA, spec, bad), `byte ${i}`).rejects.toBeInstanceOf(
          InvalidCiphertextError,
        );
      }
    }
  });

  test("declared types are enforced on both ends", async () => {
    const { engine } = await setup();
    await expect(engine.encrypt(tenantA, { type: "number" }, "1")).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(engine.encrypt(tenantA, { type: "date" }, new Date(Number.NaN))).rejects.toThrow(
      /declared as date/,
    );
    const text = await engine.encryptText(tenantA, { type: "number" }, 1);
    await expect(engine.decryptText(tenantA, STRING, text)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  const junk = [
    "plain text",
    "",
    "kms1:",
    "kms1:!!!!",
    "kms1:AAAA",
    "kms1:A",
    `kms1:${"A".repeat(80)}`,
    toFieldText(Uint8Array.of(0xc1, ...new Uint8Array(60))),
    toFieldText(Uint8Array.of(0xc2, ...new Uint8Array(40))),
  ];
  test.each(junk)("strict mode rejects junk %j", async (value) => {
    const { engine } = await setup();
    await expect(engine.decryptText(tenantA, STRING, value)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("non-string / non-bytes stored values are rejected", async () => {
    const { engine } = await setup();
    await expect(engine.decryptText(tenantA, STRING, 42 as never)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    await expect(engine.decrypt(tenantA, STRING, "x" as never)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("legacy plaintext mode returns unprefixed values as they are, still checks ours", async () => {
    const { make, engine } = await setup();
    const legacy = make(true);
    expect(await legacy.decryptText(tenantA, STRING, "old plain value")).toBe("old plain value");
    const text = await engine.encryptText(tenantA, STRING, "new");
    expect(await legacy.decryptText(tenantA, STRING, text)).toBe("new");
    await expect(
      legacy.decryptText(tenantA, STRING, `${text.slice(0, -2)}AA`),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(await legacy.inspect("old plain value")).toEqual({ legacy: true });
  });

  test("legacy plaintext is read as the declared type, never as raw text or bytes", async () => {
    const { make } = await setup();
    const legacy = make(true);
    const NUM: FieldSpec = { type: "number" };
    expect(await legacy.decryptText(tenantA, NUM, "42")).toBe(42);
    expect(legacy.decryptIfCached(tenantA, { type: "boolean" }, "t")).toBe(true);
    expect(await legacy.decrypt(tenantA, NUM, new TextEncoder().encode("7"))).toBe(7);
    expect(
      await legacy.decryptMany([
        { binding: tenantA, spec: { type: "bigint" }, stored: "12" },
        { binding: tenantA, spec: { type: "bytes" }, stored: "ab" },
        { binding: tenantA, spec: { type: "json" }, stored: '{"a":1}' },
      ]),
    ).toEqual([12n, new TextEncoder().encode("ab"), { a: 1 }]);
    // A plain value that is no text form of the type fails like any other bad value.
    for (const stored of ["abc", ""]) {
      await expect(legacy.decryptText(tenantA, NUM, stored)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
    }
    await expect(legacy.decryptText(tenantA, { type: "decimal" }, "1,5")).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("a restarted process reads everything with one KMS call per distinct data key", async () => {
    const { engine, make, counted, store } = await setup({ cache: { maxValues: 10 } });
    const texts: string[] = [];
    for (let i = 0; i < 25; i++) texts.push(await engine.encryptText(tenantA, STRING, `v${i}`));
    const det = await engine.encryptText(tenantA, DET, "d");
    expect(store.size).toBe(4); // 3 randomized (10 values each) + 1 stable
    const before = counted.calls.decrypt ?? 0;
    const fresh = make();
    const out = await Promise.all(texts.map((t) => fresh.decryptText(tenantA, STRING, t)));
    expect(out).toEqual(texts.map((_, i) => `v${i}`));
    expect(await fresh.decryptText(tenantA, DET, det)).toBe("d");
    expect((counted.calls.decrypt ?? 0) - before).toBe(4);
    // The deterministic key is found again, not replaced: lookups survive restarts.
    expect(await fresh.encryptText(tenantA, DET, "d")).toBe(det);
  });

  test("decryptMany opens mixed values with one KMS call per distinct data key", async () => {
    const { engine, make, counted } = await setup({ cache: { maxValues: 4 } });
    const tenantB = at("User", "email", { tenantId: "b" });
    const items = [];
    for (let i = 0; i < 10; i++) {
      const binding = i % 2 === 0 ? tenantA : tenantB;
      items.push({
        binding,
        spec: STRING,
        stored: await engine.encryptText(binding, STRING, `s${i}`),
      });
      items.push({ binding, spec: DET, stored: await engine.encrypt(binding, DET, `d${i}`) });
    }
    const fresh = make();
    const before = counted.calls.decrypt ?? 0;
    const out = await fresh.decryptMany(items);
    expect(out).toEqual(items.map((_, j) => (j % 2 === 0 ? `s${j / 2}` : `d${(j - 1) / 2}`)));
    // 5 values per tenant at maxValues 4: 2 randomized keys per tenant, plus 1 stable each.
    expect((counted.calls.decrypt ?? 0) - before).toBe(6);
    const moved = [...items];
    moved[3] = { ...(moved[3] as (typeof items)[number]), binding: tenantA };
    await expect(fresh.decryptMany(moved)).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(
      fresh.decryptMany([{ binding: tenantA, spec: STRING, stored: "plain" }]),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    expect(
      await make(true).decryptMany([{ binding: tenantA, spec: STRING, stored: "plain" }]),
    ).toEqual(["plain"]);
  });

  test("encryptIfCached seals synchronously under a cached data key, within the same limits", async () => {
    const { engine, counted } = await setup({ cache: { maxAgeMs: 60_000, maxValues: 3 } });
    const tenantB = at("User", "email", { tenantId: "b" });
    // Cold: nothing generated, nothing thrown.
    expect(engine.encryptIfCached(tenantA, STRING, "x")).toBeUndefined();
    expect(engine.encryptTextIfCached(tenantA, STRING, "x")).toBeUndefined();
    expect(counted.calls.generateDataKey).toBe(0);
    await engine.encryptText(tenantA, STRING, "first"); // use 1 of 3
    const text = engine.encryptTextIfCached(tenantA, STRING, "second"); // use 2
    const bytes = engine.encryptIfCached(tenantA, STRING, "third"); // use 3
    expect(text).toMatch(/^kms1:/);
    expect(bytes).toBeInstanceOf(Uint8Array);
    expect(await engine.decryptText(tenantA, STRING, text as string)).toBe("second");
    expect(await engine.decrypt(tenantA, STRING, bytes as Uint8Array)).toBe("third");
    await expect(engine.decryptText(tenantB, STRING, text as string)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    // maxValues reached: a miss, and the next encrypt generates a new data key.
    expect(engine.encryptIfCached(tenantA, STRING, "fourth")).toBeUndefined();
    expect(counted.calls.generateDataKey).toBe(1);
    // Another context has its own key; deterministic mode always takes the async path.
    expect(engine.encryptIfCached(tenantB, STRING, "b")).toBeUndefined();
    await engine.encryptText(tenantA, DET, "d");
    expect(engine.encryptIfCached(tenantA, DET, "d")).toBeUndefined();
    // The value is still checked against the declared type.
    await engine.encryptText(tenantA, STRING, "warm");
    expect(() => engine.encryptIfCached(tenantA, { type: "number" }, "nan")).toThrow(
      ValidationError,
    );
  });

  test("encryptIfCached uses a transaction's data key only inside that transaction", async () => {
    const { engine } = await setup();
    const scope = { transactionScope: "tx-7" };
    await engine.encryptText(tenantA, STRING, "in tx", scope);
    expect(engine.encryptTextIfCached(tenantA, STRING, "again", scope)).toMatch(/^kms1:/);
    expect(engine.encryptTextIfCached(tenantA, STRING, "outside")).toBeUndefined();
    expect(
      engine.encryptTextIfCached(tenantA, STRING, "other tx", { transactionScope: "tx-8" }),
    ).toBeUndefined();
  });

  test("decryptIfCached opens values synchronously once their data key is loaded", async () => {
    const { engine, make, counted, clock } = await setup({ cache: { maxAgeMs: 60_000 } });
    const tenantB = at("User", "email", { tenantId: "b" });
    const text = await engine.encryptText(tenantA, STRING, "r");
    const bytes = await engine.encrypt(tenantA, STRING, "b");
    const det = await engine.encryptText(tenantA, DET, "d");
    const fresh = make();
    // Cold: no key loaded, no KMS call made, nothing thrown.
    expect(fresh.decryptIfCached(tenantA, STRING, text)).toBeUndefined();
    expect(fresh.decryptIfCached(tenantA, DET, det)).toBeUndefined();
    expect(counted.calls.decrypt).toBe(0);
    await fresh.decryptMany([
      { binding: tenantA, spec: STRING, stored: text },
      { binding: tenantA, spec: DET, stored: det },
    ]);
    expect(fresh.decryptIfCached(tenantA, STRING, text)).toBe("r");
    expect(fresh.decryptIfCached(tenantA, STRING, bytes)).toBe("b");
    expect(fresh.decryptIfCached(tenantA, DET, det)).toBe("d");
    // Warm: the binding is still checked, per value, against the header's data key.
    expect(() => fresh.decryptIfCached(tenantB, STRING, text)).toThrow(InvalidCiphertextError);
    expect(() =>
      fresh.decryptIfCached(at("User", "name", { tenantId: "a" }), STRING, text),
    ).toThrow(InvalidCiphertextError);
    expect(() => fresh.decryptIfCached(tenantB, DET, det)).toThrow(InvalidCiphertextError);
    const flipped = Uint8Array.from(bytes);
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
    expect(() => fresh.decryptIfCached(tenantA, STRING, flipped)).toThrow(InvalidCiphertextError);
    // A value under another data key id (one header byte changed) is a miss, not a false hit.
    const otherId = Uint8Array.from(bytes);
    otherId[16] = (otherId[16] as number) ^ 1;
    expect(fresh.decryptIfCached(tenantA, STRING, otherId)).toBeUndefined();
    await expect(fresh.decrypt(tenantA, STRING, otherId)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(() => fresh.decryptIfCached(tenantA, STRING, "plain")).toThrow(InvalidCiphertextError);
    expect(() => fresh.decryptIfCached(tenantA, STRING, "kms1:*")).toThrow(InvalidCiphertextError);
    expect(make(true).decryptIfCached(tenantA, STRING, "plain")).toBe("plain");
    // Past maxAgeMs the key counts as not cached; clearCache forgets it at once.
    clock.advance(60_000);
    expect(fresh.decryptIfCached(tenantA, STRING, text)).toBeUndefined();
    expect(await fresh.decryptText(tenantA, STRING, text)).toBe("r");
    expect(fresh.decryptIfCached(tenantA, STRING, text)).toBe("r");
    fresh.clearCache();
    expect(fresh.decryptIfCached(tenantA, STRING, text)).toBeUndefined();
    expect(fresh.decryptIfCached(tenantA, DET, det)).toBeUndefined();
  });

  test("frozen and fresh context objects bind the same way", async () => {
    const { engine } = await setup();
    const frozen = Object.freeze({ tenantId: "a" });
    const text = await engine.encryptText(at("User", "email", frozen), STRING, "v");
    expect(await engine.decryptText(tenantA, STRING, text)).toBe("v");
    expect(engine.decryptIfCached(at("User", "email", frozen), STRING, text)).toBe("v");
    const otherFrozen = Object.freeze({ tenantId: "b" });
    expect(() => engine.decryptIfCached(at("User", "email", otherFrozen), STRING, text)).toThrow(
      InvalidCiphertextError,
    );
  });

  test("the writer reads its own values without any KMS decrypt", async () => {
    const { engine, counted } = await setup();
    const text = await engine.encryptText(tenantA, STRING, "v");
    await engine.decryptText(tenantA, STRING, text);
    expect(counted.calls.decrypt).toBe(0);
  });

  test("data keys roll over on max values, max bytes and max age", async () => {
    const clock = new ManualClock();
    const byCount = await setup({ clock, cache: { maxValues: 3 } });
    for (let i = 0; i < 7; i++) await byCount.engine.encrypt(tenantA, STRING, "x");
    expect(byCount.counted.calls.generateDataKey).toBe(3);

    const byBytes = await setup({ cache: { maxBytes: 25 } });
    for (let i = 0; i < 4; i++) await byBytes.engine.encrypt(tenantA, STRING, "x".repeat(9));
    expect(byBytes.counted.calls.generateDataKey).toBe(2); // 10 + 10 bytes fit, the third does not

    const byAge = await setup({ clock, cache: { maxAgeMs: 1000 } });
    await byAge.engine.encrypt(tenantA, STRING, "x");
    clock.advance(999);
    await byAge.engine.encrypt(tenantA, STRING, "x");
    expect(byAge.counted.calls.generateDataKey).toBe(1);
    clock.advance(1);
    await byAge.engine.encrypt(tenantA, STRING, "x");
    expect(byAge.counted.calls.generateDataKey).toBe(2);
  });

  test("a shared DataKeyCache governs the engine's keys: its limits, capacity and clearing", async () => {
    const clock = new ManualClock();
    const { counted, keyId, store } = await setup({ clock });
    const cache = new DataKeyCache({ maxAgeMs: 60_000, maxMessages: 2, capacity: 2, clock });
    const engine = new FieldEncryptionEngine({
      kms: counted,
      dataKeyStore: store,
      keyId,
      clock,
      dataKeyCache: cache,
    });
    // maxMessages counts values: 5 values need 3 data keys.
    const texts: string[] = [];
    for (let i = 0; i < 5; i++) texts.push(await engine.encryptText(tenantA, STRING, `v${i}`));
    expect(counted.calls.generateDataKey).toBe(3);
    // The writer's keys sit in the shared cache (for writing and reading back), within capacity.
    expect(cache.size).toBe(2);
    // Clearing the shared cache from outside makes the engine unwrap again, once per key.
    cache.clear();
    expect(engine.decryptIfCached(tenantA, STRING, texts[4] as string)).toBeUndefined();
    expect(await engine.decryptText(tenantA, STRING, texts[4] as string)).toBe("v4");
    expect(await engine.decryptText(tenantA, STRING, texts[4] as string)).toBe("v4");
    expect(counted.calls.decrypt).toBe(1);
    // Capacity 2: loading two more keys evicts the least recently used one (v4's).
    expect(await engine.decryptText(tenantA, STRING, texts[0] as string)).toBe("v0");
    expect(await engine.decryptText(tenantA, STRING, texts[2] as string)).toBe("v2");
    expect(counted.calls.decrypt).toBe(3);
    expect(cache.size).toBe(2);
    expect(engine.decryptIfCached(tenantA, STRING, texts[4] as string)).toBeUndefined();
    expect(engine.decryptIfCached(tenantA, STRING, texts[2] as string)).toBe("v2");
    // The cache's age limit applies to read keys too.
    clock.advance(60_000);
    expect(engine.decryptIfCached(tenantA, STRING, texts[0] as string)).toBeUndefined();
  });

  test("engines and messages sharing one cache never hand each other a key", async () => {
    const { counted, keyId, kms } = await setup();
    const cache = new DataKeyCache({ maxAgeMs: 60_000 });
    const engineOf = (store: DataKeyStore) =>
      new FieldEncryptionEngine({ kms: counted, dataKeyStore: store, keyId, dataKeyCache: cache });
    const storeA = new MemoryDataKeyStore();
    const a = engineOf(storeA);
    const b = engineOf(new MemoryDataKeyStore());
    const text = await a.encryptText(tenantA, STRING, "mine");
    // B has no record of A's data key: the shared cache does not leak A's plaintext key to it.
    await expect(b.decryptText(tenantA, STRING, text)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    // A second engine over A's store reads it, through the KMS (its own cache namespace).
    const before = counted.calls.decrypt ?? 0;
    expect(await engineOf(storeA).decryptText(tenantA, STRING, text)).toBe("mine");
    expect((counted.calls.decrypt ?? 0) - before).toBe(1);
    // Messages reuse the same cache beside the engine's entries.
    const keyring = new KmsKeyring({ kms, keyIds: [keyId] });
    const sizeBefore = cache.size;
    const message = await encryptMessage(new Uint8Array(10), {
      keyring,
      encryptionContext: { tenantId: "a" },
      dataKeyCache: cache,
    });
    expect(cache.size).toBe(sizeBefore + 1);
    const opened = await decryptMessage(message, { keyring });
    expect(Buffer.from(opened.plaintext).equals(Buffer.alloc(10))).toBe(true);
    expect(await a.decryptText(tenantA, STRING, text)).toBe("mine");
  });

  test("the cache limits and a shared cache are exclusive options", async () => {
    const { counted, keyId, store } = await setup();
    const dataKeyCache = new DataKeyCache({ maxAgeMs: 1000 });
    expect(
      () =>
        new FieldEncryptionEngine({
          kms: counted,
          dataKeyStore: store,
          keyId,
          dataKeyCache,
          cache: { maxValues: 3 },
        }),
    ).toThrow(/exclusive/);
    expect(
      () =>
        new FieldEncryptionEngine({
          kms: counted,
          dataKeyStore: store,
          keyId,
          dataKeyCache: {} as DataKeyCache,
        }),
    ).toThrow(ValidationError);
  });

  test("concurrent writers share one fresh data key", async () => {
    const { engine, counted } = await setup();
    await Promise.all(Array.from({ length: 50 }, () => engine.encrypt(tenantA, STRING, "x")));
    expect(counted.calls.generateDataKey).toBe(1);
  });

  test("one KMS key per tenant: deleting tenant a's key shreds only tenant a", async () => {
    const kms = await createKms();
    const keys: Record<string, string> = {
      a: (await kms.createKey()).keyMetadata.keyId,
      b: (await kms.createKey()).keyMetadata.keyId,
    };
    const store = new MemoryDataKeyStore();
    const make = () =>
      new FieldEncryptionEngine({
        kms,
        dataKeyStore: store,
        keyId: (ctx) => keys[ctx.tenantId ?? ""] ?? "missing",
      });
    const engine = make();
    const tenantB = at("User", "email", { tenantId: "b" });
    const a = await engine.encryptText(tenantA, STRING, "alice");
    const b = await engine.encryptText(tenantB, STRING, "bob");
    const aDet = await engine.encryptText(tenantA, DET, "alice");
    expect((await engine.inspect(a)).legacy === false && (await engine.inspect(a))).toMatchObject({
      kmsKeyId: expect.stringContaining(keys.a as string),
    });
    await kms.scheduleKeyDeletion({ keyId: keys.a as string, pendingWindowInDays: 7 });
    const fresh = make();
    await expect(fresh.decryptText(tenantA, STRING, a)).rejects.toBeInstanceOf(InvalidStateError);
    await expect(fresh.decryptText(tenantA, DET, aDet)).rejects.toBeInstanceOf(InvalidStateError);
    expect(await fresh.decryptText(tenantB, STRING, b)).toBe("bob");
  });

  test("a value whose data key record is missing does not decrypt", async () => {
    const { engine, kms, keyId } = await setup();
    const text = await engine.encryptText(tenantA, STRING, "v");
    const other = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
    await expect(other.decryptText(tenantA, STRING, text)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("blind indexes: keyed, normalized, truncated, per tenant and per index", async () => {
    const { engine, make } = await setup();
    const spec = { bytes: 8, normalize: ["trim", "lowercase", "nfkc"] as const };
    const i1 = await engine.blindIndex(tenantA, spec, "  Alice@Example.COM ");
    expect(i1).toBe(await engine.blindIndex(tenantA, spec, "alice@example.com"));
    expect(Buffer.from(i1, "base64url").length).toBe(8);
    expect(await make().blindIndex(tenantA, spec, "alice@example.com")).toBe(i1);
    expect(
      await engine.blindIndex(at("User", "email", { tenantId: "b" }), spec, "alice@example.com"),
    ).not.toBe(i1);
    expect(
      await engine.blindIndex(at("User", "phone", { tenantId: "a" }), spec, "alice@example.com"),
    ).not.toBe(i1);
    expect(await engine.blindIndex(tenantA, { bytes: 32 }, "x")).toHaveLength(43);
    // A different KMS key gives unrelated indexes: the index is keyed, not a bare hash.
    const other = await setup();
    expect(await other.engine.blindIndex(tenantA, spec, "alice@example.com")).not.toBe(i1);
    await expect(engine.blindIndex(tenantA, { bytes: 3 }, "x")).rejects.toBeInstanceOf(
      ValidationError,
    );
  });

  test("model and field names holding NUL never share a blind-index or deterministic key", async () => {
    const { engine } = await setup();
    const left = at("a\u0000b", "c", { tenantId: "a" });
    const right = at("a", "b\u0000c", { tenantId: "a" });
    expect(await engine.blindIndex(left, {}, "x")).not.toBe(
      await engine.blindIndex(right, {}, "x"),
    );
    const sealed = await engine.encrypt(left, DET, "x");
    expect(await engine.encrypt(right, DET, "x")).not.toEqual(sealed);
  });

  test("a context that is not a plain object of strings is refused, cached or not", async () => {
    const { engine } = await setup();
    // Warm every cache for the contexts the bad ones would alias.
    await engine.encrypt(at("User", "email"), STRING, "v");
    await engine.encrypt(at("User", "email", { tenantId: "1" }), STRING, "v");
    await engine.encrypt(at("User", "email", { tenantId: "1" }), DET, "v");
    const bad = [
      new Map([["tenantId", "a"]]),
      { tenantId: 1 },
      { tenantId: ["1"] },
    ] as unknown as EncryptionContext[];
    for (const context of bad) {
      const binding = at("User", "email", context);
      expect(() => engine.encryptIfCached(binding, STRING, "v")).toThrow(ValidationError);
      await expect(engine.encrypt(binding, STRING, "v")).rejects.toBeInstanceOf(ValidationError);
      await expect(engine.encrypt(binding, DET, "v")).rejects.toBeInstanceOf(ValidationError);
      await expect(engine.blindIndex(binding, {}, "v")).rejects.toBeInstanceOf(ValidationError);
    }
  });

  test("a data key the KMS unwraps to other than 32 bytes is refused, inside a transaction too", async () => {
    const { engine, kms, keyId, store } = await setup();
    await engine.blindIndex(tenantA, {}, "x");
    const text = await engine.encryptText(tenantA, DET, "x");
    // A row swapped for one wrapping a short key (anyone with Encrypt on some key can make one).
    const short: KmsLike = {
      ...counting(kms),
      decrypt: async (r, o) => {
        const out = await kms.decrypt(r, o);
        return { ...out, plaintext: out.plaintext.subarray(0, 1) };
      },
    };
    const victim = new FieldEncryptionEngine({ kms: short, keyId, dataKeyStore: store });
    await expect(
      victim.blindIndex(tenantA, {}, "x", { transactionScope: "tx" }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(
      victim.encrypt(tenantA, DET, "x", { transactionScope: "tx" }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(victim.blindIndex(tenantA, {}, "x")).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    await expect(victim.decryptText(tenantA, DET, text)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("the data-key rows an engine remembers are bounded, oldest forgotten first", async () => {
    const store = new MemoryDataKeyStore();
    let gets = 0;
    const counted: DataKeyStore = {
      insert: (r) => store.insert(r),
      get: (id) => {
        gets += 1;
        return store.get(id);
      },
    };
    const { kms, keyId } = await setup();
    const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: counted });
    // inspect() needs the row only, so made-up rows and headers will do.
    const value = (n: number) => {
      const bytes = new Uint8Array(RANDOMIZED_OVERHEAD);
      bytes[0] = 0xc1;
      new DataView(bytes.buffer).setUint32(13, n);
      return bytes;
    };
    const idOf = (n: number) => Buffer.from(value(n).subarray(1, 17)).toString("hex");
    const rows = 4097;
    for (let n = 0; n < rows; n++) {
      await store.insert({
        id: idOf(n),
        kmsKeyId: "arn",
        wrappedKey: new Uint8Array(1),
        encryptionContext: {},
        purpose: "randomized",
        createdAt: n,
      });
    }
    await engine.inspect(value(0));
    await engine.inspect(value(0));
    expect(gets).toBe(1);
    for (let n = 1; n < rows; n++) await engine.inspect(value(n));
    expect(gets).toBe(rows);
    expect(await engine.inspect(value(0))).toMatchObject({ createdAt: 0 });
    expect(gets).toBe(rows + 1);
  });

  test("the stable keys an engine remembers are bounded, oldest forgotten first", async () => {
    const store = new MemoryDataKeyStore();
    let gets = 0;
    const counted: DataKeyStore = {
      insert: (r) => store.insert(r),
      get: (id) => {
        gets += 1;
        return store.get(id);
      },
    };
    const { kms, keyId } = await setup();
    const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: counted });
    const tenant = (n: number) => at("User", "email", { tenantId: String(n) });
    const first = await engine.blindIndex(tenant(0), {}, "x");
    await engine.blindIndex(tenant(0), {}, "x");
    const afterFirst = gets;
    for (let n = 1; n <= 4096; n++) await engine.blindIndex(tenant(n), {}, "x");
    const before = gets;
    expect(await engine.blindIndex(tenant(0), {}, "x")).toBe(first);
    expect(afterFirst).toBe(1);
    expect(gets).toBeGreaterThan(before);
  }, 30_000);

  test("keys created inside a transaction scope are not reused after it (rollback safety)", async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const records = new Map<string, DataKeyRecord>();
    // A store whose inserts can be rolled back, as a data key row inside a SQLite transaction.
    const store: DataKeyStore = {
      insert: async (r) => {
        const existing = records.get(r.id);
        if (existing !== undefined) return existing;
        records.set(r.id, r);
        return r;
      },
      get: async (id) => records.get(id),
    };
    const engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: store });
    const scope = { transactionScope: "tx-1" };
    await engine.encryptText(tenantA, STRING, "in tx", scope);
    await engine.encryptText(tenantA, DET, "in tx", scope);
    expect(records.size).toBe(2);
    records.clear(); // the transaction rolls back
    const after = await engine.encryptText(tenantA, STRING, "after");
    const afterDet = await engine.encryptText(tenantA, DET, "after");
    expect(records.size).toBe(2);
    const fresh = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: store });
    expect(await fresh.decryptText(tenantA, STRING, after)).toBe("after");
    expect(await fresh.decryptText(tenantA, DET, afterDet)).toBe("after");
  });

  test("a committed transaction's data keys serve later writers; a rolled-back one's are dropped", async () => {
    const { engine, counted } = await setup();
    const tenantB = at("User", "email", { tenantId: "b" });
    const tx = (id: string) => ({ transactionScope: id });
    await engine.encryptText(tenantA, STRING, "in tx 1", tx("tx-1"));
    await engine.encryptText(tenantA, DET, "in tx 1", tx("tx-1"));
    const made = counted.calls.generateDataKey;
    expect(engine.encryptTextIfCached(tenantA, STRING, "outside")).toBeUndefined();
    engine.endTransactionScope("tx-1", "commit");
    // Now durable: outside any transaction and in the next one, no new data key.
    const outside = engine.encryptTextIfCached(tenantA, STRING, "outside");
    expect(outside).toMatch(/^kms1:/);
    expect(engine.encryptTextIfCached(tenantA, STRING, "tx 2", tx("tx-2"))).toMatch(/^kms1:/);
    await engine.encryptText(tenantA, DET, "tx 2", tx("tx-2"));
    await engine.encryptText(tenantA, DET, "outside");
    expect(counted.calls.generateDataKey).toBe(made);
    expect(await engine.decryptText(tenantA, STRING, outside as string)).toBe("outside");

    // A rolled-back scope's keys are gone at once, from the cache and the engine.
    await engine.encryptText(tenantB, STRING, "in tx 3", tx("tx-3"));
    expect(counted.calls.generateDataKey).toBe((made ?? 0) + 1);
    engine.endTransactionScope("tx-3", "rollback");
    expect(engine.encryptTextIfCached(tenantB, STRING, "x", tx("tx-3"))).toBeUndefined();
    expect(engine.encryptTextIfCached(tenantB, STRING, "x")).toBeUndefined();
  });

  test("committing does not replace a key made meanwhile outside the transaction", async () => {
    const { engine, counted } = await setup();
    const first = await engine.encrypt(tenantA, STRING, "tx", { transactionScope: "tx-1" });
    const second = await engine.encrypt(tenantA, STRING, "outside");
    expect(counted.calls.generateDataKey).toBe(2);
    engine.endTransactionScope("tx-1", "commit");
    const third = engine.encryptIfCached(tenantA, STRING, "after") as Uint8Array;
    // Header bytes 1–16: the data key id. The durable key made outside stays in use.
    expect(Buffer.from(third.subarray(1, 17))).toEqual(Buffer.from(second.subarray(1, 17)));
    expect(Buffer.from(third.subarray(1, 17))).not.toEqual(Buffer.from(first.subarray(1, 17)));
  });

  test("constructor options are validated", async () => {
    const { kms } = await setup();
    const store = new MemoryDataKeyStore();
    expect(() => new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId: "" })).toThrow(
      ValidationError,
    );
    expect(
      () =>
        new FieldEncryptionEngine({
          kms,
          dataKeyStore: store,
          keyId: "k",
          cache: { maxValues: 0 },
        }),
    ).toThrow(/maxValues/);
    expect(
      () => new FieldEncryptionEngine({ kms: {} as KmsLike, dataKeyStore: store, keyId: "k" }),
    ).toThrow(/KmsLike/);
  });
});

describe("keyContext: pairs bound into the value but not into its data key", () => {
  const row = (recordId: string, tenantId = "a"): FieldBinding => ({
    model: "Patient",
    field: "note",
    context: { tenantId, recordId },
    keyContext: { tenantId },
  });
  const dataKeyId = (value: Uint8Array) => Buffer.from(value.subarray(1, 17)).toString("hex");

  test("rows of a tenant share one data key, yet a value copied to another row fails", async () => {
    const { engine, counted, store } = await setup();
    const one = await engine.encrypt(row("r1"), STRING, "one");
    const two = await engine.encrypt(row("r2"), STRING, "two");
    const det1 = await engine.encrypt(row("r1"), DET, "same");
    const det2 = await engine.encrypt(row("r2"), DET, "same");
    expect(dataKeyId(one)).toBe(dataKeyId(two));
    expect(dataKeyId(det1)).toBe(dataKeyId(det2));
    // One randomized and one stable data key for the tenant, however many rows.
    expect(counted.calls.generateDataKey).toBe(2);
    const record = await store.get(dataKeyId(one));
    expect(record?.encryptionContext).toEqual({ tenantId: "a" });
    // Deterministic values still depend on the whole binding, the row included.
    expect(Buffer.from(det1).equals(Buffer.from(det2))).toBe(false);
    expect(await engine.decrypt(row("r1"), STRING, one)).toBe("one");
    expect(await engine.decrypt(row("r2"), DET, det2)).toBe("same");
    for (const [value, spec] of [
      [one, STRING],
      [det1, DET],
    ] as const) {
      await expect(engine.decrypt(row("r2"), spec, value)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
      // Nor in another tenant, where the KMS refuses the data key's context too.
      await expect(engine.decrypt(row("r1", "b"), spec, value)).rejects.toBeInstanceOf(
        InvalidCiphertextError,
      );
    }
  });

  test("a process that never wrote reads the rows with one KMS decrypt per data key", async () => {
    const { engine, make, counted } = await setup();
    const values = await Promise.all(
      ["r1", "r2", "r3", "r4"].map((id) => engine.encrypt(row(id), STRING, id)),
    );
    const reader = make();
    const before = counted.calls.decrypt ?? 0;
    const read = await reader.decryptMany(
      values.map((stored, i) => ({ binding: row(`r${i + 1}`), spec: STRING, stored })),
    );
    expect(read).toEqual(["r1", "r2", "r3", "r4"]);
    expect((counted.calls.decrypt ?? 0) - before).toBe(1);
  });

  test("values written with the row in the data key's context still decrypt (binding unchanged)", async () => {
    const { engine } = await setup();
    const { keyContext: _, ...whole } = row("r1");
    const before = await engine.encrypt(whole, STRING, "written before keyContext");
    expect(await engine.decrypt(row("r1"), STRING, before)).toBe("written before keyContext");
    await expect(engine.decrypt(row("r2"), STRING, before)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
  });

  test("a keyContext that is not a part of the context is refused before any KMS call", async () => {
    const { engine, counted } = await setup();
    for (const keyContext of [{ tenantId: "b" }, { other: "x" }]) {
      const binding = { ...row("r1"), keyContext };
      await expect(engine.encrypt(binding, STRING, "x")).rejects.toBeInstanceOf(ValidationError);
      await expect(engine.encrypt(binding, DET, "x")).rejects.toThrow(/keyContext/);
      await expect(engine.blindIndex(binding, {}, "x")).rejects.toThrow(/keyContext/);
    }
    expect(counted.calls.generateDataKey).toBe(0);
  });
});
