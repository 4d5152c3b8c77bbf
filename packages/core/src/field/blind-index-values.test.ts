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

/** decimal.js as Prisma's Decimal: methods on the prototype, toJSON() gives the decimal text. */
class FakeDecimal {
  readonly #text: string;
  constructor(text: string) {
    this.#text = text;
  }
  toFixed(): string {
    return this.#text;
  }
  isNaN(): boolean {
    return this.#text === "NaN";
  }
  toJSON(): string {
    return this.#text;
  }
}
const withoutPrototype = Object.assign(Object.create(null) as object, { b: [true], a: "x" });
const throwingGetter = {
  get a(): never {
    throw new TypeError("getter failed");
  },
};
const holey: unknown[] = [1];
holey[2] = 3;
const cyclic: { self?: unknown } = {};
cyclic.self = [cyclic];

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
    [
      new FakeDecimal("12.50"),
      "GvV22ndUGborjHS06ltgSg",
      "GvV22ndUGborjHS06ltgSubtwc5bhbFXGuLhrRKD1To",
    ],
    [withoutPrototype, "QuR27z5dYVQflfMLOqMa5w", "QuR27z5dYVQflfMLOqMa54h-KQWuSoSTPG2YVb25x3k"],
    [
      JSON.parse('{"__proto__":{"x":"\\ud800é"},"2":-0,"1":[]}') as unknown,
      "aVz1h7daEMcsij2AfcClfw",
      "aVz1h7daEMcsij2AfcClf-cdjrRQr-UPNGVfIakKKi4",
    ],
  ])("%j keeps its index", async (value, short, full) => {
    const e = engine();
    expect(await e.blindIndex(at, {}, value)).toBe(short);
    expect(await e.blindIndex(at, { bytes: 32 }, value)).toBe(full);
  });

  test.each([
    ["NaN", Number.NaN, /cannot take NaN or ±Infinity/],
    ["Infinity", Number.POSITIVE_INFINITY, /cannot take NaN or ±Infinity/],
    ["-Infinity", Number.NEGATIVE_INFINITY, /cannot take NaN or ±Infinity/],
    ["a boxed NaN", new Number(Number.NaN), /cannot take an instance of Number/],
    ["NaN inside an object", { a: Number.NaN }, /cannot take NaN or ±Infinity at \$\.<member 1>/],
    ["Infinity inside an array", [1, Number.POSITIVE_INFINITY], /cannot take NaN or ±Infinity/],
    ["a toJSON() returning NaN", { toJSON: () => Number.NaN }, /cannot take a toJSON\(\) method/],
    ["null", null, /cannot take null/],
    ["an invalid Date", new Date(Number.NaN), /cannot take null/],
    ["a toJSON() returning null", { toJSON: () => null }, /cannot take a toJSON\(\) method/],
    ["undefined", undefined, /must have a JSON form, got undefined/],
    ["a function", () => 1, /must have a JSON form, got function/],
    ["a symbol", Symbol("s"), /must have a JSON form, got symbol/],
    ["a toJSON() returning undefined", { toJSON: () => undefined }, /a toJSON\(\) method/],
    ["a bigint", 10n, /cannot take a bigint/],
    ["a bigint inside an object", { n: 10n }, /cannot take a bigint at \$\.<member 1>/],
    ["an undefined member", { a: 1, b: undefined }, /cannot take undefined at \$\.<member 2>/],
    ["an undefined element", [undefined], /cannot take undefined at \$\[0\]/],
    ["an array hole", holey, /cannot take a hole at \$\[1\]/],
    ["a Map", new Map([["k", "v"]]), /cannot take an instance of Map:/],
    ["a Uint8Array", Uint8Array.of(1), /cannot take an instance of Uint8Array/],
    ["a Buffer", Buffer.of(1), /cannot take an instance of Buffer/],
    ["a Date inside an object", { d: new Date(0) }, /cannot take a Date at \$\.<member 1>/],
    ["a decimal object inside an array", [new FakeDecimal("1")], /an instance of FakeDecimal/],
    ["a decimal object that is NaN", new FakeDecimal("NaN"), /not a finite decimal/],
    ["a cycle", cyclic, /cannot take a cycle at \$\.<member 1>\[0\]/],
    ["a throwing getter", throwingGetter, /must be JSON-serializable/],
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

  test("a value JSON writes as another is refused, and that other keeps its index", async () => {
    const e = engine();
    const pairs: [unknown, unknown][] = [
      [{ a: undefined }, {}],
      [[undefined], [null]],
      [new Map([["k", "v"]]), {}],
      [new Set([1]), {}],
      [Uint8Array.of(1), { "0": 1 }],
      [Buffer.of(1), { type: "Buffer", data: [1] }],
      [{ secret: 1, toJSON: () => ({ other: 2 }) }, { other: 2 }],
      [{ at: new Date(0) }, { at: "1970-01-01T00:00:00.000Z" }],
      [[new FakeDecimal("1.5")], ["1.5"]],
      [Object.create({ inherited: 1 }) as object, {}],
    ];
    for (const [value, twin] of pairs) {
      await expect(e.blindIndex(at, {}, value)).rejects.toBeInstanceOf(ValidationError);
      expect(await e.blindIndex(at, {}, twin)).toMatch(/^[\w-]{22}$/);
    }
  });

  test("-0 indexes as 0: JSON writes both as 0, and they are equal", async () => {
    const e = engine();
    expect(await e.blindIndex(at, {}, -0)).toBe(await e.blindIndex(at, {}, 0));
    expect(await e.blindIndex(at, {}, [-0])).toBe(await e.blindIndex(at, {}, [0]));
  });

  test("a throwing getter's error is the cause", async () => {
    const error = await engine()
      .blindIndex(at, {}, throwingGetter)
      .catch((caught: unknown) => caught);
    expect((error as Error).cause).toBeInstanceOf(TypeError);
  });
});
