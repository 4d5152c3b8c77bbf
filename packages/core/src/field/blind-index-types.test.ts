import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import type { KmsLike } from "../kms-like.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { type BlindIndexSpec, FieldEncryptionEngine } from "./field-encryption-engine.ts";
import type { FieldValueType } from "./value-codec.ts";

/**
 * Blind indexes of a field of a declared type (FORMAT §6.5): every form the field takes for one
 * value gives one index, so that a row written with one form is found by a lookup with another
 * (Prisma returns decimals as `Prisma.Decimal`, which a lookup hands back). Without a type, the
 * index hashes the form it is given, byte for byte as before.
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

const at = { model: "Order", field: "amountIndex", context: { tenantId: "t1" } };
const source = { model: "Order", field: "amount", context: { tenantId: "t1" } };

/**
 * decimal.js as Prisma's Decimal: `toString()` drops trailing zeros and the sign of zero,
 * `toJSON()` (its valueOf) keeps the sign of zero.
 */
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
  toString(): string {
    const n = Number(this.#text);
    return Object.is(n, -0) ? "0" : String(n);
  }
  toJSON(): string {
    const n = Number(this.#text);
    return Object.is(n, -0) ? "-0" : String(n);
  }
}

async function indexes(
  spec: BlindIndexSpec,
  values: readonly unknown[],
  e = engine(),
): Promise<string[]> {
  const out: string[] = [];
  for (const value of values) out.push(await e.blindIndex(at, spec, value));
  return out;
}

describe("blind indexes of a typed field", () => {
  test("untyped, a decimal's forms index apart (why the type is needed)", async () => {
    const [text, number, decimal] = await indexes({}, ["1.5", 1.5, new FakeDecimal("1.5")]);
    expect(new Set([text, number, decimal]).size).toBe(3);
  });

  test("a decimal given as a string, a number or a decimal object has one index: the string's", async () => {
    const e = engine();
    const typed = await indexes(
      { type: "decimal" },
      ["1.5", 1.5, new FakeDecimal("1.5"), new FakeDecimal("1.50")],
      e,
    );
    expect(new Set(typed).size).toBe(1);
    // The string form keeps the index it had untyped, so rows written with it keep matching.
    expect(typed[0]).toBe(await e.blindIndex(at, {}, "1.5"));
    // 1e21 is written `1e+21` by String(n) and by decimal.js alike.
    const [big, bigDecimal] = await indexes(
      { type: "decimal" },
      [1e21, new FakeDecimal("1e21")],
      e,
    );
    expect(big).toBe(bigDecimal);
    expect(big).toBe(await e.blindIndex(at, {}, "1e+21"));
  });

  test("decimal spellings match exactly when deterministic encryption gives one ciphertext", async () => {
    const e = engine();
    const forms: unknown[] = [
      "1.5",
      "1.50",
      1.5,
      new FakeDecimal("1.50"),
      "-0",
      "0",
      -0,
      0,
      new FakeDecimal("-0"),
      "1E3",
      "1e3",
      1000,
      ".5",
      "0.5",
    ];
    const index = await indexes({ type: "decimal" }, forms, e);
    const sealed: string[] = [];
    for (const form of forms) {
      sealed.push(await e.encryptText(source, { type: "decimal", mode: "deterministic" }, form));
    }
    for (let i = 0; i < forms.length; i++) {
      for (let j = 0; j < forms.length; j++) {
        expect([i, j, index[i] === index[j]]).toStrictEqual([i, j, sealed[i] === sealed[j]]);
      }
    }
    // Normalization applies to the text, as it did to the string: "1E3" matches "1e3" then.
    const lower = await indexes({ type: "decimal", normalize: ["lowercase"] }, ["1E3", "1e3"], e);
    expect(lower[0]).toBe(lower[1]);
  });

  test("a bigint indexes as its digits, the string form the untyped index asked for", async () => {
    const e = engine();
    const [big, negative] = await indexes({ type: "bigint" }, [10n ** 30n, -5n], e);
    expect(big).toBe(await e.blindIndex(at, {}, (10n ** 30n).toString()));
    expect(negative).toBe(await e.blindIndex(at, {}, "-5"));
    await expect(e.blindIndex(at, {}, 5n)).rejects.toThrow(/cannot take a bigint/);
  });

  test("a Uint8Array and a Buffer of the same bytes have one index; other bytes another", async () => {
    const [plain, buffer, other] = await indexes({ type: "bytes" }, [
      Uint8Array.of(1, 2, 3),
      Buffer.from([1, 2, 3]),
      Uint8Array.of(1, 2),
    ]);
    expect(buffer).toBe(plain);
    expect(other).not.toBe(plain);
    const text = await indexes({}, ["\u0001\u0002\u0003"]);
    expect(text[0]).not.toBe(plain);
  });

  // Computed untyped, before types existed (blind-index-values.test.ts): a typed index of the
  // same value must keep them, or stored indexes stop matching.
  test.each<[FieldValueType, unknown, string]>([
    ["string", "alice@example.com", "QmkmRFlUyRMtQv2ErEXtsg"],
    ["number", 42, "kA0NpuupUwoBbVEO5GUCiA"],
    ["number", -1.5, "8_iQkOK3X4gL7G7NbDOL_w"],
    ["boolean", true, "15dN_edigE3bA3SDNka5bA"],
    ["boolean", false, "uV_lx6w6b6ckctDvrxl34Q"],
    ["date", new Date(0), "61V1W0M7VwbwTSb0C-QYOg"],
    ["json", { a: 1, b: [1, "x", null] }, "LOaLOTeUl0zgh0BuW8xCDQ"],
    ["json", [1, 2], "P7NKVzYVnb2IgUARB_I19Q"],
    ["json", 42, "kA0NpuupUwoBbVEO5GUCiA"],
    ["json", "alice@example.com", "QmkmRFlUyRMtQv2ErEXtsg"],
  ])("a %s keeps its untyped index (%j)", async (type, value, index) => {
    const e = engine();
    const at2 = { model: "User", field: "emailIndex", context: { tenantId: "t1" } };
    expect(await e.blindIndex(at2, { type }, value)).toBe(index);
  });

  test("-0 indexes as 0 for a number, as untyped", async () => {
    const [minus, zero] = await indexes({ type: "number" }, [-0, 0]);
    expect(minus).toBe(zero);
  });

  test("a Date whose own toJSON() or toISOString() says otherwise indexes as its time", async () => {
    const e = engine();
    const lying = Object.assign(new Date(0), {
      toJSON: () => "2000-01-01T00:00:00.000Z",
      toISOString: () => "2000-01-01T00:00:00.000Z",
    });
    expect(await e.blindIndex(at, { type: "date" }, lying)).toBe(
      await e.blindIndex(at, { type: "date" }, new Date(0)),
    );
  });

  test.each<[FieldValueType, string, unknown, RegExp]>([
    [
      "date",
      "an ISO string",
      "1970-01-01T00:00:00.000Z",
      /of a date field takes a valid Date, got string/,
    ],
    ["date", "a number", 0, /takes a valid Date, got number/],
    ["date", "an invalid Date", new Date(Number.NaN), /takes a valid Date, got a Date/],
    [
      "date",
      "an object inheriting from Date",
      Object.create(Date.prototype),
      /takes a valid Date, got a Date/,
    ],
    [
      "decimal",
      "a string outside the grammar",
      "1,5",
      /takes a decimal string, .*got a string outside the decimal grammar/,
    ],
    ["decimal", "NaN", Number.NaN, /takes a decimal string, .*got number/],
    ["decimal", "a NaN decimal object", new FakeDecimal("NaN"), /got object/],
    ["decimal", "null", null, /got null/],
    ["number", "a string", "1.5", /of a number field takes a number, got string/],
    ["number", "NaN", Number.NaN, /cannot take NaN or ±Infinity/],
    ["boolean", "a string", "true", /of a boolean field takes a boolean, got string/],
    ["bigint", "a string", "10", /of a bigint field takes a bigint, got string/],
    ["bigint", "a number", 10, /takes a bigint, got number/],
    ["string", "a number", 5, /of a string field takes a string, got number/],
    ["string", "a decimal object", new FakeDecimal("1"), /takes a string, got object/],
    ["bytes", "a string", "AQID", /of a bytes field takes a Uint8Array, got string/],
    ["bytes", "an array", [1, 2, 3], /takes a Uint8Array, got object/],
    ["json", "a Date", new Date(0), /of a json field takes JSON data, got a Date/],
    [
      "json",
      "a decimal object",
      new FakeDecimal("1.5"),
      /of a json field takes JSON data, got object/,
    ],
    ["json", "null", null, /cannot take null/],
    [
      "json",
      "an array with an extra member",
      Object.assign([1, 2], { extra: 3 }),
      /a member that is not an element at \$\.<member 3>/,
    ],
  ])(
    "a %s field refuses %s, naming the index, before any KMS call",
    async (type, _label, value, message) => {
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
      const error = await e.blindIndex(at, { type }, value).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(/^"amountIndex": a blind index /);
      expect((error as Error).message).toMatch(message);
      expect(calls).toBe(0);
    },
  );

  test("an error never quotes the value", async () => {
    const error = await engine()
      .blindIndex(at, { type: "decimal" }, "4111-1111")
      .catch((caught: unknown) => caught);
    expect((error as Error).message).not.toMatch(/4111/);
  });

  test("an unknown type is refused", async () => {
    await expect(engine().blindIndex(at, { type: "text" as FieldValueType }, "x")).rejects.toThrow(
      /"type" of a blind index must be one of string, bytes/,
    );
  });
});
