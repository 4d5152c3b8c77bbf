import { describe, expect, test, vi } from "vitest";
import { InvalidCiphertextError, ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import type { FieldBinding } from "./binding.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import {
  type DecryptItem,
  FieldEncryptionEngine,
  type FieldSpec,
} from "./field-encryption-engine.ts";
import { fromFieldText, toFieldText } from "./field-format.ts";

/**
 * A decryptMany that fails never hands over the `bytes` values it had already decrypted, so it
 * must zero them: on every path a value reaches its output by (opened one by one, in a queued
 * batch opened later, in the second pass after its key was unwrapped). Legacy plaintext bytes,
 * the caller's own array passed through, are the caller's and stay as they are.
 */

/** Every Uint8Array the engine made while decoding values (not the caller's, passed through). */
const made = vi.hoisted(() => [] as Uint8Array[]);

vi.mock("./value-codec.ts", async (importOriginal) => {
  const real = await importOriginal<typeof import("./value-codec.ts")>();
  const seen = <T>(value: T): T => {
    if (value instanceof Uint8Array) made.push(value);
    return value;
  };
  return {
    ...real,
    decodeFieldValue: (...args: Parameters<typeof real.decodeFieldValue>) =>
      seen(real.decodeFieldValue(...args)),
    decodeFieldValueIn: (...args: Parameters<typeof real.decodeFieldValueIn>) =>
      seen(real.decodeFieldValueIn(...args)),
    parseLegacyValue: (...args: Parameters<typeof real.parseLegacyValue>) => {
      const value = real.parseLegacyValue(...args);
      return value === args[2] ? value : seen(value);
    },
  };
});

const BYTES: FieldSpec = { type: "bytes" };
const STRING: FieldSpec = { type: "string" };
const at = (tenantId: string, field = "blob"): FieldBinding => ({
  model: "User",
  field,
  context: { tenantId },
});
const short = () => new Uint8Array([1, 2, 3, 250]);
// Past SHORT_GCM_MAX_BYTES: opened one by one, never queued.
const long = () => new Uint8Array(300).fill(7);
const allZero = (bytes: Uint8Array) => bytes.every((b) => b === 0);

async function setup(legacyPlaintext = false) {
  const kms = await createKms({ audit: false });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  const store = new MemoryDataKeyStore();
  const engine = () =>
    new FieldEncryptionEngine({ kms, dataKeyStore: store, keyId, legacyPlaintext });
  return { writer: engine(), engine };
}

/** The value with one byte of its tag flipped (the key id, and so the key, stay the same). */
function tampered(stored: Uint8Array): Uint8Array;
function tampered(stored: string): string;
function tampered(stored: string | Uint8Array): string | Uint8Array {
  const bytes = typeof stored === "string" ? fromFieldText(stored) : stored.slice();
  bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 1;
  return typeof stored === "string" ? toFieldText(bytes) : bytes;
}

async function failing(engine: FieldEncryptionEngine, items: DecryptItem[], error: unknown) {
  made.length = 0;
  await expect(engine.decryptMany(items)).rejects.toThrow(error as typeof Error);
  return made.slice();
}

describe("a failing decryptMany zeroes the bytes it decrypted", () => {
  test("values opened one by one, and queued ones opened as the call fails", async () => {
    const { writer } = await setup();
    const items: DecryptItem[] = [
      { binding: at("a"), spec: BYTES, stored: await writer.encrypt(at("a"), BYTES, long()) },
      { binding: at("a"), spec: BYTES, stored: await writer.encryptText(at("a"), BYTES, short()) },
      { binding: at("a"), spec: BYTES, stored: await writer.encrypt(at("a"), BYTES, short()) },
    ];
    const bad = tampered(await writer.encrypt(at("a"), BYTES, long()));
    const opened = await failing(
      writer,
      [...items, { binding: at("a"), spec: BYTES, stored: bad }],
      InvalidCiphertextError,
    );
    expect(opened).toHaveLength(3);
    expect(opened.filter((b) => !allZero(b))).toEqual([]);
    // An item that throws before anything is checked (a malformed binding) alike.
    const malformed = { binding: { model: "", field: "x", context: {} }, spec: BYTES, stored: bad };
    const again = await failing(writer, [...items, malformed], ValidationError);
    expect(again).toHaveLength(3);
    expect(again.filter((b) => !allZero(b))).toEqual([]);
    // The same values, in a call that succeeds, are whole.
    expect(await writer.decryptMany(items)).toEqual([long(), short(), short()]);
  });

  test("a queued batch opened when the next key starts, before a later value fails", async () => {
    const { writer } = await setup();
    // Two contexts, two data keys: tenant b's first value opens tenant a's run.
    const items: DecryptItem[] = [
      { binding: at("a"), spec: BYTES, stored: await writer.encrypt(at("a"), BYTES, short()) },
      { binding: at("b"), spec: BYTES, stored: await writer.encrypt(at("b"), BYTES, short()) },
      {
        binding: at("b"),
        spec: BYTES,
        stored: tampered(await writer.encrypt(at("b"), BYTES, short())),
      },
    ];
    const opened = await failing(writer, items, InvalidCiphertextError);
    expect(opened).toHaveLength(1);
    expect(opened.filter((b) => !allZero(b))).toEqual([]);
  });

  test("values of a batch decoded before one of them fails to decode", async () => {
    const { writer } = await setup();
    const asBytes = await writer.encrypt(at("a", "name"), STRING, "alice");
    const items: DecryptItem[] = [
      { binding: at("a"), spec: BYTES, stored: await writer.encrypt(at("a"), BYTES, short()) },
      { binding: at("a"), spec: BYTES, stored: await writer.encrypt(at("a"), BYTES, short()) },
      // Authentic, but a string: decoding it as bytes fails.
      { binding: at("a", "name"), spec: BYTES, stored: asBytes },
    ];
    const opened = await failing(writer, items, InvalidCiphertextError);
    expect(opened).toHaveLength(2);
    expect(opened.filter((b) => !allZero(b))).toEqual([]);
  });

  test("values opened in the second pass, and in the first, when a later one fails", async () => {
    const { writer, engine } = await setup();
    const stored = [
      await writer.encrypt(at("a"), BYTES, short()),
      await writer.encryptText(at("a"), BYTES, long()),
      await writer.encrypt(at("a"), BYTES, short()),
    ];
    const items = stored.map((s): DecryptItem => ({ binding: at("a"), spec: BYTES, stored: s }));
    const bad = { binding: at("a"), spec: BYTES, stored: tampered(stored[0] as Uint8Array) };
    // A reader without the key: every value waits for it, and opens after the await.
    const opened = await failing(engine(), [...items, bad], InvalidCiphertextError);
    expect(opened).toHaveLength(3);
    expect(opened.filter((b) => !allZero(b))).toEqual([]);
    // A reader holding tenant a's key, not tenant b's: a's values open in the first pass, and
    // the call fails after the await, on b's.
    const reader = engine();
    expect(await reader.decryptMany(items)).toHaveLength(3);
    const other = tampered(await writer.encrypt(at("b"), BYTES, short()));
    const mixed = await failing(
      reader,
      [...items, { binding: at("b"), spec: BYTES, stored: other }],
      InvalidCiphertextError,
    );
    expect(mixed).toHaveLength(3);
    expect(mixed.filter((b) => !allZero(b))).toEqual([]);
  });

  test("legacy plaintext: the caller's arrays are left alone, the engine's own zeroed", async () => {
    const { writer, engine } = await setup(true);
    const sealed = await writer.encrypt(at("a"), BYTES, short());
    // Not queued: a warm reader fails on it in the first pass, then opens `sealed`'s batch.
    const bad = tampered(await writer.encrypt(at("a"), BYTES, long()));
    for (const reader of [writer, engine()]) {
      const callers = [new Uint8Array([9, 8, 7]), new Uint8Array([6, 5])];
      const items: DecryptItem[] = [
        { binding: at("a"), spec: BYTES, stored: callers[0] as Uint8Array },
        { binding: at("a"), spec: BYTES, stored: sealed },
        // Legacy text read as bytes: an array the engine made from the text.
        { binding: at("a"), spec: BYTES, stored: "plain text" },
        { binding: at("a"), spec: BYTES, stored: callers[1] as Uint8Array },
        { binding: at("a"), spec: BYTES, stored: callers[0] as Uint8Array },
        { binding: at("a"), spec: BYTES, stored: bad },
      ];
      const opened = await failing(reader, items, InvalidCiphertextError);
      expect(opened).toHaveLength(2);
      expect(opened.filter((b) => !allZero(b))).toEqual([]);
      expect(callers).toEqual([new Uint8Array([9, 8, 7]), new Uint8Array([6, 5])]);
    }
  });
});
