import { describe, expect, test } from "vitest";
import { DataKeyCache } from "../caching/data-key-cache.ts";
import { ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import {
  FieldEncryptionEngine,
  type FieldEncryptionEngineOptions,
  type FieldSpec,
} from "./field-encryption-engine.ts";

const STRING: FieldSpec = { type: "string" };
const DET: FieldSpec = { type: "string", mode: "deterministic" };
const tenant = (tenantId: string) => ({ model: "Person", field: "note", context: { tenantId } });

async function setup(options: Partial<FieldEncryptionEngineOptions> = {}) {
  const kms = await createKms();
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const calls = { generateDataKey: 0, decrypt: 0 };
  const counting = {
    ...kms,
    decrypt: (r, o) => {
      calls.decrypt += 1;
      return kms.decrypt(r, o);
    },
    generateDataKey: (r, o) => {
      calls.generateDataKey += 1;
      return kms.generateDataKey(r, o);
    },
  } as KmsLike;
  const store = new MemoryDataKeyStore();
  const engine = new FieldEncryptionEngine({
    kms: counting,
    dataKeyStore: store,
    keyId,
    ...options,
  });
  return { kms: counting, keyId, store, engine, calls };
}

describe("retireDataKeys", () => {
  test("new values get another data key; values under the retired one still decrypt", async () => {
    const { engine, calls } = await setup();
    const old = await engine.encryptText(tenant("a"), STRING, "before");
    const otherTenant = await engine.encryptText(tenant("b"), STRING, "b before");
    const { dataKeyId } = await engine.inspect(old).then((i) => i as { dataKeyId: string });
    // Cached, so the hot path would have used it without a KMS call.
    expect(engine.encryptTextIfCached(tenant("a"), STRING, "x")).toBeDefined();

    engine.retireDataKeys([dataKeyId]);
    // The synchronous path cannot make a key: it misses rather than seal under the retired one.
    expect(engine.encryptTextIfCached(tenant("a"), STRING, "x")).toBeUndefined();
    const generated = calls.generateDataKey;
    const fresh = await engine.encryptText(tenant("a"), STRING, "after");
    expect(calls.generateDataKey).toBe(generated + 1);
    expect(await engine.inspect(fresh)).toMatchObject({ legacy: false });
    expect(((await engine.inspect(fresh)) as { dataKeyId: string }).dataKeyId).not.toBe(dataKeyId);
    // Reads keep working, from the cache (no unwrap).
    const decrypts = calls.decrypt;
    expect(engine.decryptIfCached(tenant("a"), STRING, old)).toBe("before");
    expect(await engine.decryptText(tenant("a"), STRING, old)).toBe("before");
    expect(calls.decrypt).toBe(decrypts);
    // Other contexts keep their data key.
    const b = await engine.encryptText(tenant("b"), STRING, "b after");
    expect(b.slice(0, 27)).toBe(otherTenant.slice(0, 27));
    // The fresh key serves the following writes (no key per value).
    const next = await engine.encryptText(tenant("a"), STRING, "later");
    expect(next.slice(0, 27)).toBe(fresh.slice(0, 27));
  });

  test("keys made inside a transaction scope are retired too, there and after the commit", async () => {
    const { engine } = await setup();
    const scope = { transactionScope: "tx-1" };
    const inTx = await engine.encryptText(tenant("a"), STRING, "x", scope);
    const id = ((await engine.inspect(inTx)) as { dataKeyId: string }).dataKeyId;
    engine.retireDataKeys([id]);
    const again = await engine.encryptText(tenant("a"), STRING, "y", scope);
    expect(((await engine.inspect(again)) as { dataKeyId: string }).dataKeyId).not.toBe(id);
    const committed = ((await engine.inspect(again)) as { dataKeyId: string }).dataKeyId;
    engine.endTransactionScope("tx-1", "commit");
    engine.retireDataKeys([committed]);
    const outside = await engine.encryptText(tenant("a"), STRING, "z");
    const outsideId = ((await engine.inspect(outside)) as { dataKeyId: string }).dataKeyId;
    expect([id, committed]).not.toContain(outsideId);
  });

  test("in a shared cache, another engine's key and ids nobody writes with are passed over", async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const store = new MemoryDataKeyStore();
    const dataKeyCache = new DataKeyCache({ maxAgeMs: 60_000 });
    const mine = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId, dataKeyCache });
    const theirs = new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId, dataKeyCache });
    const theirValue = await theirs.encryptText(tenant("a"), STRING, "theirs");
    const theirId = ((await theirs.inspect(theirValue)) as { dataKeyId: string }).dataKeyId;
    const det = await mine.encryptText(tenant("a"), DET, "d");
    const stableId = ((await mine.inspect(det)) as { dataKeyId: string }).dataKeyId;
    mine.retireDataKeys([theirId, stableId, "0".repeat(32)]);
    // Retiring is per engine: the engine that made the key goes on with it.
    const theirNext = await theirs.encryptText(tenant("a"), STRING, "theirs 2");
    expect(theirNext.slice(0, 27)).toBe(theirValue.slice(0, 27));
    // Stable keys are not retired: equal values still encrypt equally.
    expect(await mine.encryptText(tenant("a"), DET, "d")).toBe(det);
    expect(await mine.decryptText(tenant("a"), DET, det)).toBe("d");
  });

  test.each([
    ["a string (its characters are no ids)", "0".repeat(32)],
    ["an id in upper case", ["A".repeat(32)]],
    ["a short id", ["abc"]],
    ["a number", [42]],
    ["null", null],
    ["undefined", undefined],
  ])("refuses %s, and retires nothing", async (_name, junk) => {
    const { engine } = await setup();
    const value = await engine.encryptText(tenant("a"), STRING, "x");
    const id = ((await engine.inspect(value)) as { dataKeyId: string }).dataKeyId;
    const bad = Array.isArray(junk) ? [id, ...junk] : junk;
    expect(() => engine.retireDataKeys(bad as Iterable<string>)).toThrow(ValidationError);
    expect(engine.encryptTextIfCached(tenant("a"), STRING, "y")?.slice(0, 27)).toBe(
      value.slice(0, 27),
    );
  });
});
