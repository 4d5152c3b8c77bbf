/**
 * Field values written by format version 1 (docs/FORMAT.md §6) must decrypt forever, and the
 * deterministic ones and blind indexes must come out byte for byte the same when written again,
 * or equality lookups and unique indexes on existing rows stop matching. Never regenerate the
 * files this reads: see README.md in this folder.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import {
  type BlindIndexNormalization,
  createKms,
  type DataKeyRecord,
  type FieldBinding,
  FieldEncryptionEngine,
  type FieldValueType,
  InvalidCiphertextError,
  type Kms,
  MemoryDataKeyStore,
  MemoryKeyStore,
} from "../../src/index.ts";
import { goldenVectorsV1, loadGoldenSnapshot } from "../../src/testing/index.ts";

const DIR = join(dirname(fileURLToPath(import.meta.url)), "fields-v1");

interface ValueVector {
  name: string;
  binding: FieldBinding;
  spec: { type: FieldValueType; mode: "randomized" | "deterministic" };
  value: unknown;
  stored: string | Uint8Array;
}

interface IndexVector {
  name: string;
  binding: FieldBinding;
  spec: { bytes?: number; normalize?: BlindIndexNormalization[] };
  value: unknown;
  index: string;
}

/** Reverses the script's tagging: $base64 bytes, and numbers, dates, bigints JSON cannot hold. */
function read<T>(name: string): T {
  return JSON.parse(readFileSync(join(DIR, name), "utf8"), (_key, v: unknown) => {
    if (typeof v !== "object" || v === null) return v;
    if ("$base64" in v) return new Uint8Array(Buffer.from(String(v.$base64), "base64"));
    if ("$number" in v) return Number(v.$number);
    if ("$date" in v) return new Date(Number(v.$date));
    if ("$bigint" in v) return BigInt(String(v.$bigint));
    return v;
  }) as T;
}

const dataKeys = read<{ format: string; records: DataKeyRecord[] }>("data-keys.json");
const file = read<{
  format: string;
  keys: { default: string; byTenant: Record<string, string> };
  values: ValueVector[];
  indexes: IndexVector[];
}>("values.json");

let kms: Kms;
beforeAll(async () => {
  // The KMS of test/golden/v1: the data keys above are wrapped under its keys.
  const { snapshot, rootKey } = goldenVectorsV1();
  const store = new MemoryKeyStore();
  await loadGoldenSnapshot(store, snapshot);
  kms = await createKms({ store, rootKey, unsealedRecords: "seal" });
});

/** A fresh engine over the stored data-key table: nothing cached, nothing shared. */
async function freshEngine(): Promise<{
  engine: FieldEncryptionEngine;
  table: MemoryDataKeyStore;
}> {
  const table = new MemoryDataKeyStore();
  for (const record of dataKeys.records) await table.insert(record);
  const engine = new FieldEncryptionEngine({
    kms,
    dataKeyStore: table,
    keyId: (context) => file.keys.byTenant[context.tenantId ?? ""] ?? file.keys.default,
  });
  return { engine, table };
}

function decrypt(
  engine: FieldEncryptionEngine,
  binding: FieldBinding,
  vector: ValueVector,
): Promise<unknown> {
  return typeof vector.stored === "string"
    ? engine.decryptText(binding, vector.spec, vector.stored)
    : engine.decrypt(binding, vector.spec, vector.stored);
}

/** Bindings that differ from `binding` in one respect each: every one must be refused. */
function changedBindings(binding: FieldBinding): [string, FieldBinding][] {
  const { model, field, context } = binding;
  const names = Object.keys(context);
  const out: [string, FieldBinding][] = [
    ["another model", { model: `${model}2`, field, context }],
    ["another field", { model, field: `${field}2`, context }],
    ["an extra context pair", { model, field, context: { ...context, extra: "pair" } }],
    ["another tenant", { model, field, context: { ...context, tenantId: "someone-else" } }],
  ];
  for (const name of names) {
    out.push([`"${name}" changed`, { model, field, context: { ...context, [name]: "x" } }]);
    const without = Object.fromEntries(
      names.filter((n) => n !== name).map((n) => [n, context[n]!]),
    );
    out.push([`"${name}" left out`, { model, field, context: without }]);
  }
  return out;
}

describe("golden field values, format v1 (FORMAT §6)", () => {
  it("holds the expected set of vectors", () => {
    expect(dataKeys.format).toBe("kms-golden-field-data-keys/v1");
    expect(file.format).toBe("kms-golden-fields/v1");
    expect(file.values.length).toBe(36);
    expect(file.indexes.length).toBe(9);
    const types: FieldValueType[] = [
      "string",
      "bytes",
      "number",
      "boolean",
      "date",
      "bigint",
      "decimal",
      "json",
    ];
    for (const type of types) {
      for (const mode of ["randomized", "deterministic"]) {
        expect(file.values.some((v) => v.spec.type === type && v.spec.mode === mode)).toBe(true);
      }
    }
    expect(file.values.some((v) => v.binding.keyContext !== undefined)).toBe(true);
    expect(file.values.some((v) => Object.keys(v.binding.context).length === 0)).toBe(true);
    expect(file.values.some((v) => v.stored instanceof Uint8Array)).toBe(true);
    expect(new Set(dataKeys.records.map((r) => r.kmsKeyId)).size).toBe(2);
    expect(new Set(dataKeys.records.map((r) => r.purpose))).toEqual(
      new Set(["randomized", "stable"]),
    );
  });

  describe.each(file.values)("$name", (vector) => {
    it("decrypts with a fresh engine to its plaintext, from the data key and mode it names", async () => {
      const { engine } = await freshEngine();
      const value = await decrypt(engine, vector.binding, vector);
      // toEqual tells NaN, -0, dates, bigints and bytes apart from their look-alikes.
      expect(value).toEqual(vector.value);
      expect(Object.is(value, -0)).toBe(Object.is(vector.value, -0));
      const info = await engine.inspect(vector.stored);
      expect(info.legacy).toBe(false);
      if (info.legacy) return;
      expect(info.mode).toBe(vector.spec.mode);
      const record = dataKeys.records.find((r) => r.id === info.dataKeyId)!;
      expect(record.purpose).toBe(vector.spec.mode === "randomized" ? "randomized" : "stable");
      expect(record.encryptionContext).toEqual(vector.binding.keyContext ?? vector.binding.context);
    });

    if (vector.spec.mode === "deterministic") {
      it("is written again byte for byte by a fresh engine, under the stored stable key", async () => {
        const { engine, table } = await freshEngine();
        const again =
          typeof vector.stored === "string"
            ? await engine.encryptText(vector.binding, vector.spec, vector.value)
            : await engine.encrypt(vector.binding, vector.spec, vector.value);
        // The stable data key id (§6.1.3) must find the stored row, not make a new key.
        expect(table.size).toBe(dataKeys.records.length);
        expect(again).toEqual(vector.stored);
      });
    }

    it("fails with a changed model, field or context", async () => {
      const { engine } = await freshEngine();
      for (const [, binding] of changedBindings(vector.binding)) {
        await expect(decrypt(engine, binding, vector)).rejects.toBeInstanceOf(
          InvalidCiphertextError,
        );
      }
    });
  });

  describe.each(file.indexes)("blind index: $name", (vector) => {
    it("is computed again byte for byte by a fresh engine, under the stored stable key", async () => {
      const { engine, table } = await freshEngine();
      expect(await engine.blindIndex(vector.binding, vector.spec, vector.value)).toBe(vector.index);
      expect(table.size).toBe(dataKeys.records.length);
    });

    it("differs under a changed model, field or context", async () => {
      const { engine } = await freshEngine();
      for (const [, binding] of changedBindings(vector.binding)) {
        expect(await engine.blindIndex(binding, vector.spec, vector.value)).not.toBe(vector.index);
      }
    });
  });
});
