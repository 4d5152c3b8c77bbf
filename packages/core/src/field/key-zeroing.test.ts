import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { DataKeyCache } from "../caching/data-key-cache.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import { bindingOf, contextKey, type FieldBinding } from "./binding.ts";
import { type DataKeyStore, MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldDataKeys } from "./field-data-keys.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * Every plaintext data key and derived subkey the field engine lets go of is zeroed: when a
 * bounded set evicts it, a rollback or a newer copy replaces it, or a failure leaves it unused —
 * and never while a value operation still needs it.
 */

const DET: FieldSpec = { type: "string", mode: "deterministic" };
const RANDOM: FieldSpec = { type: "string" };
/** The stable keys an engine keeps (MAX_STABLE_KEYS in field-data-keys.ts). */
const KEPT = 4096;

const allZero = (bytes: Uint8Array) => bytes.every((b) => b === 0);
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

interface Stub {
  readonly kms: KmsLike;
  /** Every plaintext key handed out by GenerateDataKey, in order. */
  readonly generated: Uint8Array[];
  /** Every plaintext key handed out by Decrypt, in order. */
  readonly unwrapped: Uint8Array[];
  readonly calls: { generateDataKey: number; decrypt: number };
  /** Runs before each Decrypt answers (to hold it back or make it fail). */
  beforeDecrypt: (() => Promise<void>) | undefined;
}

/**
 * A KMS stand-in that wraps nothing, fast enough for thousands of data keys. It keeps every
 * plaintext it hands out, as the buffers the engine then owns: what the engine zeroes shows.
 */
function stubKms(): Stub {
  const wrapped = new Map<string, Uint8Array>();
  const unused = () => Promise.reject(new Error("not used by the field engine"));
  const stub: Stub = {
    generated: [],
    unwrapped: [],
    calls: { generateDataKey: 0, decrypt: 0 },
    beforeDecrypt: undefined,
    kms: {
      generateDataKey: async () => {
        stub.calls.generateDataKey += 1;
        const plaintext = new Uint8Array(randomBytes(32));
        const ciphertextBlob = new Uint8Array(randomBytes(16));
        wrapped.set(hex(ciphertextBlob), plaintext.slice());
        stub.generated.push(plaintext);
        return { keyId: "arn:stub", plaintext, ciphertextBlob };
      },
      decrypt: async (request) => {
        stub.calls.decrypt += 1;
        await stub.beforeDecrypt?.();
        const known = wrapped.get(hex(request.ciphertextBlob));
        if (known === undefined) throw new Error("unknown ciphertext");
        const plaintext = known.slice();
        stub.unwrapped.push(plaintext);
        return { keyId: "arn:stub", plaintext, encryptionAlgorithm: "SYMMETRIC_DEFAULT" };
      },
      encrypt: unused,
      generateDataKeyWithoutPlaintext: unused,
      sign: unused,
      verify: unused,
      generateMac: unused,
      verifyMac: unused,
      getPublicKey: unused,
    },
  };
  return stub;
}

const live = (keys: readonly Uint8Array[]) => keys.filter((k) => !allZero(k)).length;

const at = (tenantId: string | number, field = "email"): FieldBinding => ({
  model: "User",
  field,
  context: { tenantId: String(tenantId) },
});

/** A promise and its settling functions. */
function deferred(): {
  promise: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
} {
  let resolve = () => {};
  let reject: (error: Error) => void = () => {};
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets pending promise callbacks (a store's, the stub's) run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("stable keys let go of are zeroed", () => {
  test("a stable key the bounded key set evicts is zeroed, and loaded again when needed", async () => {
    const stub = stubKms();
    const engine = new FieldEncryptionEngine({
      kms: stub.kms,
      dataKeyStore: new MemoryDataKeyStore(),
      keyId: "k",
    });
    const first = await engine.blindIndex(at(0), {}, "x");
    const firstKey = stub.generated[0] as Uint8Array;
    expect(allZero(firstKey)).toBe(false);
    for (let n = 1; n <= KEPT; n++) await engine.blindIndex(at(n), {}, "x");
    expect(allZero(firstKey)).toBe(true);
    expect(live(stub.generated)).toBe(KEPT);
    // Unwrapped from its row again, to the same key.
    expect(await engine.blindIndex(at(0), {}, "x")).toBe(first);
    expect(stub.calls.decrypt).toBe(1);
  }, 30_000);

  test("a batch over more stable keys than the engine keeps does not thrash, and zeroes the evicted after it", async () => {
    const stub = stubKms();
    const store = new MemoryDataKeyStore();
    const writer = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: store, keyId: "k" });
    const count = KEPT + 4;
    const items = [];
    for (let n = 0; n < count; n++) {
      items.push({
        binding: at(n),
        spec: DET,
        stored: await writer.encryptText(at(n), DET, `v${n}`),
      });
    }
    const reader = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: store, keyId: "k" });
    const values = await reader.decryptMany(items);
    expect(values).toEqual(items.map((_, n) => `v${n}`));
    // Keys evicted while the batch held them served it, and were zeroed after it. Only those
    // evicted by the batch's own loads before it could hold them are unwrapped twice.
    expect(stub.calls.decrypt).toBeLessThanOrEqual(count + (count - KEPT));
    expect(live(stub.unwrapped)).toBe(KEPT);
  }, 30_000);

  test("value operations in flight across evictions all succeed, and only kept keys stay live", async () => {
    const stub = stubKms();
    const store = new MemoryDataKeyStore();
    const writer = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: store, keyId: "k" });
    const count = KEPT + 64;
    const expected: [Uint8Array, string][] = [];
    for (let n = 0; n < count; n++) {
      expected.push([
        await writer.encrypt(at(n), DET, "v"),
        await writer.blindIndex(at(n, "emailIndex"), {}, "v"),
      ]);
    }
    const engine = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: store, keyId: "k" });
    const all = await Promise.all(
      expected.map(async ([sealed, index], n) => [
        await engine.decrypt(at(n), DET, sealed),
        await engine.encrypt(at(n), DET, "v"),
        await engine.blindIndex(at(n, "emailIndex"), {}, "v"),
        index,
      ]),
    );
    for (const [n, [opened, sealed, index, expectedIndex]] of all.entries()) {
      expect(opened).toBe("v");
      expect(sealed).toEqual(expected[n]?.[0]);
      expect(index).toBe(expectedIndex);
    }
    expect(live(stub.unwrapped)).toBeLessThanOrEqual(KEPT);
  }, 60_000);

  test("a rolled-back transaction's stable key is zeroed, whether it made the key or loaded it", async () => {
    const stub = stubKms();
    const store = new MemoryDataKeyStore();
    const engine = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: store, keyId: "k" });
    await engine.encrypt(at("a"), DET, "x", { transactionScope: "tx-1" });
    const made = stub.generated[0] as Uint8Array;
    expect(allZero(made)).toBe(false);
    engine.endTransactionScope("tx-1", "rollback");
    await settle();
    expect(allZero(made)).toBe(true);

    // A key whose row exists, loaded inside the transaction.
    const writer = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: store, keyId: "k" });
    const sealed = await writer.encrypt(at("b"), DET, "y");
    expect(await engine.decrypt(at("b"), DET, sealed)).toBe("y");
    await engine.encrypt(at("b"), DET, "y", { transactionScope: "tx-2" });
    expect(live(stub.unwrapped)).toBe(2);
    engine.endTransactionScope("tx-2", "rollback");
    await settle();
    expect(live(stub.unwrapped)).toBe(0);
    // Loaded again from the row, to the same key.
    expect(await engine.encrypt(at("b"), DET, "y")).toEqual(sealed);
  });

  test("a committed transaction's stable key that the engine already holds is zeroed as a duplicate", async () => {
    const stub = stubKms();
    const engine = new FieldEncryptionEngine({
      kms: stub.kms,
      dataKeyStore: new MemoryDataKeyStore(),
      keyId: "k",
    });
    const sealed = await engine.encrypt(at("a"), DET, "x", { transactionScope: "tx" });
    // Read outside the transaction meanwhile: the engine unwraps its own copy of the key.
    expect(await engine.decrypt(at("a"), DET, sealed)).toBe("x");
    expect(live(stub.generated) + live(stub.unwrapped)).toBe(2);
    engine.endTransactionScope("tx", "commit");
    await settle();
    expect(live(stub.generated) + live(stub.unwrapped)).toBe(1);
    expect(await engine.encrypt(at("a"), DET, "x")).toEqual(sealed);
    expect(stub.calls).toEqual({ generateDataKey: 1, decrypt: 1 });
  });

  test("a failed load does not unseat the newer load of the same key", async () => {
    const stub = stubKms();
    const store = new MemoryDataKeyStore();
    const writer = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: store, keyId: "k" });
    const sealed = await writer.encrypt(at("a"), DET, "x");
    const reader = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: store, keyId: "k" });

    const answers = [deferred(), deferred()];
    const entered = [deferred(), deferred()];
    stub.beforeDecrypt = () => {
      const call = stub.calls.decrypt - 1;
      entered[call]?.resolve();
      return answers[call]?.promise ?? Promise.resolve();
    };
    const failing = reader.decrypt(at("a"), DET, sealed);
    failing.catch(() => {});
    await entered[0]?.promise;
    reader.clearCache();
    const loading = reader.decrypt(at("a"), DET, sealed);
    await entered[1]?.promise;
    // The old load fails while the new one is still in flight.
    answers[0]?.reject(new Error("KMS unavailable"));
    await expect(failing).rejects.toThrow("KMS unavailable");
    answers[1]?.resolve();
    expect(await loading).toBe("x");
    stub.beforeDecrypt = undefined;

    // The key the second load brought is the engine's: no third unwrap, one live copy.
    expect(await reader.encrypt(at("a"), DET, "x")).toEqual(sealed);
    expect(stub.calls.decrypt).toBe(2);
    expect(live(stub.unwrapped)).toBe(1);
  });

  test("a failed find-or-create does not unseat the newer one of the same context", async () => {
    const stub = stubKms();
    const store = new MemoryDataKeyStore();
    const held = [deferred(), deferred()];
    let gets = 0;
    const holding: DataKeyStore = {
      insert: (r) => store.insert(r),
      get: async (id) => {
        gets += 1;
        await held[gets - 1]?.promise;
        return store.get(id);
      },
    };
    const engine = new FieldEncryptionEngine({ kms: stub.kms, dataKeyStore: holding, keyId: "k" });
    const failing = engine.blindIndex(at("a"), {}, "x");
    failing.catch(() => {});
    engine.clearCache();
    const first = engine.blindIndex(at("a"), {}, "x");
    held[0]?.reject(new Error("database unavailable"));
    await expect(failing).rejects.toThrow("database unavailable");
    // Joins the find-or-create in flight instead of starting another.
    const second = engine.blindIndex(at("a"), {}, "x");
    held[1]?.resolve();
    const index = await first;
    expect(await second).toBe(index);
    expect(gets).toBe(2);
    expect(await engine.blindIndex(at("a"), {}, "x")).toBe(index);
    expect(gets).toBe(2);
  });
});

describe("a failed data-key insert zeroes the freshly generated key", () => {
  const failingStore = (): DataKeyStore => ({
    insert: async () => {
      throw new Error("unique constraint failed");
    },
    get: async () => undefined,
  });

  test.each([
    ["randomized", undefined],
    ["randomized in a transaction", "tx"],
  ] as const)("%s write", async (_, transactionScope) => {
    const stub = stubKms();
    const engine = new FieldEncryptionEngine({
      kms: stub.kms,
      dataKeyStore: failingStore(),
      keyId: "k",
    });
    const options = transactionScope === undefined ? undefined : { transactionScope };
    await expect(engine.encrypt(at("a"), RANDOM, "x", options)).rejects.toThrow("unique");
    expect(stub.calls.generateDataKey).toBe(1);
    expect(live(stub.generated)).toBe(0);
  });

  test.each([
    ["deterministic", undefined],
    ["deterministic in a transaction", "tx"],
  ] as const)("%s write and blind index", async (_, transactionScope) => {
    const stub = stubKms();
    const engine = new FieldEncryptionEngine({
      kms: stub.kms,
      dataKeyStore: failingStore(),
      keyId: "k",
    });
    const options = transactionScope === undefined ? undefined : { transactionScope };
    await expect(engine.encrypt(at("a"), DET, "x", options)).rejects.toThrow("unique");
    await expect(engine.blindIndex(at("b"), {}, "x", options)).rejects.toThrow("unique");
    expect(stub.calls.generateDataKey).toBe(2);
    expect(live(stub.generated)).toBe(0);
  });
});

describe("derived subkeys", () => {
  async function keysWithStable() {
    const stub = stubKms();
    const clock = new ManualClock();
    const keys = new FieldDataKeys({
      kms: stub.kms,
      store: new MemoryDataKeyStore(),
      keyId: () => "k",
      clock,
      cache: new DataKeyCache({ maxAgeMs: 60_000, clock }),
    });
    const binding = at("a");
    const stable = await keys.stableForScope(binding.context, contextKey(binding.context));
    // Subkeys per (purpose, model, field, context): rows of one key context may number many.
    const subkey = (n: number) => {
      const row: FieldBinding = { ...binding, context: { ...binding.context, row: String(n) } };
      return keys.derive(stable, "b", bindingOf(row, false));
    };
    return { keys, stable, subkey };
  }

  test("subkeys the bounded subkey set lets go of are zeroed", async () => {
    const { keys, stable, subkey } = await keysWithStable();
    const first = keys.useStable(stable, () => subkey(0)) as Uint8Array;
    for (let n = 1; n < KEPT; n++) keys.useStable(stable, () => subkey(n));
    expect(allZero(first)).toBe(false);
    keys.useStable(stable, () => subkey(KEPT));
    expect(allZero(first)).toBe(true);
  }, 30_000);

  test("a subkey in use up the stack is zeroed only when that use returns", async () => {
    const { keys, stable, subkey } = await keysWithStable();
    let first: Uint8Array | undefined;
    keys.useStable(stable, () => {
      first = subkey(0);
      const copy = first.slice();
      // A getter or key selector re-enters: enough subkeys to make the set let go of all.
      for (let n = 1; n <= KEPT; n++) keys.useStable(stable, () => subkey(n));
      expect(first).toEqual(copy);
    });
    expect(allZero(first as Uint8Array)).toBe(true);
  }, 30_000);
});
