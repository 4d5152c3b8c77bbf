import { describe, expect, test } from "vitest";
import { DataKeyCache } from "../caching/data-key-cache.ts";
import { createKms, type Kms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import { bindingOf, contextKey, type FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldDataKeys } from "./field-data-keys.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * clearCache() zeroes the raw bytes of every key it drops, and a value operation that is using
 * (or waiting for) a key at that moment still completes with the right key.
 */

const DET: FieldSpec = { type: "string", mode: "deterministic" };
const RANDOM: FieldSpec = { type: "string" };

/** The KMS, keeping a reference to every plaintext data key it hands out. */
function capturing(kms: Kms): { kms: KmsLike; plaintexts: Uint8Array[] } {
  const plaintexts: Uint8Array[] = [];
  const wrapped: KmsLike = {
    encrypt: (r, o) => kms.encrypt(r, o),
    decrypt: async (r, o) => {
      const out = await kms.decrypt(r, o);
      plaintexts.push(out.plaintext);
      return out;
    },
    generateDataKey: async (r, o) => {
      const out = await kms.generateDataKey(r, o);
      plaintexts.push(out.plaintext);
      return out;
    },
    generateDataKeyWithoutPlaintext: (r, o) => kms.generateDataKeyWithoutPlaintext(r, o),
    sign: (r, o) => kms.sign(r, o),
    verify: (r, o) => kms.verify(r, o),
    generateMac: (r, o) => kms.generateMac(r, o),
    verifyMac: (r, o) => kms.verifyMac(r, o),
    getPublicKey: (r, o) => kms.getPublicKey(r, o),
  };
  return { kms: wrapped, plaintexts };
}

const allZero = (bytes: Uint8Array) => bytes.every((b) => b === 0);

/**
 * The KMS, counting its calls; each Decrypt or GenerateDataKey waits, before it runs, for the
 * next gate queued for its kind (none queued: it runs at once).
 */
function gated(kms: Kms) {
  const calls = { decrypt: 0, generateDataKey: 0 };
  const gates = { decrypt: [] as Promise<void>[], generateDataKey: [] as Promise<void>[] };
  /** Holds back the next call of `kind`; the function returned lets it go. */
  const hold = (kind: keyof typeof gates): (() => void) => {
    let open = () => {};
    gates[kind].push(new Promise<void>((resolve) => (open = resolve)));
    return open;
  };
  const wrapped: KmsLike = {
    ...capturing(kms).kms,
    decrypt: async (r, o) => {
      calls.decrypt += 1;
      await gates.decrypt.shift();
      return kms.decrypt(r, o);
    },
    generateDataKey: async (r, o) => {
      calls.generateDataKey += 1;
      await gates.generateDataKey.shift();
      return kms.generateDataKey(r, o);
    },
  };
  return { kms: wrapped, calls, hold };
}

/** Lets pending promise callbacks (the store's, the KMS's) run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

async function setup() {
  const kms = await createKms({ audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const store = new MemoryDataKeyStore();
  const captured = capturing(kms);
  const engine = () => new FieldEncryptionEngine({ kms: captured.kms, dataKeyStore: store, keyId });
  /** An engine on the same store whose KMS calls the test holds back and counts. */
  const gatedEngine = () => {
    const held = gated(kms);
    return {
      ...held,
      engine: new FieldEncryptionEngine({ kms: held.kms, dataKeyStore: store, keyId }),
    };
  };
  return { engine, gatedEngine, plaintexts: captured.plaintexts };
}

const at = (tenantId: string, field = "email"): FieldBinding => ({
  model: "User",
  field,
  context: { tenantId },
});

describe("clearCache", () => {
  test("zeroes every data key and stable key it drops, and the engine keeps working", async () => {
    const { engine, plaintexts } = await setup();
    const writer = engine();
    const randomized = await writer.encrypt(at("a"), RANDOM, "r");
    const deterministic = await writer.encrypt(at("a"), DET, "d");
    const scoped = await writer.encrypt(at("c"), DET, "s", { transactionScope: "tx" });
    const index = await writer.blindIndex(at("b", "emailIndex"), {}, "x");
    // A second engine unwraps them all from the store (KMS Decrypt).
    const reader = engine();
    expect(await reader.decrypt(at("a"), RANDOM, randomized)).toBe("r");
    expect(await reader.decrypt(at("a"), DET, deterministic)).toBe("d");
    expect(await reader.blindIndex(at("b", "emailIndex"), {}, "x")).toBe(index);
    // Randomized keys live as KeyObjects (their bytes were wiped on import); stable keys are
    // raw bytes, in use until the caches are cleared.
    const live = plaintexts.filter((p) => !allZero(p));
    expect(live.length).toBeGreaterThanOrEqual(4);

    writer.clearCache();
    reader.clearCache();
    expect(plaintexts.filter((p) => !allZero(p))).toEqual([]);

    // Everything is loaded again from the store, to the same keys.
    expect(await writer.encrypt(at("a"), DET, "d")).toEqual(deterministic);
    expect(await writer.encrypt(at("c"), DET, "s")).toEqual(scoped);
    expect(await reader.decrypt(at("a"), RANDOM, randomized)).toBe("r");
    expect(await reader.decrypt(at("a"), DET, deterministic)).toBe("d");
    expect(await reader.blindIndex(at("b", "emailIndex"), {}, "x")).toBe(index);
  });

  test("zeroes the subkeys derived from a stable key", async () => {
    const kms = await createKms({ audit: false });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const clock = new ManualClock();
    const keys = new FieldDataKeys({
      kms,
      store: new MemoryDataKeyStore(),
      keyId: () => keyId,
      clock,
      cache: new DataKeyCache({ maxAgeMs: 60_000, clock }),
    });
    const binding = at("a");
    const ctxKey = contextKey(binding.context);
    const stable = await keys.stableForScope(binding.context, ctxKey);
    const subkeys = keys.useStable(stable, (held) => [
      keys.derive(held, "d", bindingOf(binding, false)),
      keys.derive(held, "b", bindingOf(binding, false)),
    ]) as Uint8Array[];
    expect(subkeys.some(allZero)).toBe(false);
    keys.clear();
    expect(allZero(stable.raw)).toBe(true);
    expect(subkeys.every(allZero)).toBe(true);
    // A key dropped by clear() is never used again.
    expect(keys.useStable(stable, () => "used")).toBeUndefined();
  });

  test("a clearCache() from a getter during a deterministic write does not change the value", async () => {
    const { engine } = await setup();
    const expected = await engine().encrypt(at("a"), DET, "v");
    const index = await engine().blindIndex(at("a", "emailIndex"), {}, "v");
    const victim = engine();
    let armed = false;
    const reentrant = (field: string) =>
      ({
        get model() {
          // Every read once armed: some land while the stable key is in use.
          if (armed) victim.clearCache();
          return "User";
        },
        field,
        context: { tenantId: "a" },
      }) as FieldBinding;
    armed = true;
    expect(await victim.encrypt(reentrant("email"), DET, "v")).toEqual(expected);
    expect(await victim.blindIndex(reentrant("emailIndex"), {}, "v")).toBe(index);
    expect(await victim.decrypt(reentrant("email"), DET, expected)).toBe("v");
    armed = false;
  });

  test("a clearCache() at any point while a value waits for its key does not change the value", async () => {
    const { engine } = await setup();
    const expected = await engine().encrypt(at("a"), DET, "v");
    const index = await engine().blindIndex(at("a", "emailIndex"), {}, "v");
    const text = await engine().encryptText(at("a"), DET, "v");
    // Microtask by microtask through the key's load: one of them lands between the load and
    // the key's use.
    for (let ticks = 0; ticks < 40; ticks++) {
      const victim = engine();
      const pending = Promise.all([
        victim.encrypt(at("a"), DET, "v"),
        victim.blindIndex(at("a", "emailIndex"), {}, "v"),
        victim.decrypt(at("a"), DET, expected),
        victim.decryptMany([{ binding: at("a"), spec: DET, stored: text }]),
      ]);
      for (let i = 0; i < ticks; i++) await Promise.resolve();
      victim.clearCache();
      expect(await pending).toEqual([expected, index, "v", ["v"]]);
    }
  });

  test("a read key whose unwrap began before clearCache() serves its waiting calls, is never cached, and is not joined after the clear", async () => {
    const { engine, gatedEngine } = await setup();
    const stored = await engine().encrypt(at("a"), RANDOM, "v");
    const { engine: reader, calls, hold } = gatedEngine();

    const letFirstGo = hold("decrypt");
    const first = reader.decrypt(at("a"), RANDOM, stored);
    await settle();
    expect(calls.decrypt).toBe(1);
    reader.clearCache();
    letFirstGo();
    // The call that waited for the key still gets its value ...
    expect(await first).toBe("v");
    // ... but the key is not the engine's: the next read unwraps it again.
    expect(reader.decryptIfCached(at("a"), RANDOM, stored)).toBeUndefined();
    expect(await reader.decrypt(at("a"), RANDOM, stored)).toBe("v");
    expect(calls.decrypt).toBe(2);

    // A read that starts after a clear never joins an unwrap that began before it.
    reader.clearCache();
    const letBeforeGo = hold("decrypt");
    const before = reader.decrypt(at("a"), RANDOM, stored);
    await settle();
    reader.clearCache();
    const letAfterGo = hold("decrypt");
    const after = reader.decrypt(at("a"), RANDOM, stored);
    await settle();
    expect(calls.decrypt).toBe(4);
    // The earlier unwrap ending leaves the later one in flight: a third read joins it.
    letBeforeGo();
    expect(await before).toBe("v");
    const joining = reader.decrypt(at("a"), RANDOM, stored);
    await settle();
    expect(calls.decrypt).toBe(4);
    letAfterGo();
    expect(await Promise.all([after, joining])).toEqual(["v", "v"]);
    // The unwrap that began after the clear is the engine's.
    expect(reader.decryptIfCached(at("a"), RANDOM, stored)).toBe("v");
  });

  test("a write key generated across clearCache() serves its waiting call, is never cached, and is not joined after the clear", async () => {
    const { engine, gatedEngine } = await setup();
    const { engine: writer, calls, hold } = gatedEngine();
    const keyIdOf = (value: Uint8Array) => Buffer.from(value.subarray(1, 17)).toString("hex");

    const letBeforeGo = hold("generateDataKey");
    const before = writer.encrypt(at("a"), RANDOM, "before");
    await settle();
    expect(calls.generateDataKey).toBe(1);
    writer.clearCache();
    const letAfterGo = hold("generateDataKey");
    const after = writer.encrypt(at("a"), RANDOM, "after");
    await settle();
    // Its own data key: it did not wait for the one generated before the clear.
    expect(calls.generateDataKey).toBe(2);
    letBeforeGo();
    const early = await before;
    // The earlier key ending leaves the later one in flight: a third write joins it.
    const joining = writer.encrypt(at("a"), RANDOM, "joining");
    await settle();
    expect(calls.generateDataKey).toBe(2);
    letAfterGo();
    const [late, joined] = await Promise.all([after, joining]);
    expect(keyIdOf(joined)).toBe(keyIdOf(late));
    expect(keyIdOf(early)).not.toBe(keyIdOf(late));
    // The key generated before the clear serves neither writing nor reading afterwards.
    expect(keyIdOf(await writer.encrypt(at("a"), RANDOM, "next"))).toBe(keyIdOf(late));
    expect(writer.decryptIfCached(at("a"), RANDOM, early)).toBeUndefined();
    expect(writer.decryptIfCached(at("a"), RANDOM, late)).toBe("after");
    expect(calls.generateDataKey).toBe(2);
    // It was stored all the same: the value written under it reads back.
    expect(await engine().decrypt(at("a"), RANDOM, early)).toBe("before");
  });
});
