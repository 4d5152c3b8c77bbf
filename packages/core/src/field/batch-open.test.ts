import { describe, expect, test } from "vitest";
import { InvalidCiphertextError } from "../errors.ts";
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
});
