import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import type { KmsLike } from "../kms-like.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine } from "./field-encryption-engine.ts";

/**
 * Blind indexes of non-string values (FORMAT §6.5): the JSON text of the value, so values that
 * JSON writes alike (NaN, ±Infinity and null all as `null`) would match each other. Those are
 * refused; every value that indexed before keeps its index, byte for byte, or stored indexes
 * would stop matching.
 */

const ARN = "arn:aws:kms:local:000000000000:key/fixed";
/** A fixed stable data key (bytes 1..32), so that indexes are known answers. */
const fixedKey = () => new Uint8Array(32).map((_, i) => i + 1);
const fixedKms = {
  generateDataKey: async () => ({
    plaintext: fixedKey(),
    ciphertextBlob: Uint8Array.of(9, 9, 9),
    keyId: ARN,
  }),
  decrypt: async () => ({
    plaintext: fixedKey(),
    keyId: ARN,
    encryptionAlgorithm: "SYMMETRIC_DEFAULT",
  }),
} as unknown as KmsLike;

function engine(): FieldEncryptionEngine {
  return new FieldEncryptionEngine({
    kms: fixedKms,
    dataKeyStore: new MemoryDataKeyStore(),
    keyId: "fixed",
  });
}

const at = { model: "User", field: "emailIndex", context: { tenantId: "t1" } };

describe("blind indexes of values", () => {
  // Computed by the engine before non-JSON values were refused; they must never change.
  test.each([
    ["alice@example.com", "QmkmRFlUyRMtQv2ErEXtsg", "QmkmRFlUyRMtQv2ErEXtsm3njW6Izww1n69TIa_AAdQ"],
    [42, "kA0NpuupUwoBbVEO5GUCiA", "kA0NpuupUwoBbVEO5GUCiHWSXZUuujZGKvK08fKaSiI"],
    [-1.5, "8_iQkOK3X4gL7G7NbDOL_w", "8_iQkOK3X4gL7G7NbDOL_ymS-bbpTgAfWdtMF1tEBYg"],
    [true, "15dN_edigE3bA3SDNka5bA", "15dN_edigE3bA3SDNka5bPgJAjaf43Dm-vzkc2JgGEI"],
    [false, "uV_lx6w6b6ckctDvrxl34Q", "uV_lx6w6b6ckctDvrxl34QJ4QJ3MTz2khYqfEH-Idwg"],
    [
      { a: 1, b: [1, "x", null] },
      "LOaLOTeUl0zgh0BuW8xCDQ",
      "LOaLOTeUl0zgh0BuW8xCDexamKzGBdWCnAKPfxyLTsI",
    ],
    [[1, 2], "P7NKVzYVnb2IgUARB_I19Q", "P7NKVzYVnb2IgUARB_I19T67UcLX-LeoA2PwQpdJbvM"],
    [new Date(0), "61V1W0M7VwbwTSb0C-QYOg", "61V1W0M7VwbwTSb0C-QYOvOEJvZW95ZMqTmjJ7HxVO0"],
    [{ a: null }, "eTAK3xQYnyNx7UnjzbYZTw", "eTAK3xQYnyNx7UnjzbYZT15Hv3h02vDVRlJexdCCngU"],
  ])("%j keeps its index", async (value, short, full) => {
    const e = engine();
    expect(await e.blindIndex(at, {}, value)).toBe(short);
    expect(await e.blindIndex(at, { bytes: 32 }, value)).toBe(full);
  });

  test.each([
    ["NaN", Number.NaN, /cannot take NaN or ±Infinity/],
    ["Infinity", Number.POSITIVE_INFINITY, /cannot take NaN or ±Infinity/],
    ["-Infinity", Number.NEGATIVE_INFINITY, /cannot take NaN or ±Infinity/],
    ["a boxed NaN", new Number(Number.NaN), /cannot take NaN or ±Infinity/],
    ["NaN inside an object", { a: Number.NaN }, /cannot take NaN or ±Infinity/],
    ["Infinity inside an array", [1, Number.POSITIVE_INFINITY], /cannot take NaN or ±Infinity/],
    ["a toJSON() returning NaN", { toJSON: () => Number.NaN }, /cannot take NaN or ±Infinity/],
    ["null", null, /cannot take null/],
    ["an invalid Date", new Date(Number.NaN), /cannot take null/],
    ["a toJSON() returning null", { toJSON: () => null }, /cannot take null/],
    ["undefined", undefined, /must have a JSON form, got undefined/],
    ["a function", () => 1, /must have a JSON form, got function/],
    ["a symbol", Symbol("s"), /must have a JSON form, got symbol/],
    ["a toJSON() returning undefined", { toJSON: () => undefined }, /must have a JSON form/],
    ["a bigint", 10n, /cannot take a bigint/],
    ["a bigint inside an object", { n: 10n }, /must be JSON-serializable/],
  ])("%s is refused, naming the field, before any KMS call", async (_name, value, message) => {
    let calls = 0;
    const counting = {
      generateDataKey: async () => {
        calls += 1;
        return fixedKms.generateDataKey({ keyId: "fixed" });
      },
    } as unknown as KmsLike;
    const e = new FieldEncryptionEngine({
      kms: counting,
      dataKeyStore: new MemoryDataKeyStore(),
      keyId: "fixed",
    });
    const error = await e.blindIndex(at, {}, value).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toMatch(/^"emailIndex": a blind index /);
    expect((error as Error).message).toMatch(message);
    expect(calls).toBe(0);
  });

  test("NaN, Infinity and -Infinity no longer share null's index", async () => {
    const e = engine();
    const seen = new Set<string>();
    for (const value of [0, -1, 1, "null", "NaN", { a: null }]) {
      seen.add(await e.blindIndex(at, {}, value));
    }
    expect(seen.size).toBe(6);
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, null]) {
      await expect(e.blindIndex(at, {}, value)).rejects.toBeInstanceOf(ValidationError);
    }
  });
});
