/**
 * Generates the stored-field-value golden vectors in test/golden/fields-v1/ (docs/FORMAT.md §6):
 * values written by the field encryption engine in randomized and deterministic mode for every
 * type tag, under several contexts (none, a tenant, a row bound outside the key context, a
 * tenant on another KMS key), blind indexes, and the data-key table they need. The KMS is the
 * golden v1 key store (test/golden/v1, loaded as its test loads it), so no new key material is
 * made. Every later version of @kms/core must still read them, and reproduce the deterministic
 * values and blind indexes byte for byte (test/golden/fields-v1.test.ts), so they are generated
 * once and committed.
 *
 *   node packages/core/scripts/make-field-vectors.ts [--force]
 *
 * Refuses to overwrite existing vectors without --force: regenerating them hides format breaks,
 * which is exactly what they exist to catch. Read test/golden/README.md first.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  type BlindIndexNormalization,
  createKms,
  type DataKeyRecord,
  type FieldBinding,
  FieldEncryptionEngine,
  type FieldSpec,
  type FieldValueType,
  MemoryDataKeyStore,
  MemoryKeyStore,
} from "../src/index.ts";
import { goldenVectorsV1, loadGoldenSnapshot, ManualClock } from "../src/testing/index.ts";
import { toJson } from "./vector-json.ts";

const OUT = join(dirname(fileURLToPath(import.meta.url)), "..", "test", "golden", "fields-v1");

/**
 * Which KMS key protects the data keys of a context: the aliased v1 key by its alias (a stable
 * data key id is derived from the key id as configured, so the alias is part of it, §6.1), and
 * the twice-rotated v1 key by its id for tenant "globex". The test rebuilds the same selector.
 */
interface KeySelection {
  readonly default: string;
  readonly byTenant: Readonly<Record<string, string>>;
}

/** JSON-safe plaintext: what JSON cannot hold is tagged ($base64 as in the other vectors). */
type TaggedValue =
  | string
  | boolean
  | number
  | null
  | Uint8Array
  | { $number: "-0" | "NaN" }
  | { $date: number }
  | { $bigint: string }
  | readonly TaggedValue[]
  | { readonly [key: string]: TaggedValue };

interface FieldVector {
  readonly name: string;
  readonly binding: FieldBinding;
  readonly spec: Required<FieldSpec>;
  readonly value: TaggedValue;
  /** The text form (`kms1:…`, String columns) or the bytes (Bytes columns). */
  readonly stored: string | Uint8Array;
}

interface IndexVector {
  readonly name: string;
  readonly binding: FieldBinding;
  /** A BlindIndexSpec without the function form of `normalize`, which JSON cannot hold. */
  readonly spec: { readonly bytes?: number; readonly normalize?: BlindIndexNormalization[] };
  readonly value: TaggedValue;
  readonly index: string;
}

function tag(value: unknown): TaggedValue {
  if (typeof value === "number") {
    if (Number.isNaN(value)) return { $number: "NaN" };
    if (Object.is(value, -0)) return { $number: "-0" };
    return value;
  }
  if (value instanceof Date) return { $date: value.getTime() };
  if (typeof value === "bigint") return { $bigint: value.toString() };
  return value as TaggedValue;
}

async function main(): Promise<void> {
  const files = ["data-keys.json", "values.json"].map((f) => join(OUT, f));
  if (files.some((f) => existsSync(f)) && !process.argv.includes("--force")) {
    console.error(`golden vectors exist in ${OUT}; they must not be regenerated (see README.md)`);
    process.exit(1);
  }
  const { snapshot, rootKey } = goldenVectorsV1();
  const keyStore = new MemoryKeyStore();
  await loadGoldenSnapshot(keyStore, snapshot);
  const clock = new ManualClock(Date.UTC(2026, 0, 5));
  const kms = await createKms({ store: keyStore, rootKey, clock, unsealedRecords: "seal" });
  const rotated = snapshot.keys.find((k) => k.versions.length === 3)!.keyId;
  const keys: KeySelection = { default: "alias/golden", byTenant: { globex: rotated } };

  const records: DataKeyRecord[] = [];
  const dataKeyStore = new (class extends MemoryDataKeyStore {
    override async insert(record: DataKeyRecord): Promise<DataKeyRecord> {
      const stored = await super.insert(record);
      if (!records.some((r) => r.id === stored.id)) records.push(stored);
      return stored;
    }
  })();
  const engine = new FieldEncryptionEngine({
    kms,
    dataKeyStore,
    clock,
    keyId: (context) => keys.byTenant[context.tenantId ?? ""] ?? keys.default,
  });

  const values: FieldVector[] = [];
  const indexes: IndexVector[] = [];
  const model = "GoldenPatient";
  const tenant = { tenantId: "acme" };

  const seal = async (
    name: string,
    binding: FieldBinding,
    type: FieldValueType,
    value: unknown,
    form: "text" | "bytes" = type === "bytes" ? "bytes" : "text",
  ): Promise<void> => {
    for (const mode of ["randomized", "deterministic"] as const) {
      const spec = { type, mode };
      const stored =
        form === "text"
          ? await engine.encryptText(binding, spec, value)
          : await engine.encrypt(binding, spec, value);
      values.push({ name: `${mode}, ${name}`, binding, spec, value: tag(value), stored });
    }
  };

  // §6.3: every type tag, with the payloads' edge cases, under a tenant context.
  const typed: [string, FieldValueType, unknown][] = [
    ["string", "string", "golden field ✓ — ключ 🔑"],
    ["empty string", "string", ""],
    ["bytes", "bytes", new Uint8Array(40).map((_, i) => (i * 37 + 11) & 0xff)],
    ["empty bytes", "bytes", new Uint8Array(0)],
    ["number", "number", 1234.5678],
    ["number -0", "number", -0],
    ["number NaN", "number", Number.NaN],
    ["boolean true", "boolean", true],
    ["boolean false", "boolean", false],
    ["date", "date", new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678))],
    ["bigint", "bigint", -123456789012345678901234567890n],
    ["decimal", "decimal", "-12.50e+3"],
    ["json", "json", { list: [1, "two", null, true], ключ: { nested: 1.5 } }],
  ];
  for (const [label, type, value] of typed) {
    await seal(
      `${label}, tenant context`,
      { model, field: `${type}Value`, context: tenant },
      type,
      value,
    );
  }
  // §6.2: the binding's context, key context and KMS key.
  const text = "context-bound value";
  await seal("string, no context", { model, field: "note", context: {} }, "string", text);
  await seal(
    "string, row id in the context but not the key context",
    {
      model,
      field: "note",
      context: { tenantId: "acme", recordId: "42" },
      keyContext: tenant,
    },
    "string",
    text,
  );
  await seal(
    "string, tenant on the other KMS key (by key id)",
    { model, field: "note", context: { tenantId: "globex", region: "eu" } },
    "string",
    text,
  );
  await seal(
    "string, non-ASCII context",
    { model: "ГолденМодель", field: "заметка", context: { tenantId: "acme", テナント: "値 🔑" } },
    "string",
    text,
  );
  await seal(
    "string as bytes (Bytes column)",
    { model, field: "blob", context: tenant },
    "string",
    text,
    "bytes",
  );

  // §6.5: blind indexes, each normalization and length, string and JSON values, each context.
  const addIndex = async (
    name: string,
    binding: FieldBinding,
    spec: IndexVector["spec"],
    value: unknown,
  ): Promise<void> => {
    const index = await engine.blindIndex(binding, spec, value);
    indexes.push({ name, binding, spec, value: tag(value), index });
  };
  const at = { model, field: "emailIndex", context: tenant };
  await addIndex("default spec (16 bytes, no normalization)", at, {}, " Alice@Example.COM ");
  await addIndex(
    "trim + lowercase, 16 bytes",
    at,
    { bytes: 16, normalize: ["trim", "lowercase"] },
    " Alice@Example.COM ",
  );
  await addIndex("nfkc, 32 bytes", at, { bytes: 32, normalize: ["nfkc"] }, "ｶﾀｶﾅ Ⅻ ﬁ");
  await addIndex(
    "all three normalizations, 4 bytes",
    at,
    { bytes: 4, normalize: ["trim", "lowercase", "nfkc"] },
    " ＡＢＣ ",
  );
  await addIndex("a number (JSON text)", at, { bytes: 8 }, 42);
  await addIndex("an object (JSON text)", at, { bytes: 8 }, { a: 1, b: [true, "x"] });
  await addIndex("no context", { ...at, context: {} }, { bytes: 8 }, "alice@example.com");
  await addIndex(
    "row id outside the key context",
    { ...at, context: { tenantId: "acme", recordId: "42" }, keyContext: tenant },
    { bytes: 8 },
    "alice@example.com",
  );
  await addIndex(
    "tenant on the other KMS key",
    { ...at, context: { tenantId: "globex", region: "eu" } },
    { bytes: 8 },
    "alice@example.com",
  );

  mkdirSync(OUT, { recursive: true });
  writeFileSync(
    join(OUT, "data-keys.json"),
    toJson({ format: "kms-golden-field-data-keys/v1", records }),
  );
  writeFileSync(
    join(OUT, "values.json"),
    toJson({ format: "kms-golden-fields/v1", keys, values, indexes }),
  );
  console.log(
    `wrote ${values.length} field values, ${indexes.length} blind indexes and ${records.length} data keys to ${OUT}`,
  );
}

await main();
