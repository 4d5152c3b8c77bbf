import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { InvalidCiphertextError, isKmsError } from "../errors.ts";
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

  test("a json value that serializes to nothing is refused when written, not unreadable later", () => {
    for (const value of [{ toJSON: () => undefined }, { toJSON: () => () => 1 }]) {
      expect(() => encodeFieldValue("doc", "json", value)).toThrow(
        '"doc" is declared as json but serializes to nothing',
      );
    }
    // A toJSON with a value keeps working.
    const dated = { toJSON: () => "2026-12-06" };
    expect(decodeFieldValue("json", encodeFieldValue("doc", "json", dated))).toBe("2026-12-06");
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
