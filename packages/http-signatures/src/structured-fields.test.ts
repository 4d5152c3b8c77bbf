import { ValidationError } from "@kms/core";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  Decimal,
  type InnerList,
  type Item,
  parseDictionary,
  parseItem,
  parseList,
  parseSharedDictionary,
  serializeDictionary,
  serializeItem,
  serializeList,
  Token,
} from "./structured-fields.ts";

describe("structured fields (RFC 8941)", () => {
  it("parses and re-serializes every bare item type with parameters", () => {
    const text =
      'a=1, b=-2.5, c="q\\"s", d=tok/en:x, e=:aGVsbG8=:, f=?0, g;p=?1;q="x", h=(1 "two" t);l=1';
    const dict = parseDictionary(text);
    expect(dict.get("a")).toEqual({ value: 1, params: new Map() });
    expect(dict.get("b")).toEqual({ value: new Decimal(-2.5), params: new Map() });
    expect(dict.get("c")).toMatchObject({ value: 'q"s' });
    expect((dict.get("d") as { value: Token }).value).toEqual(new Token("tok/en:x"));
    expect(Buffer.from((dict.get("e") as { value: Uint8Array }).value).toString()).toBe("hello");
    expect(dict.get("f")).toMatchObject({ value: false });
    expect(dict.get("g")).toEqual({
      value: true,
      params: new Map<string, unknown>([
        ["p", true],
        ["q", "x"],
      ]),
    });
    expect(serializeDictionary(dict)).toBe(
      'a=1, b=-2.5, c="q\\"s", d=tok/en:x, e=:aGVsbG8=:, f=?0, g;q="x", h=(1 "two" t);l=1'.replace(
        "g;q",
        "g;p;q",
      ),
    );
  });

  it("keeps decimals apart from integers", () => {
    expect(serializeItem(parseItem("1.0"))).toBe("1.0");
    expect(serializeItem(parseItem("1"))).toBe("1");
  });

  it("rounds a decimal to three places, a tie to the even digit (RFC 8941 §4.1.5)", () => {
    const decimal = (value: number): string =>
      serializeItem({ value: new Decimal(value), params: new Map() });
    // Exactly halfway: odd multiples of 1/16, which doubles hold exactly.
    expect(decimal(0.0625)).toBe("0.062");
    expect(decimal(0.1875)).toBe("0.188");
    expect(decimal(-0.0625)).toBe("-0.062");
    expect(decimal(2.3125)).toBe("2.312");
    expect(decimal(999_999_999_999.9375)).toBe("999999999999.938");
    // Not halfway (0.0005 is a little above it as a double): the nearer value.
    expect(decimal(0.0005)).toBe("0.001");
    expect(decimal(1.2344)).toBe("1.234");
    expect(decimal(1.2346)).toBe("1.235");
  });

  it("a repeated dictionary key keeps its first position and last value", () => {
    expect(serializeDictionary(parseDictionary("a=1, b=2, a=3"))).toBe("a=3, b=2");
  });

  it("with rejectDuplicateKeys, refuses a repeated key and keeps everything else as is", () => {
    const strict = { rejectDuplicateKeys: true };
    expect(() => parseDictionary("a=1, b=2, a=3", strict)).toThrow(ValidationError);
    expect(() => parseDictionary("a=1, b=2, a=3", strict)).toThrow(
      /repeated dictionary key at offset 10/,
    );
    // A bare key (boolean true) repeats its key just the same.
    expect(() => parseDictionary("a, a;p=1", strict)).toThrow(ValidationError);
    // Keys are compared exactly: prefixes and parameters named like a key are not repeats.
    expect(serializeDictionary(parseDictionary("a=1, ab=2, b=(1);a=3", strict))).toBe(
      "a=1, ab=2, b=(1);a=3",
    );
  });

  it("with rejectDuplicateParameters, refuses a key repeated within one parameter list", () => {
    const strict = { rejectDuplicateParameters: true };
    // Last wins by default, as RFC 8941 §4.2.3.2 says.
    expect(serializeDictionary(parseDictionary("a=(1);k=1;k=2"))).toBe("a=(1);k=2");
    expect(() => parseDictionary("a=(1);k=1;k=2", strict)).toThrow(
      /repeated parameter key at offset 10/,
    );
    // On an item in an inner list, on a plain item, on a bare key, and with boolean values.
    expect(() => parseDictionary('a=("x";sf;sf)', strict)).toThrow(ValidationError);
    expect(() => parseDictionary('a=("x";key="a";key="b" "y")', strict)).toThrow(ValidationError);
    expect(() => parseDictionary("a=:AAAA:;p;p=?0", strict)).toThrow(ValidationError);
    expect(() => parseDictionary("a;p=1;p=1", strict)).toThrow(ValidationError);
    // Different lists may share keys, and a parameter may share a dictionary key; repeated
    // dictionary keys are a separate option.
    const shared = 'a=("x";k=1 "y";k=1);k=1;a=2, b;k, k=1;a';
    expect(serializeDictionary(parseDictionary(shared, strict))).toBe(
      serializeDictionary(parseDictionary(shared)),
    );
    expect(() =>
      parseDictionary("a=1, a=2", { rejectDuplicateKeys: true, rejectDuplicateParameters: true }),
    ).toThrow(/repeated dictionary key/);
  });

  it("parses lists with inner lists and tolerates OWS around commas", () => {
    expect(serializeList(parseList('("a" "b");x=1 ,\tc'))).toBe('("a" "b");x=1, c');
  });

  it.each([
    ["trailing comma", "a=1,"],
    ["uppercase key", "A=1"],
    ["integer too long", "a=1234567890123456"],
    ["decimal with 4 fractional digits", "a=1.2345"],
    ["decimal ending in a dot", "a=1."],
    ["unterminated string", 'a="abc'],
    ["bad escape", 'a="\\x"'],
    ["non-ASCII", 'a="é"'],
    ["bad boolean", "a=?2"],
    ["bad base64", "a=:!!:"],
    ["unterminated inner list", "a=(1 2"],
    ["missing separator", "a=1 b=2"],
    ["empty item", ""],
  ])("rejects %s", (_name, text) => {
    const parse = text === "" ? parseItem : parseDictionary;
    expect(() => parse(text)).toThrow(ValidationError);
  });

  it("never throws anything but ValidationError, whatever the input (fuzz)", () => {
    const alphabet = fc.constantFrom(...'abz09=;,()" :?*-.\\/\t%\u00e9AZ+'.split(""));
    const input = fc.oneof(fc.string(), fc.string({ unit: alphabet, maxLength: 60 }));
    fc.assert(
      fc.property(input, (text) => {
        const strictDictionary = (value: string) =>
          parseDictionary(value, { rejectDuplicateKeys: true, rejectDuplicateParameters: true });
        for (const parse of [parseDictionary, strictDictionary, parseList, parseItem]) {
          try {
            const value = parse(text);
            // Whatever parses must serialize and parse back to the same serialization.
            const again =
              parse === parseDictionary
                ? serializeDictionary(parseDictionary(serializeDictionary(value as never)))
                : undefined;
            if (again !== undefined) expect(again).toBe(serializeDictionary(value as never));
          } catch (error) {
            if (!(error instanceof ValidationError)) throw error;
          }
        }
      }),
      { numRuns: 3000 },
    );
  });

  it("round-trips generated dictionaries", () => {
    const key = fc.stringMatching(/^[a-z][a-z0-9_.-]{0,6}$/);
    const bare = fc.oneof(
      fc.integer({ min: -1e6, max: 1e6 }),
      fc.stringMatching(/^[ -~]{0,10}$/),
      fc.boolean(),
      fc.uint8Array({ maxLength: 12 }),
      fc.stringMatching(/^[a-zA-Z*][a-zA-Z0-9:/!#$%&'*+.^_`|~-]{0,6}$/).map((t) => new Token(t)),
    );
    const params = fc.dictionary(key, bare, { maxKeys: 2 }).map((o) => new Map(Object.entries(o)));
    const member = fc.record({ value: bare, params });
    fc.assert(
      fc.property(fc.dictionary(key, member, { maxKeys: 4 }), (obj) => {
        const dict = new Map(Object.entries(obj));
        const text = serializeDictionary(dict);
        expect(serializeDictionary(parseDictionary(text))).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it("rejectDuplicateKeys refuses exactly the dictionaries that repeat a key", () => {
    const key = fc.constantFrom("a", "b", "sig1", "sig2");
    const value = fc.constantFrom("1", ":AAAA:", '("@method");created=1', "?0", "");
    const members = fc.array(fc.tuple(key, value), { minLength: 1, maxLength: 5 });
    fc.assert(
      fc.property(members, (list) => {
        const text = list.map(([k, v]) => (v === "" ? k : `${k}=${v}`)).join(", ");
        const repeats = new Set(list.map(([k]) => k)).size !== list.length;
        const lenient = serializeDictionary(parseDictionary(text));
        let strict: string | undefined;
        try {
          strict = serializeDictionary(parseDictionary(text, { rejectDuplicateKeys: true }));
        } catch (error) {
          expect(error).toBeInstanceOf(ValidationError);
        }
        expect(strict === undefined).toBe(repeats);
        // What the strict parse accepts, it reads exactly as RFC 8941 does.
        if (strict !== undefined) expect(strict).toBe(lenient);
      }),
      { numRuns: 500 },
    );
  });

  it("rejectDuplicateParameters refuses exactly the dictionaries that repeat a parameter", () => {
    const paramKey = fc.constantFrom("keyid", "created", "sf", "key", "a");
    const paramValue = fc.constantFrom('"k1"', "1", "?0", "", ":AAAA:");
    const paramList = fc.array(fc.tuple(paramKey, paramValue), { maxLength: 3 });
    const serialize = (list: readonly (readonly [string, string])[]): string =>
      list.map(([k, v]) => (v === "" ? `;${k}` : `;${k}=${v}`)).join("");
    const repeats = (list: readonly (readonly [string, string])[]): boolean =>
      new Set(list.map(([k]) => k)).size !== list.length;
    // A Signature-Input-like member: parameters on each identifier and on the inner list.
    const member = fc.tuple(fc.array(paramList, { minLength: 1, maxLength: 3 }), paramList);
    const members = fc.array(member, { minLength: 1, maxLength: 3 });
    fc.assert(
      fc.property(members, (list) => {
        const text = list
          .map(
            ([items, params], i) =>
              `sig${i}=(${items.map((p, j) => `"c${j}"${serialize(p)}`).join(" ")})${serialize(params)}`,
          )
          .join(", ");
        const repeated = list.some(([items, params]) => repeats(params) || items.some(repeats));
        const lenient = serializeDictionary(parseDictionary(text));
        let strict: string | undefined;
        try {
          strict = serializeDictionary(parseDictionary(text, { rejectDuplicateParameters: true }));
        } catch (error) {
          expect(error).toBeInstanceOf(ValidationError);
        }
        expect(strict === undefined).toBe(repeated);
        if (strict !== undefined) expect(strict).toBe(lenient);
      }),
      { numRuns: 500 },
    );
  });

  it("reads byte sequences of every length and padding as Buffer decodes them", () => {
    const base64 = fc
      .stringMatching(/^[A-Za-z0-9+/]{0,140}={0,2}$/)
      .filter((b) => b.length % 4 !== 1);
    fc.assert(
      fc.property(base64, (text) => {
        const { value } = parseItem(`:${text}:`);
        expect(value).toBeInstanceOf(Uint8Array);
        expect(Buffer.from(value as Uint8Array).equals(Buffer.from(text, "base64"))).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it("round-trips byte sequences around the in-object size, each owning its bytes", () => {
    for (const length of [0, 1, 2, 3, 31, 32, 33, 63, 64, 65, 96, 512]) {
      const bytes = Uint8Array.from({ length }, (_, i) => (i * 37 + length) & 0xff);
      const text = serializeItem({ value: bytes, params: new Map() });
      expect(text).toBe(`:${Buffer.from(bytes).toString("base64")}:`);
      const parsed = parseItem(text).value as Uint8Array;
      expect(parsed).toEqual(bytes);
      // Not a view into a shared pool.
      expect(parsed.buffer.byteLength).toBe(length);
    }
  });

  it("refuses to serialize values RFC 8941 cannot hold", () => {
    expect(() => serializeItem({ value: 1.5, params: new Map() })).toThrow(ValidationError);
    expect(() => serializeItem({ value: "é", params: new Map() })).toThrow(ValidationError);
    expect(() => serializeItem({ value: new Token("1abc"), params: new Map() })).toThrow(
      ValidationError,
    );
    expect(() => serializeDictionary(new Map([["Bad", { value: 1, params: new Map() }]]))).toThrow(
      ValidationError,
    );
  });
});

describe("parseSharedDictionary", () => {
  it("parses as parseDictionary does, for any input (fuzz)", () => {
    const alphabet = fc.constantFrom(...'abz09=;,()" :?*-.\\/\t'.split(""));
    const options = fc.record({
      rejectDuplicateKeys: fc.boolean(),
      rejectDuplicateParameters: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.string({ unit: alphabet, maxLength: 60 }), options, (text, opts) => {
        const outcome = (parse: typeof parseDictionary) => {
          try {
            return parse(text, opts);
          } catch (error) {
            return (error as Error).message;
          }
        };
        expect(outcome(parseSharedDictionary)).toEqual(outcome(parseDictionary));
      }),
      { numRuns: 3000 },
    );
  });

  it("shares one read-only map among items without parameters; parseDictionary does not", () => {
    const text = 'sig1=("@method" "@target-uri");created=1;keyid="k", sig2=:AAAA:';
    const shared = parseSharedDictionary(text);
    const first = (shared.get("sig1") as InnerList).items[0] as Item;
    const second = (shared.get("sig1") as InnerList).items[1] as Item;
    expect(first.params).toBe(second.params);
    expect((shared.get("sig2") as Item).params).toBe(first.params);
    expect(() => first.params.set("req", true)).toThrow(TypeError);
    expect(() => first.params.delete("req")).toThrow(TypeError);
    expect(() => first.params.clear()).toThrow(TypeError);
    expect(first.params.size).toBe(0);
    // The inner list's own parameters are its own.
    expect((shared.get("sig1") as InnerList).params.get("keyid")).toBe("k");

    const own = parseDictionary(text);
    const a = (own.get("sig1") as InnerList).items[0] as Item;
    const b = (own.get("sig1") as InnerList).items[1] as Item;
    expect(a.params).not.toBe(b.params);
    a.params.set("req", true);
    expect(b.params.size).toBe(0);
  });
});
