import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { InvalidCiphertextError, isKmsError, ValidationError } from "../errors.ts";
import { createKms } from "../kms.ts";
import { MemoryDataKeyStore } from "./data-key-store.ts";
import { FieldEncryptionEngine } from "./field-encryption-engine.ts";
import { fromFieldText, toFieldText } from "./field-format.ts";
import { decodeFieldValue, encodeFieldValue, type FieldValueType } from "./value-codec.ts";

const arbitraries: [FieldValueType, fc.Arbitrary<unknown>][] = [
  ["string", fc.string({ unit: "grapheme" })],
  ["bytes", fc.uint8Array()],
  ["number", fc.double()],
  ["boolean", fc.boolean()],
  ["date", fc.date({ noInvalidDate: true })],
  ["bigint", fc.bigInt()],
  ["json", fc.jsonValue().map((v) => JSON.parse(JSON.stringify(v)) as unknown)],
];

describe("field value codec (FORMAT §6.3)", () => {
  test.each(arbitraries)("%s values round-trip through tag || payload", (type, arbitrary) => {
    fc.assert(
      fc.property(arbitrary, (value) => {
        const encoded = encodeFieldValue("f", type, value);
        expect(decodeFieldValue(type, encoded)).toEqual(value);
      }),
    );
  });

  test("every NaN encodes as the one canonical NaN; -0 keeps its sign", () => {
    const raw = new DataView(new ArrayBuffer(8));
    raw.setBigUint64(0, 0x7ff8_0000_0000_0001n);
    const payloadNaN = raw.getFloat64(0);
    expect(Number.isNaN(payloadNaN)).toBe(true);
    const canonical = encodeFieldValue("f", "number", Number.NaN);
    expect(Buffer.from(canonical).toString("hex")).toBe("037ff8000000000000");
    expect(encodeFieldValue("f", "number", payloadNaN)).toEqual(canonical);
    const negativeZero = decodeFieldValue("number", encodeFieldValue("f", "number", -0));
    expect(Object.is(negativeZero, -0)).toBe(true);
  });

  test("a payload that does not parse fails without quoting it, also in the cause", () => {
    const secret = '{"card":"4111 1111 1111 1111"';
    const cases: [FieldValueType, Uint8Array][] = [
      ["json", Uint8Array.of(0x08, ...new TextEncoder().encode(secret))],
      ["bigint", Uint8Array.of(0x06, ...new TextEncoder().encode("4111x1111"))],
    ];
    for (const [type, plaintext] of cases) {
      let error: unknown;
      try {
        decodeFieldValue(type, plaintext);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(InvalidCiphertextError);
      const err = error as Error;
      const seen = `${err.message} ${String(err.cause)} ${(err.cause as Error | undefined)?.message}`;
      expect(seen).not.toContain("4111");
    }
  });

  test("a value decoded under another declared type is InvalidCiphertext", () => {
    fc.assert(
      fc.property(fc.string(), (value) => {
        expect(() => decodeFieldValue("number", encodeFieldValue("f", "string", value))).toThrow(
          InvalidCiphertextError,
        );
      }),
    );
  });

  test("a json value is JSON data: what JSON.stringify would drop or rewrite is refused, not stored", () => {
    const holey: unknown[] = [1];
    holey[2] = 3;
    const cyclic: Record<string, unknown> = {};
    cyclic.again = cyclic;
    const cases: [unknown, string][] = [
      [new Map([["k", "v"]]), "an instance of Map: JSON writes only plain objects and arrays"],
      [{ tags: new Set(["a"]) }, "an instance of Set at $.<member 1>"],
      [{ a: 1, gone: undefined }, "undefined at $.<member 2>: JSON leaves the member out"],
      [[undefined], "undefined at $[0]: JSON writes it as null"],
      [holey, "a hole at $[1]"],
      [Number.NaN, "NaN or ±Infinity: JSON writes them as null"],
      [{ rate: Number.POSITIVE_INFINITY }, "NaN or ±Infinity at $.<member 1>"],
      [{ toJSON: () => undefined }, "a toJSON() method: JSON writes what it returns"],
      [{ toJSON: () => "2026-12-06" }, "a toJSON() method"],
      [new Date(0), "a Date: JSON writes it as a string"],
      [{ at: new Date(0) }, "a Date at $.<member 1>"],
      [Uint8Array.of(1), "an instance of Uint8Array"],
      [{ n: 1n }, "a bigint at $.<member 1>"],
      [cyclic, "a cycle at $.<member 1>"],
    ];
    for (const [value, rule] of cases) {
      expect(() => encodeFieldValue("doc", "json", value)).toThrow(ValidationError);
      expect(() => encodeFieldValue("doc", "json", value)).toThrow(
        `"doc" is declared as json but holds ${rule}`,
      );
    }
  });

  test("a json value keeps its bytes: JSON.stringify's text, null included", () => {
    const bare = Object.assign(Object.create(null) as object, { b: [null, -0], a: "\ud800" });
    for (const value of [null, 0, "x", [], {}, bare, { z: { y: [1.5, true, null] } }]) {
      const encoded = encodeFieldValue("doc", "json", value);
      expect(Buffer.from(encoded.subarray(1)).toString("utf8")).toBe(JSON.stringify(value));
      expect(decodeFieldValue("json", encoded)).toEqual(JSON.parse(JSON.stringify(value)));
    }
  });

  test("a Map in a json field is refused before any KMS call, in both modes", async () => {
    let calls = 0;
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const counting = new Proxy(kms, {
      get(target, name, receiver) {
        const member = Reflect.get(target, name, receiver) as unknown;
        if (typeof member !== "function") return member;
        return (...args: unknown[]) => {
          calls += 1;
          return (member as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const engine = new FieldEncryptionEngine({
      kms: counting,
      keyId,
      dataKeyStore: new MemoryDataKeyStore(),
    });
    const binding = { model: "M", field: "prefs", context: {} };
    for (const mode of ["randomized", "deterministic"] as const) {
      await expect(
        engine.encrypt(binding, { type: "json", mode }, new Map([["theme", "dark"]])),
      ).rejects.toThrow('"prefs" is declared as json but holds an instance of Map');
    }
    expect(calls).toBe(0);
  });

  test("text form round-trips any bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array(), (bytes) => {
        expect(fromFieldText(toFieldText(bytes))).toEqual(bytes);
      }),
    );
  });

  test("decryptText of arbitrary strings fails only with InvalidCiphertext", async () => {
    const kms = await createKms();
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const engine = new FieldEncryptionEngine({
      kms,
      keyId,
      dataKeyStore: new MemoryDataKeyStore(),
    });
    const binding = { model: "M", field: "f", context: {} };
    const valid = await engine.encryptText(binding, { type: "string" }, "x");
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.string(),
          fc.string().map((s) => `kms1:${s}`),
          fc
            .uint8Array({ minLength: 30, maxLength: 80 })
            .map((b) => toFieldText(Uint8Array.of(0xc1, ...b))),
          fc
            .nat({ max: valid.length - 6 })
            .map((i) => `${valid.slice(0, 5 + i)}${valid.slice(6 + i)}`),
        ),
        async (text) => {
          const error = await engine.decryptText(binding, { type: "string" }, text).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(isKmsError(error) && error.code).toBe("InvalidCiphertextException");
        },
      ),
    );
  });
});
