/**
 * The text form's decoder (docs/FORMAT.md §6.1 item 5): only the canonical spelling decodes. Short
 * texts are checked and decoded in one JS pass, longer ones by a regular expression and Buffer's
 * native decoder (field-format.ts); each case below runs on both sides of JS_DECODE_MAX, through
 * both entry points, against an oracle that shares no code with either path: Buffer's lenient
 * decoder plus "encoding the bytes again gives the same text".
 */
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { InvalidCiphertextError } from "../errors.ts";
import { fromFieldText, isCurrentRead, JS_DECODE_MAX, readFieldText } from "./field-format.ts";

const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const PREFIX = "kms1:";

/** The canonical decoding of `text`, or undefined when `text` must be refused. */
function oracle(text: string): Uint8Array | undefined {
  if (!text.startsWith(PREFIX)) return undefined;
  const body = text.slice(PREFIX.length);
  const bytes = Buffer.from(body, "base64url");
  return bytes.toString("base64url") === body ? new Uint8Array(bytes) : undefined;
}

const decoders = [
  ["fromFieldText", fromFieldText],
  ["readFieldText", (text: string) => readFieldText(text).slice()],
] as const;

function expectRefused(text: string): void {
  for (const [, decode] of decoders) {
    expect(() => decode(text), JSON.stringify(text)).toThrow(InvalidCiphertextError);
  }
}

function expectDecodes(text: string, bytes: Uint8Array): void {
  for (const [, decode] of decoders) expect(decode(text), text).toEqual(bytes);
}

/** A valid body of `chars` characters (chars % 4 !== 1) whose bytes are not all alike. */
function validBody(chars: number): string {
  const tail = chars % 4;
  const bytes = Buffer.alloc((chars >> 2) * 3 + (tail === 0 ? 0 : tail - 1));
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 37 + 11) & 0xff;
  return bytes.toString("base64url");
}

/** Body lengths with each final-group size, on both sides of the JS pass's limit. */
const LONGEST_SHORT_BODY = JS_DECODE_MAX - PREFIX.length;
const BODY_LENGTHS: number[] = [];
for (const groups of [0, 1, 5, (LONGEST_SHORT_BODY >> 2) - 1, LONGEST_SHORT_BODY >> 2, 100]) {
  BODY_LENGTHS.push(groups * 4, groups * 4 + 2, groups * 4 + 3);
}

describe("field text decoding (FORMAT §6.1 item 5)", () => {
  test("the cases below reach both paths", () => {
    expect(BODY_LENGTHS.some((n) => PREFIX.length + n <= JS_DECODE_MAX)).toBe(true);
    expect(BODY_LENGTHS.some((n) => PREFIX.length + n > JS_DECODE_MAX)).toBe(true);
  });

  test.each(BODY_LENGTHS)("a canonical body of %i characters decodes", (chars) => {
    const text = PREFIX + validBody(chars);
    const expected = oracle(text);
    expect(expected).toBeDefined();
    expectDecodes(text, expected as Uint8Array);
  });

  test("every length ≡ 1 (mod 4) is refused, every other one decodes", () => {
    for (let chars = 0; chars <= JS_DECODE_MAX + 12; chars++) {
      const text = PREFIX + "A".repeat(chars);
      if (chars % 4 === 1) expectRefused(text);
      else expectDecodes(text, new Uint8Array((chars >> 2) * 3 + Math.max(0, (chars % 4) - 1)));
    }
  });

  /** `body` with the character at `at` replaced by UTF-16 code unit `unit`. */
  function withUnit(body: string, at: number, unit: number): string {
    return `${PREFIX}${body.slice(0, at)}${String.fromCharCode(unit)}${body.slice(at + 1)}`;
  }

  /** The places of a body of `chars` characters: its first group and its last, partial or not. */
  function placesOf(chars: number): number[] {
    const tail = chars % 4;
    const places = [0, 1, 2, 3];
    for (let i = chars - (tail === 0 ? 4 : tail); i < chars; i++) places.push(i);
    return places;
  }

  function refuses(decode: (text: string) => unknown, text: string): boolean {
    try {
      decode(text);
    } catch (error) {
      return error instanceof InvalidCiphertextError;
    }
    return false;
  }

  const outside = (unit: number) => !BASE64URL.includes(String.fromCharCode(unit));

  test("every UTF-16 code unit outside the alphabet is refused by the JS pass", () => {
    // Each unit at one place, the places taken in turn: over the 2^16 units every place of a
    // full group and of final groups of 2 and 3 characters is tried some 4,000 times.
    const bodies = [validBody(10), validBody(11)];
    for (let unit = 0; unit <= 0xffff; unit++) {
      if (!outside(unit)) continue;
      const body = bodies[unit & 1] as string;
      const places = placesOf(body.length);
      const text = withUnit(body, places[(unit >> 1) % places.length] as number, unit);
      if (!refuses(readFieldText, text)) expect.fail(`took U+${unit.toString(16)}: ${text}`);
    }
  });

  test("characters outside the alphabet are refused at every place, on both paths", () => {
    // Every unit up to U+02FF (ASCII, Latin-1, and units whose low byte is a base64url
    // character), the surrogates' edges, then every 97th unit.
    const units = [0xd7ff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xe000, 0xff21, 0xfffd, 0xffff];
    for (let unit = 0; unit <= 0xffff; unit += unit < 0x300 ? 1 : 97) units.push(unit);
    for (const chars of [10, 11, LONGEST_SHORT_BODY, LONGEST_SHORT_BODY + 1, 402, 403]) {
      const body = validBody(chars);
      for (const at of placesOf(chars)) {
        for (const unit of units) {
          if (!outside(unit)) continue;
          const text = withUnit(body, at, unit);
          for (const [name, decode] of decoders) {
            if (!refuses(decode, text)) expect.fail(`${name} took U+${unit.toString(16)}: ${text}`);
          }
        }
      }
    }
  });

  test("a final group with any unused bit set is refused", () => {
    for (const chars of [10, 11, LONGEST_SHORT_BODY, LONGEST_SHORT_BODY + 3, 402, 403]) {
      expect(chars % 4).toBeGreaterThan(1);
      const body = validBody(chars);
      const tail = chars % 4;
      const unused = tail === 2 ? 0x0f : 0x03;
      let accepted = 0;
      for (let sextet = 0; sextet < 64; sextet++) {
        const text = `${PREFIX}${body.slice(0, -1)}${BASE64URL[sextet]}`;
        if ((sextet & unused) === 0) {
          expectDecodes(text, oracle(text) as Uint8Array);
          accepted += 1;
        } else {
          expectRefused(text);
        }
      }
      expect(accepted).toBe(tail === 2 ? 4 : 16);
    }
  });

  test("the prefix is exact", () => {
    const body = validBody(43);
    for (const prefix of ["", "KMS1:", "kms1", "kms2:", " kms1:", "kms1: ", "ｋms1:", "kms1;"]) {
      expectRefused(prefix + body);
      expectRefused(prefix + body + validBody(JS_DECODE_MAX));
    }
    expectDecodes(PREFIX, new Uint8Array(0));
  });

  test("padding, whitespace and the other base64 alphabet are refused", () => {
    for (const body of ["AA==", "AAA=", "AA=", "AAAA====", "AA AA", "AAAA\n", "+AAA", "/AAA"]) {
      expectRefused(PREFIX + body);
      expectRefused(PREFIX + validBody(JS_DECODE_MAX) + body);
    }
  });

  test("any text decodes exactly when the oracle accepts it, to the oracle's bytes", () => {
    const junk = [..."=+/ .é\u0141\u0100\uff21\ud800\x00\x7f"];
    const unit = fc.oneof(
      { weight: 20, arbitrary: fc.constantFrom(...BASE64URL) },
      { weight: 1, arbitrary: fc.constantFrom(...junk) },
    );
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit, maxLength: 60 }),
          fc.string({ unit, minLength: JS_DECODE_MAX - 16, maxLength: JS_DECODE_MAX + 16 }),
          fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b).toString("base64url")),
        ),
        (body) => {
          const text = PREFIX + body;
          const expected = oracle(text);
          if (expected === undefined) expectRefused(text);
          else expectDecodes(text, expected);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test("bytes of readFieldText stop passing as current once another text used the scratch", () => {
    const first = PREFIX + validBody(40);
    const bytes = readFieldText(first);
    expect(isCurrentRead(bytes, first)).toBe(true);
    // Another text of the same length: the very same view comes back, over its bytes now.
    const second = PREFIX + "A".repeat(40);
    expect(readFieldText(second)).toBe(bytes);
    expect(isCurrentRead(bytes, first)).toBe(false);
    expect(isCurrentRead(bytes, second)).toBe(true);
    expect(isCurrentRead(readFieldText(first), first)).toBe(true);
    // The JS pass writes as it goes: a text refused at its last character has overwritten the
    // bytes read before it.
    expect(() => readFieldText(`${PREFIX}${"A".repeat(39)}*`)).toThrow(InvalidCiphertextError);
    expect(isCurrentRead(bytes, first)).toBe(false);
    // Bytes of their own (fromFieldText, or texts too long for the scratch) are always current.
    expect(isCurrentRead(fromFieldText(first), first)).toBe(true);
  });
});
