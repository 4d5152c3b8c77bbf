/**
 * docs/FORMAT.md §2 re-implemented from the spec (spec-context.ts) and held against @kms/core's
 * encoder and decoder in both directions.
 */
import { Buffer } from "node:buffer";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decodeEncryptionContext,
  encodeEncryptionContext,
  ValidationError,
} from "../../src/index.ts";
import {
  contextFromMap,
  SpecFormatError,
  specDecodeContext,
  specEncodeContext,
} from "./spec-context.ts";

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const fromHex = (text: string) => new Uint8Array(Buffer.from(text.replace(/[\s|]/g, ""), "hex"));

describe("FORMAT §2: canonical encryption context", () => {
  it("encodes the spec's example byte for byte, like the library", () => {
    const expected = "0002 0001 61 0000 0001 62 0001 32";
    expect(hex(specEncodeContext({ b: "2", a: "" }))).toBe(hex(fromHex(expected)));
    expect(hex(encodeEncryptionContext({ b: "2", a: "" }))).toBe(hex(fromHex(expected)));
  });

  it("encodes the empty context as zero bytes (§2.1)", () => {
    expect(specEncodeContext({}).length).toBe(0);
    expect(encodeEncryptionContext({}).length).toBe(0);
    expect(encodeEncryptionContext(undefined).length).toBe(0);
  });

  it("sorts by UTF-8 bytes, not UTF-16 code units: U+FFFF before U+10000 (§2.3)", () => {
    // JavaScript's sort puts "\u{10000}" (D800 DC00) before "\uFFFF"; UTF-8 puts EF BF BF
    // before F0 90 80 80. Same for U+E000 (private use) against any astral key.
    const context = { "\u{10000}": "astral", "\uFFFF": "bmp", "\uE000": "pua", z: "ascii" };
    expect(Object.keys(context).sort()).toEqual(["z", "\u{10000}", "\uE000", "\uFFFF"]);
    const ours = specEncodeContext(context);
    expect(hex(encodeEncryptionContext(context))).toBe(hex(ours));
    const order = [...specDecodeContext(ours).keys()];
    expect(order).toEqual(["z", "\uE000", "\uFFFF", "\u{10000}"]);
  });

  it("matches the library on arbitrary Unicode contexts, in both directions", () => {
    const key = fc.string({ unit: "grapheme", minLength: 1, maxLength: 6 });
    const value = fc.string({ unit: "grapheme", maxLength: 8 });
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 8 }), (context) => {
        const ours = specEncodeContext(context);
        const theirs = encodeEncryptionContext(context);
        expect(hex(theirs)).toBe(hex(ours));
        expect(decodeEncryptionContext(ours)).toEqual(contextFromMap(specDecodeContext(theirs)));
      }),
      { numRuns: 300 },
    );
  });

  it("keeps a leading U+FEFF in keys and values (§2.6)", () => {
    const context = { "\uFEFFkey": "\uFEFFvalue" };
    const encoded = encodeEncryptionContext(context);
    expect(hex(encoded)).toBe(hex(specEncodeContext(context)));
    expect(hex(encoded)).toContain("efbbbf6b6579");
    expect(decodeEncryptionContext(encoded)).toEqual(context);
    expect(Object.fromEntries(specDecodeContext(encoded))).toEqual(context);
  });

  it("treats an own key named __proto__ as a key", () => {
    const context = JSON.parse('{"__proto__": "x", "a": "b"}') as Record<string, string>;
    const encoded = specEncodeContext(context);
    expect(encoded.length).toBeGreaterThan(0);
    expect(hex(encodeEncryptionContext(context))).toBe(hex(encoded));
    const decoded = decodeEncryptionContext(encoded);
    expect(Object.keys(decoded)).toEqual(["__proto__", "a"]);
  });

  it("refuses what §2.4 and §2.5 refuse, like the library", () => {
    const junk: unknown[] = [{ "": "x" }, { a: 1 }, { a: null }, { a: "x".repeat(8192) }];
    for (const context of junk) {
      expect(() => specEncodeContext(context as Record<string, string>)).toThrow(SpecFormatError);
      expect(() => encodeEncryptionContext(context as Record<string, string>)).toThrow(
        ValidationError,
      );
    }
  });

  it("allows exactly 8192 bytes and refuses 8193 (§2.5)", () => {
    // 2 (count) + 2 + 1 ("k") + 2 + value = 8192 → value of 8185 bytes.
    const max = { k: "v".repeat(8185) };
    expect(specEncodeContext(max).length).toBe(8192);
    expect(encodeEncryptionContext(max).length).toBe(8192);
    const over = { k: "v".repeat(8186) };
    expect(() => specEncodeContext(over)).toThrow(SpecFormatError);
    expect(() => encodeEncryptionContext(over)).toThrow(ValidationError);
  });

  it("refuses strings that are not well-formed Unicode (§2.4)", () => {
    // TextEncoder would write both lone surrogates as EF BF BD: two keys, one encoding.
    for (const context of [{ "\uD800": "x" }, { a: "\uDC00" }, { "\uD800": "a", "\uDC00": "b" }]) {
      expect(() => specEncodeContext(context)).toThrow(SpecFormatError);
      expect(() => encodeEncryptionContext(context)).toThrow(ValidationError);
    }
  });

  describe("decoder refusals (§2.6)", () => {
    const valid = specEncodeContext({ a: "1", b: "2" });
    const cases: [string, Uint8Array][] = [
      ["truncated", valid.subarray(0, valid.length - 1)],
      ["trailing byte", Uint8Array.from([...valid, 0])],
      ["count of zero", fromHex("0000")],
      ["count of zero with a pair", fromHex("0000 0001 61 0000")],
      ["empty key", fromHex("0001 0000 0001 61")],
      ["keys out of order", fromHex("0002 0001 62 0000 0001 61 0000")],
      ["duplicated key", fromHex("0002 0001 61 0000 0001 61 0000")],
      ["invalid UTF-8 in a key", fromHex("0001 0001 ff 0000")],
      ["invalid UTF-8 in a value", fromHex("0001 0001 61 0001 c0")],
      ["an encoded surrogate", fromHex("0001 0003 eda080 0000")],
      ["overlong encoding", fromHex("0001 0002 c1bf 0000")],
      ["count larger than the pairs", fromHex("0002 0001 61 0000")],
      ["a single byte", fromHex("00")],
      ["more than 8192 bytes", fromHex(`0001 0001 61 1ffc ${"76".repeat(8188)}`)],
    ];
    it.each(cases)("%s", (_name, bytes) => {
      expect(() => specDecodeContext(bytes)).toThrow(SpecFormatError);
      expect(() => decodeEncryptionContext(bytes)).toThrow();
    });

    it("orders keys by bytes: a key that is a prefix of another comes first", () => {
      const bytes = fromHex("0002 0001 61 0000 0002 6161 0000");
      expect([...specDecodeContext(bytes).keys()]).toEqual(["a", "aa"]);
      expect(Object.keys(decodeEncryptionContext(bytes))).toEqual(["a", "aa"]);
      const reversed = fromHex("0002 0002 6161 0000 0001 61 0000");
      expect(() => specDecodeContext(reversed)).toThrow(SpecFormatError);
      expect(() => decodeEncryptionContext(reversed)).toThrow();
    });
  });
});
