/**
 * What the engine trusts about a stable data-key row (FORMAT §6.4): after a savepoint rollback
 * the row under a key's id must be the very row the key came from; a new generation is made only
 * when the KMS (not a column of the row) says the row's key is another, gone one; clear() forgets
 * dead rows found by a probe in flight.
 */
import { describe, expect, test } from "vitest";
import { InvalidCiphertextError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import { ManualClock } from "../testing/manual-clock.ts";
import { type DataKeyRecord, type DataKeyStore, MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

const DET: FieldSpec = { type: "string", mode: "deterministic" };
const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const idOf = (sealed: Uint8Array) => hex(sealed.subarray(1, 17));

/** A table whose rows a test rewrites, and whose insert can be held once it stored its row. */
class TableStore implements DataKeyStore {
  readonly rows = new Map<string, DataKeyRecord>();
  gate: Promise<void> | undefined;
  reached: (() => void) | undefined;
  async insert(record: DataKeyRecord): Promise<DataKeyRecord> {
    if (!this.rows.has(record.id)) this.rows.set(record.id, record);
    const kept = this.rows.get(record.id) as DataKeyRecord;
    const gate = this.gate;
    if (gate !== undefined) {
      this.gate = undefined;
      this.reached?.();
      await gate;
    }
    return kept;
  }
  async get(id: string): Promise<DataKeyRecord | undefined> {
    return this.rows.get(id);
  }
}

describe("a stable key made inside a savepoint that is rolled back", () => {
  test("is dropped when another writer re-created its row with another key", async () => {
    const kms = await createKms({ audit: false });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const store = new TableStore();
    const make = () => new FieldEncryptionEngine({ kms, keyId, dataKeyStore: store });
    const app = make();
    const other = make();
    const at = { model: "Patient", field: "ssn", context: { clinic: "x" } };
    let release: () => void = () => {};
    store.gate = new Promise<void>((resolve) => (release = resolve));
    const reached = new Promise<void>((resolve) => (store.reached = resolve));
    app.beginTransactionSavepoint("tx1");
    const pending = app.encrypt(at, DET, "123-45-6789", { transactionScope: "tx1" });
    await reached;
    const id = [...store.rows.keys()][0] as string;
    app.endTransactionSavepoint("tx1", "rollback");
    store.rows.delete(id);
    const theirs = await other.encrypt(at, DET, "123-45-6789");
    release();
    const mine = await pending;
    app.endTransactionScope("tx1", "commit");
    expect(idOf(mine)).toBe(id);
    // The rolled-back key sealed nothing: the value is the live row's, which anyone can read.
    expect(hex(mine)).toBe(hex(theirs));
    expect(await make().decrypt(at, DET, mine)).toBe("123-45-6789");
    const index = { ...at, field: "ssnIndex" };
    expect(await app.blindIndex(index, {}, "v")).toBe(await other.blindIndex(index, {}, "v"));
  });
});

describe("a data-key-table writer cannot force a new generation by rewriting kmsKeyId", () => {
  test("a broken row under the key still selected stays refused, whatever its kmsKeyId says", async () => {
    const kms = await createKms({ audit: false });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const store = new TableStore();
    const make = () => new FieldEncryptionEngine({ kms, keyId, dataKeyStore: store });
    const at = { model: "User", field: "email", context: { tenant: "t1" } };
    const sealed = await make().encrypt(at, DET, "a@x.io");
    const original = store.rows.get(idOf(sealed)) as DataKeyRecord;
    const flipped = original.wrappedKey.slice();
    flipped[flipped.length - 1] = (flipped[flipped.length - 1] as number) ^ 1;
    store.rows.set(original.id, {
      ...original,
      wrappedKey: flipped,
      kmsKeyId: "arn:aws:kms:us-east-1:000000000000:key/00000000-0000-0000-0000-000000000000",
    });
    await expect(make().encrypt(at, DET, "a@x.io")).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(make().blindIndex({ ...at, field: "i" }, {}, "a")).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    expect(store.rows.size).toBe(1);
    // Repaired, the row serves again: nothing forked meanwhile.
    store.rows.set(original.id, original);
    expect(hex(await make().encrypt(at, DET, "a@x.io"))).toBe(hex(sealed));
  });
});

describe("clear() during a generation probe", () => {
  test("forgets the dead rows the probe found before it", async () => {
    const ALIAS = "alias/clinic-x";
    const clock = new ManualClock();
    const kms = await createKms({ audit: false, clock });
    const first = (await kms.createKey()).keyMetadata.keyId;
    await kms.createAlias({ aliasName: ALIAS, targetKeyId: first });
    const store = new MemoryDataKeyStore();
    const at = { model: "Patient", field: "ssn", context: { clinic: "x" } };
    const old = await new FieldEncryptionEngine({
      kms,
      keyId: ALIAS,
      dataKeyStore: store,
      clock,
    }).encrypt(at, DET, "v");
    const gen0 = (await store.get(idOf(old))) as DataKeyRecord;
    await kms.scheduleKeyDeletion({ keyId: first, pendingWindowInDays: 7 });
    clock.advanceDays(8);
    const next = (await kms.createKey()).keyMetadata.keyId;
    await kms
      .createAlias({ aliasName: ALIAS, targetKeyId: next })
      .catch(() => kms.updateAlias({ aliasName: ALIAS, targetKeyId: next }));
    let gen0Decrypts = 0;
    let gate: Promise<void> | undefined;
    let reached: () => void = () => {};
    const wrapped: KmsLike = {
      encrypt: (r, o) => kms.encrypt(r, o),
      decrypt: (r, o) => {
        // Unwraps only (the confirmation under the alias names a keyId).
        if (r.keyId === undefined && hex(r.ciphertextBlob) === hex(gen0.wrappedKey)) {
          gen0Decrypts += 1;
        }
        return kms.decrypt(r, o);
      },
      generateDataKey: async (r, o) => {
        const held = gate;
        gate = undefined;
        if (held !== undefined) {
          reached();
          await held;
        }
        return kms.generateDataKey(r, o);
      },
      generateDataKeyWithoutPlaintext: (r, o) => kms.generateDataKeyWithoutPlaintext(r, o),
      sign: (r, o) => kms.sign(r, o),
      verify: (r, o) => kms.verify(r, o),
      generateMac: (r, o) => kms.generateMac(r, o),
      verifyMac: (r, o) => kms.verifyMac(r, o),
      getPublicKey: (r, o) => kms.getPublicKey(r, o),
    };
    const engine = new FieldEncryptionEngine({
      kms: wrapped,
      keyId: ALIAS,
      dataKeyStore: store,
      clock,
    });
    let release: () => void = () => {};
    gate = new Promise<void>((resolve) => (release = resolve));
    const atGenerate = new Promise<void>((resolve) => (reached = resolve));
    const write = engine.encrypt(at, DET, "v");
    await atGenerate;
    engine.clearCache();
    const beforeClear = gen0Decrypts;
    expect(beforeClear).toBe(1);
    release();
    // The key loaded across the clear is dropped and found again: generation 0, forgotten by
    // the clear, is unwrapped again (remembered, it would be passed over without a KMS call).
    expect(await engine.decrypt(at, DET, await write)).toBe("v");
    expect(gen0Decrypts).toBeGreaterThan(beforeClear);
  });
});
