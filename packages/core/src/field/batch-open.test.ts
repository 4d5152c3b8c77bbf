import { describe, expect, test, vi } from "vitest";
import { InvalidCiphertextError } from "../errors.ts";
import { GcmKey } from "../hsm/gcm-key.ts";
import { createKms } from "../kms.ts";
import type { EncryptionContext } from "../types.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import {
  type DecryptItem,
  FieldEncryptionEngine,
  type FieldSpec,
} from "./field-encryption-engine.ts";
import { fromFieldText, toFieldText } from "./field-format.ts";

/**
 * decryptMany opens short randomized values under cached keys together (one AES call per run of
 * values under one key). Each value must still open only under its own binding and key, every
 * type must come back as itself, and one bad value must fail the whole call.
 */

async function setup() {
  const kms = await createKms({ audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const otherKeyId = (await kms.createKey()).keyMetadata.keyId;
  const engine = new FieldEncryptionEngine({
    kms,
    dataKeyStore: new MemoryDataKeyStore(),
    // A KMS key per tenant: values of two tenants interleave keys within one batch.
    keyId: (context: EncryptionContext) => (context.tenantId === "b" ? otherKeyId : keyId),
  });
  return { engine };
}

const bind = (field: string, tenantId: string, row: number): FieldBinding => ({
  model: "User",
  field,
  context: { tenantId, row: String(row) },
});

const samples: { spec: FieldSpec; value: unknown }[] = [
  { spec: { type: "string" }, value: "alice@example.com" },
  { spec: { type: "string" }, value: "" },
  { spec: { type: "string" }, value: "ünïcödé ✓ 𝄞".repeat(3) },
  { spec: { type: "string" }, value: "x".repeat(127) },
  { spec: { type: "string" }, value: "y".repeat(128) },
  { spec: { type: "string" }, value: "long ".repeat(80) },
  { spec: { type: "bytes" }, value: new Uint8Array([0, 1, 2, 255]) },
  { spec: { type: "number" }, value: -0.5 },
  { spec: { type: "boolean" }, value: true },
  { spec: { type: "json" }, value: { plan: "pro", seats: [1, 2] } },
  { spec: { type: "date" }, value: new Date(1_700_000_000_000) },
];

async function storedRows(engine: FieldEncryptionEngine, rows: number) {
  const items: DecryptItem[] = [];
  const expected: unknown[] = [];
  for (let row = 0; row < rows; row++) {
    const tenantId = row % 3 === 0 ? "b" : "a";
    for (const [i, { spec, value }] of samples.entries()) {
      const binding = bind(`f${i}`, tenantId, row);
      const stored =
        row % 2 === 0
          ? await engine.encryptText(binding, spec, value as never)
          : await engine.encrypt(binding, spec, value as never);
      items.push({ binding, spec, stored });
      expected.push(value);
    }
  }
  return { items, expected };
}

describe("decryptMany's batched opens", () => {
  test("every type, length and key comes back as written, cached or not", async () => {
    const { engine } = await setup();
    const { items, expected } = await storedRows(engine, 60);
    expect(await engine.decryptMany(items)).toEqual(expected);
    // Twice: the second call reuses the batch buffers of the first.
    expect(await engine.decryptMany(items)).toEqual(expected);
    expect(await engine.decryptMany(items.slice(5, 40))).toEqual(expected.slice(5, 40));
  });

  test("one tampered byte anywhere in one value fails the whole call", async () => {
    const { engine } = await setup();
    const { items } = await storedRows(engine, 4);
    const victim = items.findIndex((item) => typeof item.stored === "string");
    const bytes = fromFieldText(items[victim]?.stored as string);
    for (let at = 17; at < bytes.length; at++) {
      const tampered = bytes.slice();
      tampered[at] = (tampered[at] as number) ^ 0x10;
      const batch = items.slice();
      batch[victim] = { ...(items[victim] as DecryptItem), stored: toFieldText(tampered) };
      await expect(engine.decryptMany(batch)).rejects.toThrow(InvalidCiphertextError);
    }
    // The batch is not left holding the failed call's values.
    expect(await engine.decryptMany(items.slice(0, 3))).toHaveLength(3);
  });

  test("a value swapped between rows or fields, or read as another type, fails", async () => {
    const { engine } = await setup();
    const { items } = await storedRows(engine, 4);
    const first = items[0] as DecryptItem;
    const other = items[samples.length * 2] as DecryptItem; // row 2: tenant a, other row
    const swappedRow = [...items.slice(0, 5), { ...other, stored: first.stored }];
    await expect(engine.decryptMany(swappedRow)).rejects.toThrow(InvalidCiphertextError);
    const otherField = items[1] as DecryptItem;
    await expect(
      engine.decryptMany([...items.slice(2, 9), { ...otherField, stored: first.stored }]),
    ).rejects.toThrow(InvalidCiphertextError);
    await expect(
      engine.decryptMany([...items.slice(2, 9), { ...first, spec: { type: "number" } }]),
    ).rejects.toThrow(InvalidCiphertextError);
  });

  test("a value under tenant b's key, bound to tenant a, fails in the batch", async () => {
    const { engine } = await setup();
    const b = await engine.encryptText(bind("email", "b", 1), { type: "string" }, "bob");
    const a = await engine.encryptText(bind("email", "a", 1), { type: "string" }, "ann");
    const spec: FieldSpec = { type: "string" };
    expect(
      await engine.decryptMany([
        { binding: bind("email", "a", 1), spec, stored: a },
        { binding: bind("email", "b", 1), spec, stored: b },
      ]),
    ).toEqual(["ann", "bob"]);
    await expect(
      engine.decryptMany([
        { binding: bind("email", "a", 1), spec, stored: a },
        { binding: bind("email", "a", 1), spec, stored: b },
      ]),
    ).rejects.toThrow(InvalidCiphertextError);
  });

  test("a bad value queued before an item that throws fails first, with the generic error", async () => {
    const { engine } = await setup();
    const { items } = await storedRows(engine, 2);
    const victim = items.findIndex((item) => typeof item.stored === "string");
    const bytes = fromFieldText(items[victim]?.stored as string);
    bytes[30] = (bytes[30] as number) ^ 1;
    const batch = [
      { ...(items[victim] as DecryptItem), stored: toFieldText(bytes) },
      { ...(items[victim + 1] as DecryptItem), binding: { model: "", field: "x", context: {} } },
    ];
    await expect(engine.decryptMany(batch)).rejects.toThrow(InvalidCiphertextError);
  });

  test("tables derived from a data key are wiped once the cache lets go of it", async () => {
    // Calls through: it only records which keys built tables.
    const spy = vi.spyOn(GcmKey.prototype, "table");
    try {
      const { engine } = await setup();
      const { items, expected } = await storedRows(engine, 6);
      expect(await engine.decryptMany(items)).toEqual(expected);
      const used = new Set(spy.mock.contexts as GcmKey[]);
      expect(used.size).toBeGreaterThan(1);
      expect([...used].every((key) => key.tablesHeld > 0)).toBe(true);
      engine.clearCache();
      expect([...used].map((key) => [key.released, key.tablesHeld])).toEqual(
        [...used].map(() => [true, 0]),
      );
    } finally {
      spy.mockRestore();
    }
  });

  test("a key the cache lets go of while its values are queued is wiped after they open", async () => {
    const spy = vi.spyOn(GcmKey.prototype, "table");
    try {
      const { engine } = await setup();
      const { items, expected } = await storedRows(engine, 6);
      await engine.decryptMany(items);
      const last = items.length - 1;
      const { binding } = items[last] as DecryptItem;
      let cleared = false;
      // Read while the items before it wait in the batch: the cache drops every key then.
      const clearing = {
        get model() {
          if (!cleared) engine.clearCache();
          cleared = true;
          return binding.model;
        },
        field: binding.field,
        context: binding.context,
      };
      spy.mockClear();
      const withClear = [
        ...items.slice(0, last),
        { ...(items[last] as DecryptItem), binding: clearing },
      ];
      expect(await engine.decryptMany(withClear)).toEqual(expected);
      const used = new Set(spy.mock.contexts as GcmKey[]);
      expect(used.size).toBeGreaterThan(0);
      expect([...used].filter((key) => key.released).map((key) => key.tablesHeld)).toEqual(
        [...used].filter((key) => key.released).map(() => 0),
      );
      expect([...used].some((key) => key.released)).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });
});
