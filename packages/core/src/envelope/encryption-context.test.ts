import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { ValidationError } from "../errors.ts";
import {
  decodeEncryptionContext,
  encodeEncryptionContext,
  MAX_ENCRYPTION_CONTEXT_BYTES,
} from "./encryption-context.ts";

/** Keys may be any non-empty string, including astral characters and "__proto__". */
const contextKey = fc.oneof(
  fc.string({ minLength: 1, maxLength: 12, unit: "grapheme" }),
  fc.constantFrom("__proto__", "constructor", "toString", "\u{1F600}", "\uFF61", "a"),
);
const contextValue = fc.string({ maxLength: 20, unit: "grapheme" });
const context = fc
  .uniqueArray(fc.tuple(contextKey, contextValue), { selector: ([k]) => k, maxLength: 12 })
  .map((pairs) => pairs);

/** Builds a context object in the given pair order (defineProperty keeps "__proto__" a key). */
function fromPairs(pairs: readonly (readonly [string, string])[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of pairs) {
    Object.defineProperty(out, k, {
      value: v,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

describe("encodeEncryptionContext", () => {
  test("the encoding does not depend on the order of the pairs", () => {
    fc.assert(
      fc.property(
        context.chain((pairs) =>
          fc.tuple(
            fc.constant(pairs),
            fc.shuffledSubarray(pairs, {
              minLength: pairs.length,
              maxLength: pairs.length,
            }),
          ),
        ),
        ([pairs, shuffled]) => {
          expect(hex(encodeEncryptionContext(fromPairs(shuffled)))).toBe(
            hex(encodeEncryptionContext(fromPairs(pairs))),
          );
        },
      ),
    );
  });

  test("matches a plain reference encoder, for many pairs and long ASCII or other text", () => {
    // The encoder sorts small contexts by insertion and larger ones with Array#sort, and copies
    // short ASCII text itself: this reference (FORMAT §2, written the obvious way) checks both
    // sides of each choice.
    const reference = (pairs: readonly (readonly [string, string])[]): string => {
      const sorted = [...pairs].sort(([a], [b]) =>
        Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")),
      );
      const parts: Buffer[] = [Buffer.from([sorted.length >> 8, sorted.length & 0xff])];
      for (const [k, v] of sorted) {
        for (const text of [k, v]) {
          const bytes = Buffer.from(text, "utf8");
          parts.push(Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes);
        }
      }
      return sorted.length === 0 ? "" : Buffer.concat(parts).toString("hex");
    };
    const text = fc.oneof(
      fc.string({ maxLength: 100 }),
      fc.string({ maxLength: 80, unit: "grapheme" }),
    );
    const key = fc.oneof(
      fc.string({ minLength: 1, maxLength: 70 }),
      fc.string({ minLength: 1, maxLength: 8, unit: "grapheme" }),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.tuple(key, text), { selector: ([k]) => k, maxLength: 40, size: "max" }),
        (pairs) => {
          expect(hex(encodeEncryptionContext(fromPairs(pairs)))).toBe(reference(pairs));
        },
      ),
    );
  });

  test("decode(encode(x)) == x", () => {
    fc.assert(
      fc.property(context, (pairs) => {
        const decoded = decodeEncryptionContext(encodeEncryptionContext(fromPairs(pairs)));
        expect(Object.entries(decoded).sort()).toEqual(pairs.map(([k, v]) => [k, v]).sort());
      }),
    );
  });

  test("different contexts encode differently (the encoding is injective)", () => {
    fc.assert(
      fc.property(context, context, (a, b) => {
        const same = JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());
        const encodedSame =
          hex(encodeEncryptionContext(fromPairs(a))) === hex(encodeEncryptionContext(fromPairs(b)));
        expect(encodedSame).toBe(same);
      }),
    );
  });

  test("moving a separator between key and value changes the encoding", () => {
    const a = encodeEncryptionContext({ ab: "c" });
    const b = encodeEncryptionContext({ a: "bc" });
    expect(hex(a)).not.toBe(hex(b));
  });

  test("no context and the empty context both encode to zero bytes", () => {
    expect(encodeEncryptionContext(undefined)).toHaveLength(0);
    expect(encodeEncryptionContext({})).toHaveLength(0);
  });

  test("matches the byte layout of docs/FORMAT.md: count, then sorted length-prefixed pairs", () => {
    expect(hex(encodeEncryptionContext({ b: "2", a: "" }))).toBe(
      ["0002", "0001", "61", "0000", "0001", "62", "0001", "32"].join(""),
    );
  });

  test("keys are sorted by UTF-8 bytes, not UTF-16 code units", () => {
    // U+FF61 sorts after U+1F600 in UTF-16 (0xFF61 > 0xD83D) but before it in UTF-8.
    const encoded = encodeEncryptionContext({ "\u{1F600}": "x", "\uFF61": "y" });
    const firstKeyLength = (encoded[2]! << 8) | encoded[3]!;
    expect(Buffer.from(encoded.subarray(4, 4 + firstKeyLength)).toString("utf8")).toBe("\uFF61");
  });

  test(`a context encoding to more than ${MAX_ENCRYPTION_CONTEXT_BYTES} bytes → ValidationError`, () => {
    // 2 (count) + 4 (lengths) + 1 (key) + value
    const fits = { k: "v".repeat(MAX_ENCRYPTION_CONTEXT_BYTES - 7) };
    expect(encodeEncryptionContext(fits)).toHaveLength(MAX_ENCRYPTION_CONTEXT_BYTES);
    const over = { k: "v".repeat(MAX_ENCRYPTION_CONTEXT_BYTES - 6) };
    expect(() => encodeEncryptionContext(over)).toThrow(ValidationError);
  });

  test.each([
    ["null", null],
    ["a string", "a=b"],
    ["a number", 1],
    ["an array", [["a", "b"]]],
    ["a Map", new Map([["a", "b"]])],
    ["a Date", new Date(0)],
    ["bytes", new Uint8Array([1])],
    ["a number value", { a: 1 }],
    ["a null value", { a: null }],
    ["an undefined value", { a: undefined }],
    ["an object value", { a: {} }],
    ["an empty key", { "": "x" }],
  ])("%s → ValidationError naming the argument", (_name, input) => {
    expect(() => encodeEncryptionContext(input as never, "destinationEncryptionContext")).toThrow(
      ValidationError,
    );
    expect(() => encodeEncryptionContext(input as never, "destinationEncryptionContext")).toThrow(
      /destinationEncryptionContext/,
    );
  });

  test("an object without a prototype is accepted", () => {
    const bare = Object.create(null) as Record<string, string>;
    bare.a = "b";
    expect(hex(encodeEncryptionContext(bare))).toBe(hex(encodeEncryptionContext({ a: "b" })));
  });
});

describe("decodeEncryptionContext", () => {
  test("zero bytes decode to the empty context", () => {
    expect(decodeEncryptionContext(new Uint8Array(0))).toEqual({});
  });

  test("every strict prefix of a valid encoding → ValidationError", () => {
    fc.assert(
      fc.property(
        context.filter((p) => p.length > 0),
        fc.nat(),
        (pairs, cut) => {
          const encoded = encodeEncryptionContext(fromPairs(pairs));
          const length = 1 + (cut % (encoded.length - 1));
          expect(() => decodeEncryptionContext(encoded.subarray(0, length))).toThrow(
            ValidationError,
          );
        },
      ),
    );
  });

  test("trailing bytes → ValidationError", () => {
    fc.assert(
      fc.property(
        context.filter((p) => p.length > 0),
        fc.uint8Array({ minLength: 1, maxLength: 8 }),
        (pairs, extra) => {
          const encoded = encodeEncryptionContext(fromPairs(pairs));
          expect(() => decodeEncryptionContext(Buffer.concat([encoded, extra]))).toThrow(
            ValidationError,
          );
        },
      ),
    );
  });

  test("arbitrary bytes either decode to a context that re-encodes to them, or → ValidationError", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        let decoded: Record<string, string>;
        try {
          decoded = decodeEncryptionContext(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(ValidationError);
          return;
        }
        expect(hex(encodeEncryptionContext(decoded))).toBe(hex(bytes));
      }),
      { numRuns: 2000 },
    );
  });

  test.each([
    ["a count of zero", "0000"],
    ["out-of-order keys", ["0002", "0001", "62", "0000", "0001", "61", "0000"].join("")],
    ["a repeated key", ["0002", "0001", "61", "0000", "0001", "61", "0001", "62"].join("")],
    ["invalid UTF-8 in a key", ["0001", "0001", "ff", "0000"].join("")],
    ["invalid UTF-8 in a value", ["0001", "0001", "61", "0001", "c3"].join("")],
    ["a key length past the end", ["0001", "0009", "61"].join("")],
    ["a single byte", "00"],
  ])("%s → ValidationError", (_name, encoded) => {
    expect(() => decodeEncryptionContext(Buffer.from(encoded, "hex"))).toThrow(ValidationError);
  });
});

describe("decodeEncryptionContext given something other than bytes", () => {
  test.each([
    ["undefined", undefined],
    ["null", null],
    ["a string", "\u0000\u0001"],
    ["a number", 2],
    ["an array of bytes", [0, 0]],
    ["an ArrayBuffer", new ArrayBuffer(2)],
    ["an array-like", { length: 2 }],
  ])("%s → ValidationError naming the argument, not a TypeError", (_name, junk) => {
    expect(() => decodeEncryptionContext(junk as never)).toThrow(ValidationError);
    expect(() => decodeEncryptionContext(junk as never)).toThrow(/"bytes" expected a Uint8Array/);
  });
});
