import { describe, expect, test } from "vitest";
import { InvalidCiphertextError, ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { KmsLike } from "../kms-like.ts";
import type { EncryptionContext } from "../types.ts";
import { type DataKeyRecord, MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine, type StoredValueInfo } from "./field-encryption-engine.ts";
import {
  type ReencryptCheckpoint,
  type ReencryptRow,
  type ReencryptSource,
  reencryptFields,
  type StoredFieldValue,
} from "./reencrypt-job.ts";
import type { FieldValue } from "./value-codec.ts";

interface Row {
  id: number;
  tenantId: string;
  secret: StoredFieldValue;
  age: StoredFieldValue;
}

/** An in-memory table with the paging and compare-and-set a database adapter provides. */
function tableSource(
  rows: Row[],
  hooks: { beforeWrite?: (row: Row) => void; bindRow?: boolean } = {},
): ReencryptSource {
  return {
    async fetchBatch(cursor, limit) {
      return rows
        .filter((r) => cursor === undefined || r.id > Number(cursor))
        .slice(0, limit)
        .map((r) => ({
          cursor: r.id,
          // With bindRow the row's id is bound into each value but not into its data key.
          ...(hooks.bindRow === true
            ? {
                context: { tenantId: r.tenantId, rowId: String(r.id) } as EncryptionContext,
                keyContext: { tenantId: r.tenantId } as EncryptionContext,
              }
            : { context: { tenantId: r.tenantId } as EncryptionContext }),
          values: { secret: r.secret, age: r.age },
        }));
    },
    async compareAndSet(row: ReencryptRow, next) {
      const stored = rows.find((r) => r.id === row.cursor) as Row;
      hooks.beforeWrite?.(stored);
      if (stored.secret !== row.values.secret || stored.age !== row.values.age) return false;
      stored.secret = next.secret ?? null;
      stored.age = next.age ?? null;
      return true;
    },
  };
}

const fields = {
  secret: { type: "string", storage: "text" },
  age: { type: "number", storage: "text", mode: "deterministic" },
} as const;

async function setup() {
  const kms = await createKms();
  const oldKey = (await kms.createKey()).keyMetadata.keyId;
  const newKey = (await kms.createKey()).keyMetadata.keyId;
  const store = new MemoryDataKeyStore();
  const engine = (keyId: string, legacyPlaintext = false, previousKeyIds: string[] = []) =>
    new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId, legacyPlaintext, previousKeyIds });
  return { oldKey, newKey, engine };
}

describe("reencryptFields", () => {
  test("migrates legacy plaintext, resumably, and leaves current values alone", async () => {
    const { oldKey, engine } = await setup();
    const legacy = engine(oldKey, true);
    const rows: Row[] = Array.from({ length: 7 }, (_, i) => ({
      id: i + 1,
      tenantId: i % 2 === 0 ? "a" : "b",
      secret: `secret ${i}`,
      age: String(20 + i),
    }));
    rows[6] = { ...rows[6], secret: null } as Row;
    const progress: ReencryptCheckpoint[] = [];
    const abort = new AbortController();
    const first = reencryptFields({
      engine: legacy,
      source: tableSource(rows),
      model: "Person",
      fields,
      batchSize: 3,
      signal: abort.signal,
      onProgress: (c) => {
        progress.push(c);
        abort.abort();
      },
    });
    await expect(first).rejects.toThrow();
    expect(progress).toEqual([{ cursor: 3, scanned: 3, reencrypted: 3, conflicts: 0 }]);
    const done = await reencryptFields({
      engine: legacy,
      source: tableSource(rows),
      model: "Person",
      fields,
      batchSize: 3,
      resumeFrom: progress[0] as ReencryptCheckpoint,
    });
    expect(done).toEqual({ cursor: 7, scanned: 7, reencrypted: 7, conflicts: 0 });
    const strict = engine(oldKey);
    for (const [i, row] of rows.entries()) {
      const binding = (field: string) => ({
        model: "Person",
        field,
        context: { tenantId: row.tenantId },
      });
      if (row.secret !== null) {
        expect(
          await strict.decryptText(binding("secret"), fields.secret, row.secret as string),
        ).toBe(`secret ${i}`);
      }
      expect(await strict.decryptText(binding("age"), fields.age, row.age as string)).toBe(20 + i);
    }
    const again = await reencryptFields({
      engine: legacy,
      source: tableSource(rows),
      model: "Person",
      fields,
    });
    expect(again.reencrypted).toBe(0);
  });

  test("rows bound by keyContext: one data key per tenant, values bound to their row, idempotent", async () => {
    const { oldKey, engine } = await setup();
    const legacy = engine(oldKey, true);
    const rows: Row[] = Array.from({ length: 6 }, (_, i) => ({
      id: i + 1,
      tenantId: i % 2 === 0 ? "a" : "b",
      secret: `secret ${i}`,
      age: String(30 + i),
    }));
    const source = tableSource(rows, { bindRow: true });
    const job = { engine: legacy, source, model: "Person", fields };
    expect((await reencryptFields(job)).reencrypted).toBe(6);
    const dataKeyIds = new Set(
      rows.flatMap((r) => [r.secret, r.age]).map((v) => String(v).slice(0, 27)),
    );
    // Per tenant one randomized and one stable data key, not one per row.
    expect(dataKeyIds.size).toBe(4);
    // The stable key the job compares against is the tenant's: a second run changes nothing.
    expect((await reencryptFields(job)).reencrypted).toBe(0);
    const strict = engine(oldKey);
    const at = (row: Row, field: string) => ({
      model: "Person",
      field,
      context: { tenantId: row.tenantId, rowId: String(row.id) },
    });
    const [first, , third] = rows as [Row, Row, Row];
    expect(
      await strict.decryptText(at(first, "secret"), fields.secret, first.secret as string),
    ).toBe("secret 0");
    await expect(
      strict.decryptText(at(third, "secret"), fields.secret, first.secret as string),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
  });

  test("moves values from an old KMS key to the new one; a concurrent write wins", async () => {
    const { oldKey, newKey, engine } = await setup();
    const before = engine(oldKey);
    const rows: Row[] = [];
    for (let i = 1; i <= 4; i++) {
      const b = (field: string) => ({ model: "Person", field, context: { tenantId: "a" } });
      rows.push({
        id: i,
        tenantId: "a",
        secret: await before.encryptText(b("secret"), fields.secret, `s${i}`),
        age: await before.encryptText(b("age"), fields.age, i),
      });
    }
    // An engine reads under the KMS keys it is configured with only: the old key must be listed.
    await expect(
      reencryptFields({
        engine: engine(newKey),
        source: tableSource(rows),
        model: "Person",
        fields,
      }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    const after = engine(newKey, false, [oldKey]);
    const concurrent = await after.encryptText(
      { model: "Person", field: "secret", context: { tenantId: "a" } },
      fields.secret,
      "app wrote this",
    );
    const result = await reencryptFields({
      engine: after,
      source: tableSource(rows, {
        beforeWrite: (row) => {
          if (row.id === 2) row.secret = concurrent;
        },
      }),
      model: "Person",
      fields,
    });
    expect(result).toMatchObject({ scanned: 4, reencrypted: 3, conflicts: 1 });
    for (const row of rows) {
      const info = await after.inspect(row.secret as string);
      if (row.id !== 2)
        expect(info).toMatchObject({ legacy: false, kmsKeyId: expect.stringContaining(newKey) });
    }
    expect(
      await after.decryptText(
        { model: "Person", field: "secret", context: { tenantId: "a" } },
        fields.secret,
        rows[1]?.secret as string,
      ),
    ).toBe("app wrote this");
  });

  test("rewrites values whose field changed mode, even under the current keys", async () => {
    const { oldKey, engine } = await setup();
    const current = engine(oldKey);
    const b = (field: string) => ({ model: "Person", field, context: { tenantId: "a" } });
    // Written before `age` became deterministic and `secret` randomized.
    const rows: Row[] = [
      {
        id: 1,
        tenantId: "a",
        secret: await current.encryptText(
          b("secret"),
          { ...fields.secret, mode: "deterministic" },
          "s",
        ),
        age: await current.encryptText(b("age"), { type: "number" }, 41),
      },
    ];
    const result = await reencryptFields({
      engine: current,
      source: tableSource(rows),
      model: "Person",
      fields,
    });
    expect(result.reencrypted).toBe(1);
    const [row] = rows as [Row];
    expect(await current.inspect(row.secret as string)).toMatchObject({ mode: "randomized" });
    expect(await current.inspect(row.age as string)).toMatchObject({ mode: "deterministic" });
    expect(row.age).toBe(await current.encryptText(b("age"), fields.age, 41));
    expect(await current.decryptText(b("secret"), fields.secret, row.secret as string)).toBe("s");
  });

  test.each([
    ["age", "", "number"],
    ["age", "forty", "number"],
    ["flag", "yes", "boolean"],
    ["flag", "", "boolean"],
    ["big", "12abc", "bigint"],
    ["big", "0x10", "bigint"],
    ["doc", '{"card":"4111 1111"', "json"],
    ["born", "someday", "date"],
  ])("a legacy %s of %j is refused, and the error does not quote it", async (field, text, type) => {
    const { oldKey, engine } = await setup();
    const source: ReencryptSource = {
      fetchBatch: async (cursor) =>
        cursor === undefined ? [{ cursor: 1, context: {}, values: { [field]: text } }] : [],
      compareAndSet: async () => {
        throw new Error("must not write");
      },
    };
    const error = await reencryptFields({
      engine: engine(oldKey, true),
      source,
      model: "Person",
      fields: { [field]: { type: type as "number", storage: "text" } },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    const seen = JSON.stringify(error, Object.getOwnPropertyNames(error));
    if (text !== "") expect(seen).not.toContain(text);
    expect((error as Error).cause).toBeUndefined();
  });

  test("legacy text forms are converted to the declared type", async () => {
    const { oldKey, engine } = await setup();
    const legacy = engine(oldKey, true);
    const values: Record<string, StoredFieldValue> = {
      n: " -1.5e3 ",
      t: "t",
      f: "FALSE",
      big: "-12345678901234567890",
      doc: '{"a":[1]}',
      raw: new TextEncoder().encode("7"),
    };
    const specs = {
      n: { type: "number", storage: "text" },
      t: { type: "boolean", storage: "text" },
      f: { type: "boolean", storage: "text" },
      big: { type: "bigint", storage: "text" },
      doc: { type: "json", storage: "text" },
      raw: { type: "number", storage: "bytes" },
    } as const;
    let written: Readonly<Record<string, FieldValue>> = {};
    await reencryptFields({
      engine: legacy,
      source: {
        fetchBatch: async (cursor) =>
          cursor === undefined ? [{ cursor: 1, context: {}, values }] : [],
        compareAndSet: async (_row, _next, plaintexts) => {
          written = plaintexts;
          return true;
        },
      },
      model: "Person",
      fields: specs,
    });
    expect(written).toEqual({
      n: -1500,
      t: true,
      f: false,
      big: -12345678901234567890n,
      doc: { a: [1] },
      raw: 7,
    });
  });

  test("an alias re-pointed to a new KMS key moves randomized values to it", async () => {
    const kms = await createKms();
    const oldKey = (await kms.createKey()).keyMetadata.keyId;
    const newKey = (await kms.createKey()).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/app", targetKeyId: oldKey });
    const oldArn = (await kms.describeKey({ keyId: oldKey })).keyMetadata.arn;
    const store = new MemoryDataKeyStore();
    // The key the alias named before is listed: the alias is resolved at each Decrypt.
    const engine = () =>
      new FieldEncryptionEngine({
        kms,
        dataKeyStore: store,
        keyId: "alias/app",
        previousKeyIds: [oldArn],
      });
    const before = engine();
    const b = (field: string) => ({ model: "Person", field, context: { tenantId: "a" } });
    const rows: Row[] = [
      {
        id: 1,
        tenantId: "a",
        secret: await before.encryptText(b("secret"), fields.secret, "s"),
        age: await before.encryptText(b("age"), fields.age, 5),
      },
    ];
    await kms.updateAlias({ aliasName: "alias/app", targetKeyId: newKey });
    const job = { engine: engine(), source: tableSource(rows), model: "Person", fields };
    expect((await reencryptFields(job)).reencrypted).toBe(1);
    const info = await job.engine.inspect((rows[0] as Row).secret as string);
    expect(info).toMatchObject({ kmsKeyId: expect.stringContaining(newKey) });
    // Idempotent: the next run finds nothing to do.
    expect((await reencryptFields(job)).reencrypted).toBe(0);
  });

  test("a run with nothing to rewrite makes no data keys, even with maxValues 1", async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const store = new MemoryDataKeyStore();
    const engine = new FieldEncryptionEngine({
      kms,
      dataKeyStore: store,
      keyId,
      cache: { maxValues: 1 },
    });
    const b = { model: "Person", field: "secret", context: { tenantId: "a" } };
    const rows: Row[] = [];
    for (let id = 1; id <= 3; id++) {
      rows.push({
        id,
        tenantId: "a",
        secret: await engine.encryptText(b, fields.secret, "s"),
        age: null,
      });
    }
    const job = { engine, source: tableSource(rows), model: "Person", fields };
    expect((await reencryptFields(job)).reencrypted).toBe(0);
    // One stable key and the write key the job looked at, not one per row.
    const after = store.size;
    expect((await reencryptFields(job)).reencrypted).toBe(0);
    expect(store.size - after).toBeLessThanOrEqual(1);
    expect(after).toBeLessThanOrEqual(3 + 2);
  });

  test("a model without deterministic fields makes no stable data keys", async () => {
    const kms = await createKms();
    const oldKey = (await kms.createKey()).keyMetadata.keyId;
    const newKey = (await kms.createKey()).keyMetadata.keyId;
    let generated = 0;
    const counting: KmsLike = {
      ...kms,
      decrypt: (r, o) => kms.decrypt(r, o),
      generateDataKey: (r, o) => {
        generated += 1;
        return kms.generateDataKey(r, o);
      },
    } as KmsLike;
    const inserted: DataKeyRecord["purpose"][] = [];
    const memory = new MemoryDataKeyStore();
    const store = {
      insert: (record: DataKeyRecord) => {
        inserted.push(record.purpose);
        return memory.insert(record);
      },
      get: (id: string) => memory.get(id),
    };
    const engine = (keyId: string, previousKeyIds: string[] = []) =>
      new FieldEncryptionEngine({
        kms: counting,
        dataKeyStore: store,
        keyId,
        previousKeyIds,
        legacyPlaintext: true,
      });
    const randomizedOnly = {
      secret: { type: "string", storage: "text" },
      age: { type: "number", storage: "bytes" },
    } as const;
    const b = (tenantId: string, field: string) => ({
      model: "Person",
      field,
      context: { tenantId },
    });
    const before = engine(oldKey);
    const rows: Row[] = [];
    for (let id = 1; id <= 4; id++) {
      const tenantId = id % 2 === 0 ? "a" : "b";
      rows.push({
        id,
        tenantId,
        // Half legacy plaintext, half under the old KMS key: both are rewritten.
        secret:
          id <= 2
            ? `s${id}`
            : await before.encryptText(b(tenantId, "secret"), randomizedOnly.secret, `s${id}`),
        age: await before.encrypt(b(tenantId, "age"), randomizedOnly.age, id),
      });
    }
    generated = 0;
    inserted.length = 0;
    let seenStableId: string | undefined;
    const after = engine(newKey, [oldKey]);
    const result = await reencryptFields({
      engine: after,
      source: tableSource(rows),
      model: "Person",
      fields: randomizedOnly,
      shouldReencrypt: (info, current) => {
        seenStableId = current.stableDataKeyId;
        return info.legacy || info.kmsKeyId !== current.kmsKeyId;
      },
    });
    expect(result).toMatchObject({ scanned: 4, reencrypted: 4, conflicts: 0 });
    // One randomized data key per tenant under the new KMS key, and nothing else.
    expect(generated).toBe(2);
    expect(inserted).toEqual(["randomized", "randomized"]);
    // The policy still sees the id the tenant's stable key has (derived, not loaded).
    expect(seenStableId).toBe((await after.currentKeys({ tenantId: "a" })).stableDataKeyId);
    expect(inserted).toContain("stable");
    for (const row of rows) {
      expect(
        await after.decryptText(
          b(row.tenantId, "secret"),
          randomizedOnly.secret,
          row.secret as string,
        ),
      ).toBe(`s${row.id}`);
    }
  });

  test("rows with only nulls make no data keys, and the checkpoint still moves past them", async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const generatedFor: EncryptionContext[] = [];
    const counting = {
      ...kms,
      decrypt: (r, o) => kms.decrypt(r, o),
      generateDataKey: (r, o) => {
        generatedFor.push(r.encryptionContext ?? {});
        return kms.generateDataKey(r, o);
      },
    } as KmsLike;
    const insertedFor: EncryptionContext[] = [];
    const memory = new MemoryDataKeyStore();
    const store = {
      insert: (record: DataKeyRecord) => {
        insertedFor.push(record.encryptionContext);
        return memory.insert(record);
      },
      get: (id: string) => memory.get(id),
    };
    const engine = new FieldEncryptionEngine({
      kms: counting,
      dataKeyStore: store,
      keyId,
      legacyPlaintext: true,
    });
    // Each null row in a context of its own (say a throwaway tenant); one row with values.
    const rows: Row[] = [
      { id: 1, tenantId: "ghost-1", secret: null, age: null },
      { id: 2, tenantId: "a", secret: "s", age: "7" },
      { id: 3, tenantId: "ghost-3", secret: null, age: null },
      { id: 4, tenantId: "ghost-4", secret: null, age: null },
      { id: 5, tenantId: "ghost-5", secret: null, age: null },
    ];
    const progress: ReencryptCheckpoint[] = [];
    const result = await reencryptFields({
      engine,
      source: tableSource(rows),
      model: "Person",
      fields,
      batchSize: 2,
      onProgress: (checkpoint) => {
        progress.push(checkpoint);
      },
    });
    expect(result).toEqual({ cursor: 5, scanned: 5, reencrypted: 1, conflicts: 0 });
    // The last batch holds nothing but nulls: it is checkpointed all the same.
    expect(progress.map((c) => c.cursor)).toEqual([2, 4, 5]);
    // Tenant "a" alone got data keys (a randomized and a stable one), generated and stored.
    expect(generatedFor).toEqual([{ tenantId: "a" }, { tenantId: "a" }]);
    expect(insertedFor).toEqual([{ tenantId: "a" }, { tenantId: "a" }]);
  });

  test("strict engines refuse legacy values; bad batch sizes are rejected", async () => {
    const { oldKey, engine } = await setup();
    const rows: Row[] = [{ id: 1, tenantId: "a", secret: "plain", age: null }];
    await expect(
      reencryptFields({
        engine: engine(oldKey),
        source: tableSource(rows),
        model: "Person",
        fields,
      }),
    ).rejects.toBeInstanceOf(InvalidCiphertextError);
    await expect(
      reencryptFields({
        engine: engine(oldKey),
        source: tableSource(rows),
        model: "Person",
        fields,
        batchSize: 0,
      }),
    ).rejects.toBeInstanceOf(ValidationError);
    expect(rows[0]?.secret).toBe("plain");
  });
});

describe("reencryptFields: forced rotation of data keys", () => {
  const b = (tenantId: string, field: string) => ({
    model: "Person",
    field,
    context: { tenantId },
  });
  const idOf = (stored: StoredFieldValue) => {
    // Text form: "kms1:" + base64url(format byte || 16-byte data key id || …).
    const bytes = Buffer.from((stored as string).slice(5), "base64url");
    return bytes.subarray(1, 17).toString("hex");
  };

  /** Rows of tenants a and b under the data keys the engine is writing with right now. */
  async function written(engine: FieldEncryptionEngine, count: number): Promise<Row[]> {
    const rows: Row[] = [];
    for (let id = 1; id <= count; id++) {
      const tenantId = id % 2 === 0 ? "b" : "a";
      rows.push({
        id,
        tenantId,
        secret: await engine.encryptText(b(tenantId, "secret"), fields.secret, `s${id}`),
        age: await engine.encryptText(b(tenantId, "age"), fields.age, id),
      });
    }
    return rows;
  }

  test("values under a selected data key move to another one, even in the engine writing with it", async () => {
    const { oldKey, engine } = await setup();
    const app = engine(oldKey);
    const rows = await written(app, 6);
    const exposed = idOf(rows[0]?.secret as StoredFieldValue);
    const tenantB = rows.filter((r) => r.tenantId === "b").map((r) => ({ ...r }));
    const progress: ReencryptCheckpoint[] = [];
    const abort = new AbortController();
    const job = {
      engine: app,
      model: "Person",
      fields,
      batchSize: 2,
      shouldReencrypt: (info: StoredValueInfo) => !info.legacy && info.dataKeyId === exposed,
    };
    await expect(
      reencryptFields({
        ...job,
        source: tableSource(rows),
        signal: abort.signal,
        onProgress: (c) => {
          progress.push(c);
          abort.abort();
        },
      }),
    ).rejects.toThrow();
    expect(progress).toEqual([{ cursor: 2, scanned: 2, reencrypted: 1, conflicts: 0 }]);
    const done = await reencryptFields({
      ...job,
      source: tableSource(rows),
      resumeFrom: progress[0] as ReencryptCheckpoint,
    });
    expect(done).toEqual({ cursor: 6, scanned: 6, reencrypted: 3, conflicts: 0 });
    for (const row of rows) {
      expect(idOf(row.secret)).not.toBe(exposed);
      expect(
        await app.decryptText(b(row.tenantId, "secret"), fields.secret, row.secret as string),
      ).toBe(`s${row.id}`);
    }
    // Tenant a's values now share one fresh key, not one per row.
    expect(new Set(rows.filter((r) => r.tenantId === "a").map((r) => idOf(r.secret))).size).toBe(1);
    // Values the policy did not select are untouched, and their key is still written with.
    expect(rows.filter((r) => r.tenantId === "b")).toEqual(tenantB);
    const bNow = await app.encryptText(b("b", "secret"), fields.secret, "new");
    expect(idOf(bNow)).toBe(idOf(tenantB[0]?.secret as StoredFieldValue));
    expect((await reencryptFields({ ...job, source: tableSource(rows) })).reencrypted).toBe(0);
  });

  test("the application's writes during the job do not bring the selected key back", async () => {
    const { oldKey, engine } = await setup();
    const app = engine(oldKey);
    const rows = (await written(app, 4)).filter((r) => r.tenantId === "a");
    const exposed = idOf(rows[0]?.secret as StoredFieldValue);
    const ahead = rows[1] as Row;
    const result = await reencryptFields({
      engine: app,
      source: tableSource(rows, {
        beforeWrite: (row) => {
          // While the job writes row 1, the application (same engine) updates a row ahead.
          if (row.id === 1) {
            ahead.secret = app.encryptTextIfCached(b("a", "secret"), fields.secret, "app") ?? null;
          }
        },
      }),
      model: "Person",
      fields,
      // One row per batch: the row ahead is read after the application wrote it.
      batchSize: 1,
      shouldReencrypt: (info) => !info.legacy && info.dataKeyId === exposed,
    });
    // The application's value was sealed synchronously, under the job's fresh key, and the job
    // (whose policy does not select that key) left it alone.
    expect(ahead.secret).not.toBeNull();
    expect(idOf(ahead.secret)).not.toBe(exposed);
    expect(result).toMatchObject({ scanned: 2, reencrypted: 1, conflicts: 0 });
    expect(await app.decryptText(b("a", "secret"), fields.secret, ahead.secret as string)).toBe(
      "app",
    );
    for (const row of rows) expect(idOf(row.secret)).not.toBe(exposed);
  });

  test("a policy selecting every value makes one key per context, not one per row", async () => {
    const { oldKey, engine } = await setup();
    const app = engine(oldKey);
    const rows = await written(app, 6);
    const before = new Set(rows.map((r) => idOf(r.secret)));
    const result = await reencryptFields({
      engine: app,
      source: tableSource(rows),
      model: "Person",
      fields: { secret: fields.secret },
      shouldReencrypt: () => true,
    });
    expect(result.reencrypted).toBe(6);
    const after = new Set(rows.map((r) => idOf(r.secret)));
    expect(after.size).toBe(2);
    for (const id of after) expect(before.has(id)).toBe(false);
  });

  test("a deterministic value under the current stable key is left as it is", async () => {
    const { oldKey, engine } = await setup();
    const app = engine(oldKey);
    const rows = await written(app, 2);
    const copy = rows.map((r) => ({ ...r }));
    const stable = idOf(rows[0]?.age as StoredFieldValue);
    const result = await reencryptFields({
      engine: app,
      source: {
        ...tableSource(rows),
        compareAndSet: async () => {
          throw new Error("must not write");
        },
      },
      model: "Person",
      fields: { age: fields.age },
      shouldReencrypt: (info) => !info.legacy && info.dataKeyId === stable,
    });
    expect(result).toEqual({ cursor: 2, scanned: 2, reencrypted: 0, conflicts: 0 });
    expect(rows).toEqual(copy);
  });
});
