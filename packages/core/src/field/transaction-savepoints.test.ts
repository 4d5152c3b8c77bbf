import { randomBytes } from "node:crypto";
import { describe, expect, test } from "vitest";
import { InvalidCiphertextError } from "../errors.ts";
import type { KmsLike } from "../kms-like.ts";
import type { FieldBinding } from "./binding.ts";
import type { DataKeyRecord, DataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type FieldSpec } from "./field-encryption-engine.ts";

/**
 * Savepoints (nested transactions) inside a transaction scope: a data key whose row a rollback
 * to a savepoint removed is never used again, so no committed value points at a missing key;
 * keys made before the savepoint, or released with it, go on serving the transaction.
 */

const DET: FieldSpec = { type: "string", mode: "deterministic" };
const RANDOM: FieldSpec = { type: "string" };
const TX = "tx";
const scoped = { transactionScope: TX };

const at = (tenantId: string, field = "secret"): FieldBinding => ({
  model: "Row",
  field,
  context: { tenantId },
});

const allZero = (bytes: Uint8Array) => bytes.every((b) => b === 0);
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const keyOf = (sealed: Uint8Array) => hex(sealed.subarray(1, 17));

/**
 * A data key table inside one database transaction with savepoints, as on SQLite's single
 * connection: a rollback to a savepoint deletes the rows inserted since it.
 */
class SavepointStore implements DataKeyStore {
  readonly #rows = new Map<string, { record: DataKeyRecord; level: number }>();
  #level = 0;
  /** Runs before an insert answers, after the row is in (to hold it back). */
  afterInsert: (() => Promise<void>) | undefined;

  async insert(record: DataKeyRecord): Promise<DataKeyRecord> {
    const existing = this.#rows.get(record.id);
    if (existing !== undefined) return existing.record;
    this.#rows.set(record.id, { record, level: this.#level });
    await this.afterInsert?.();
    return record;
  }

  async get(id: string): Promise<DataKeyRecord | undefined> {
    return this.#rows.get(id)?.record;
  }

  savepoint(): void {
    this.#level += 1;
  }

  release(): void {
    for (const row of this.#rows.values()) if (row.level === this.#level) row.level -= 1;
    this.#level -= 1;
  }

  /** The whole table is the transaction's. */
  rollbackTransaction(): void {
    this.#rows.clear();
    this.#level = 0;
  }

  rollbackToSavepoint(): void {
    for (const [id, row] of this.#rows) if (row.level >= this.#level) this.#rows.delete(id);
    this.#level -= 1;
  }
}

/** A KMS stand-in that counts its calls and keeps every plaintext key it hands out. */
function stubKms() {
  const wrapped = new Map<string, Uint8Array>();
  const unused = () => Promise.reject(new Error("not used by the field engine"));
  const stub = {
    generated: [] as Uint8Array[],
    calls: { generateDataKey: 0, decrypt: 0 },
    kms: {
      generateDataKey: async () => {
        stub.calls.generateDataKey += 1;
        const plaintext = new Uint8Array(randomBytes(32));
        const ciphertextBlob = new Uint8Array(randomBytes(16));
        wrapped.set(hex(ciphertextBlob), plaintext.slice());
        stub.generated.push(plaintext);
        return { keyId: "arn:stub", plaintext, ciphertextBlob };
      },
      decrypt: async (request: { ciphertextBlob: Uint8Array }) => {
        stub.calls.decrypt += 1;
        const known = wrapped.get(hex(request.ciphertextBlob));
        if (known === undefined) throw new Error("unknown ciphertext");
        return {
          keyId: "arn:stub",
          plaintext: known.slice(),
          encryptionAlgorithm: "SYMMETRIC_DEFAULT",
        };
      },
      encrypt: unused,
      generateDataKeyWithoutPlaintext: unused,
      sign: unused,
      verify: unused,
      generateMac: unused,
      verifyMac: unused,
      getPublicKey: unused,
    } as unknown as KmsLike,
  };
  return stub;
}

function setup() {
  const stub = stubKms();
  const store = new SavepointStore();
  const engine = new FieldEncryptionEngine({ kms: stub.kms, keyId: "k", dataKeyStore: store });
  const savepoint = () => {
    store.savepoint();
    engine.beginTransactionSavepoint(TX);
  };
  const release = () => {
    store.release();
    engine.endTransactionSavepoint(TX, "release");
  };
  const rollback = () => {
    store.rollbackToSavepoint();
    engine.endTransactionSavepoint(TX, "rollback");
  };
  /** A fresh process: another engine on the same table and KMS. */
  const fresh = () => new FieldEncryptionEngine({ kms: stub.kms, keyId: "k", dataKeyStore: store });
  return { stub, store, engine, savepoint, release, rollback, fresh };
}

describe("a rollback to a savepoint", () => {
  // Found in review (TypeORM on SQLite): a data key made inside a nested transaction that rolled
  // back stayed cached in the transaction's scope; the outer transaction sealed with it and
  // committed, and a fresh process could not read the value.
  test("drops the randomized keys made since it: later values land under keys that exist", async () => {
    const { stub, engine, savepoint, rollback, fresh } = setup();
    savepoint();
    const lost = await engine.encrypt(at("t2"), RANDOM, "inner", scoped);
    rollback();
    const kept = await engine.encrypt(at("t2"), RANDOM, "outer", scoped);
    expect(keyOf(kept)).not.toBe(keyOf(lost));
    expect(stub.calls.generateDataKey).toBe(2);
    engine.endTransactionScope(TX, "commit");
    expect(await fresh().decrypt(at("t2"), RANDOM, kept)).toBe("outer");
    // Outside the transaction too.
    const later = await engine.encrypt(at("t2"), RANDOM, "later");
    expect(await fresh().decrypt(at("t2"), RANDOM, later)).toBe("later");
  });

  test("drops and zeroes the stable keys made since it: deterministic values and blind indexes use a new one", async () => {
    const { stub, engine, savepoint, rollback, fresh } = setup();
    savepoint();
    const lost = await engine.encrypt(at("t2"), DET, "inner", scoped);
    await engine.blindIndex(at("t2", "secretIndex"), {}, "inner", scoped);
    const made = stub.generated[0] as Uint8Array;
    rollback();
    expect(allZero(made)).toBe(true);
    const kept = await engine.encrypt(at("t2"), DET, "outer", scoped);
    const index = await engine.blindIndex(at("t2", "secretIndex"), {}, "outer", scoped);
    expect(stub.calls.generateDataKey).toBe(2);
    // The id is derived from (KMS key, context): the same id, a new key under it.
    expect(keyOf(kept)).toBe(keyOf(lost));
    engine.endTransactionScope(TX, "commit");
    const reader = fresh();
    expect(await reader.decrypt(at("t2"), DET, kept)).toBe("outer");
    expect(await reader.blindIndex(at("t2", "secretIndex"), {}, "outer")).toBe(index);
    await expect(reader.decrypt(at("t2"), DET, lost)).rejects.toBeInstanceOf(
      InvalidCiphertextError,
    );
    // Read outside the transaction before it ended, the key is not kept either.
    expect(await engine.decrypt(at("t2"), DET, kept)).toBe("outer");
  });

  test("keeps the keys made before it", async () => {
    const { stub, engine, savepoint, rollback, fresh } = setup();
    const before = await engine.encrypt(at("t1"), RANDOM, "before", scoped);
    const det = await engine.encrypt(at("t1"), DET, "before", scoped);
    savepoint();
    const inside = await engine.encrypt(at("t1"), RANDOM, "inside", scoped);
    expect(keyOf(inside)).toBe(keyOf(before));
    rollback();
    const after = await engine.encrypt(at("t1"), RANDOM, "after", scoped);
    expect(keyOf(after)).toBe(keyOf(before));
    expect(await engine.encrypt(at("t1"), DET, "before", scoped)).toEqual(det);
    expect(stub.calls).toEqual({ generateDataKey: 2, decrypt: 0 });
    engine.endTransactionScope(TX, "commit");
    expect(await fresh().decrypt(at("t1"), RANDOM, after)).toBe("after");
  });

  test("of an outer savepoint drops what an inner one released into it", async () => {
    const { stub, engine, savepoint, release, rollback, fresh } = setup();
    savepoint();
    savepoint();
    await engine.encrypt(at("t3"), RANDOM, "inner", scoped);
    await engine.encrypt(at("t3"), DET, "inner", scoped);
    release();
    rollback();
    const after = await engine.encrypt(at("t3"), RANDOM, "after", scoped);
    const det = await engine.encrypt(at("t3"), DET, "after", scoped);
    expect(stub.calls.generateDataKey).toBe(4);
    engine.endTransactionScope(TX, "commit");
    const reader = fresh();
    expect(await reader.decrypt(at("t3"), RANDOM, after)).toBe("after");
    expect(await reader.decrypt(at("t3"), DET, det)).toBe("after");
  });

  test("without a savepoint begun drops every key of the scope", async () => {
    const { stub, store, engine, fresh } = setup();
    store.savepoint();
    await engine.encrypt(at("t4"), RANDOM, "inner", scoped);
    await engine.encrypt(at("t4"), DET, "inner", scoped);
    store.rollbackToSavepoint();
    engine.endTransactionSavepoint(TX, "rollback");
    const after = await engine.encrypt(at("t4"), RANDOM, "after", scoped);
    const det = await engine.encrypt(at("t4"), DET, "after", scoped);
    expect(stub.calls.generateDataKey).toBe(4);
    engine.endTransactionScope(TX, "commit");
    expect(await fresh().decrypt(at("t4"), RANDOM, after)).toBe("after");
    expect(await fresh().decrypt(at("t4"), DET, det)).toBe("after");
  });

  test("while a key is being made inside it: the key is made again once its row is gone", async () => {
    const { stub, store, engine, savepoint, rollback, fresh } = setup();
    for (const spec of [RANDOM, DET]) {
      let reached: () => void = () => {};
      const inserted = new Promise<void>((resolve) => {
        reached = resolve;
      });
      let open: () => void = () => {};
      store.afterInsert = () => {
        store.afterInsert = undefined;
        reached();
        return new Promise<void>((resolve) => {
          open = resolve;
        });
      };
      savepoint();
      const sealing = engine.encrypt(at(`t5-${spec.mode}`), spec, "v", scoped);
      await inserted;
      // The row is in, inside the savepoint; the savepoint rolls back before the key is cached.
      rollback();
      open();
      const sealed = await sealing;
      engine.endTransactionScope(TX, "commit");
      expect(await fresh().decrypt(at(`t5-${spec.mode}`), spec, sealed)).toBe("v");
    }
    expect(stub.calls.generateDataKey).toBe(4);
  });
});

describe("a released savepoint", () => {
  test("keeps its keys for the rest of the transaction, and for everyone once it commits", async () => {
    const { stub, engine, savepoint, release, fresh } = setup();
    savepoint();
    const inside = await engine.encrypt(at("t6"), RANDOM, "inside", scoped);
    const det = await engine.encrypt(at("t6"), DET, "v", scoped);
    release();
    const after = await engine.encrypt(at("t6"), RANDOM, "after", scoped);
    expect(keyOf(after)).toBe(keyOf(inside));
    engine.endTransactionScope(TX, "commit");
    const outside = await engine.encrypt(at("t6"), RANDOM, "outside");
    expect(keyOf(outside)).toBe(keyOf(inside));
    expect(await engine.encrypt(at("t6"), DET, "v")).toEqual(det);
    expect(stub.calls.generateDataKey).toBe(2);
    expect(await fresh().decrypt(at("t6"), RANDOM, outside)).toBe("outside");
  });

  test("then a rollback of the whole transaction drops its keys", async () => {
    const { stub, store, engine, savepoint, release } = setup();
    savepoint();
    const inside = await engine.encrypt(at("t7"), RANDOM, "inside", scoped);
    await engine.encrypt(at("t7"), DET, "v", scoped);
    release();
    store.rollbackTransaction();
    engine.endTransactionScope(TX, "rollback");
    const outside = await engine.encrypt(at("t7"), RANDOM, "outside");
    expect(keyOf(outside)).not.toBe(keyOf(inside));
    await engine.encrypt(at("t7"), DET, "v");
    expect(stub.calls.generateDataKey).toBe(4);
  });
});
