/**
 * The resumable HeaderParser (docs/FORMAT.md §5.2, §5.6) against itself in one call: a header
 * fed in any chunking, the way MessageDecryptor feeds it (the prefix received so far, parsed
 * again only once the bound it reported has arrived), must end exactly as one call on the whole
 * input does — the same header, the same bound when the input stops short, the same error of the
 * same class and message — and must call each check once, in the same order, with the same
 * values.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { AccessDeniedError } from "../errors.ts";
import {
  COMMITMENT_LENGTH,
  type HeaderChecks,
  type HeaderParse,
  HeaderParser,
  MAX_FRAME_LENGTH,
  MESSAGE_ID_LENGTH,
  PUBLIC_KEY_CONTEXT_KEY,
  TAG_LENGTH,
} from "./format.ts";

const u16 = (n: number) => [(n >>> 8) & 0xff, n & 0xff];
const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];

/** A length-prefixed field: its length as given (possibly a lie), then its bytes. */
const field = (bytes: readonly number[], length = bytes.length) => [...u16(length), ...bytes];

const bytesArb = (max: number) => fc.array(fc.nat({ max: 255 }), { maxLength: max });

/** A canonical context encoding; pairs a check may refuse, rarely a reserved key. */
const contextArb = fc.dictionary(
  fc.oneof(
    { weight: 6, arbitrary: fc.string({ minLength: 1, maxLength: 6 }) },
    { weight: 2, arbitrary: fc.constantFrom("a", "tenant", "\u00e9") },
    { weight: 1, arbitrary: fc.constantFrom(PUBLIC_KEY_CONTEXT_KEY, "kms-message:other") },
  ),
  fc.string({ maxLength: 6 }),
  { maxKeys: 3 },
);

const textBytes = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 5 }).map((s) => [...Buffer.from(s)]) },
  // Often not UTF-8.
  { weight: 1, arbitrary: bytesArb(4) },
);
const copyArb = fc.record({
  providerId: textBytes,
  providerInfo: textBytes,
  ciphertext: bytesArb(8),
});

/** One thing wrong with the header, or (most often) nothing. */
const DAMAGE = [
  "none",
  "version",
  "suite",
  "context length",
  "context bytes",
  "count",
  "frame length",
  "short",
] as const;

/**
 * A header laid out as FORMAT.md §5.2 says (commitment and tag are arbitrary: the parser does
 * not authenticate), with one damaged field at times, and frames after it.
 */
const headerArb = fc
  .record({
    damage: fc.oneof(
      { weight: 5, arbitrary: fc.constant("none" as const) },
      { weight: 4, arbitrary: fc.constantFrom(...DAMAGE) },
    ),
    suite: fc.constantFrom(1, 2, 3),
    messageId: fc.uint8Array({ minLength: MESSAGE_ID_LENGTH, maxLength: MESSAGE_ID_LENGTH }),
    context: contextArb,
    junk: bytesArb(10),
    delta: fc.constantFrom(1, -1, 2, 30, 200),
    copies: fc.array(copyArb, { minLength: 1, maxLength: 3 }),
    frameLength: fc.constantFrom(1, 16, 4096, MAX_FRAME_LENGTH),
    badFrameLength: fc.constantFrom(0, MAX_FRAME_LENGTH + 1, 0xffffffff),
    short: fc.nat({ max: COMMITMENT_LENGTH + TAG_LENGTH - 1 }),
    trailer: bytesArb(6),
  })
  .map((h) => {
    const context = { ...h.context };
    // A signed suite's header carries the signer's key (§5.8): present unless damaged.
    if (h.suite !== 1) context[PUBLIC_KEY_CONTEXT_KEY] ??= "AAAA";
    let contextBytes = [...encodeEncryptionContext(context)];
    if (h.damage === "context bytes") contextBytes = h.junk;
    const contextLength =
      h.damage === "context length"
        ? Math.max(0, contextBytes.length + h.delta)
        : contextBytes.length;
    const count =
      h.damage === "count" ? Math.max(0, h.copies.length + h.delta) % 0x10000 : h.copies.length;
    const out = [
      h.damage === "version" ? 2 : 1,
      ...u16(h.damage === "suite" ? 4 : h.suite),
      ...h.messageId,
      ...field(contextBytes, Math.min(contextLength, 0xffff)),
      ...u16(count),
    ];
    for (const c of h.copies) {
      out.push(...field(c.providerId), ...field(c.providerInfo), ...field(c.ciphertext));
    }
    out.push(...u32(h.damage === "frame length" ? h.badFrameLength : h.frameLength));
    const tail = COMMITMENT_LENGTH + TAG_LENGTH;
    out.push(...new Array<number>(h.damage === "short" ? h.short : tail).fill(0xab));
    if (h.damage !== "short") out.push(...h.trailer);
    return new Uint8Array(out);
  });

/** Checks that refuse some values, as a decrypt policy does, and log every call. */
const checksArb = fc.record({
  maxEncryptedDataKeys: fc.constantFrom(1, 2, 16),
  refuseSuite: fc.constantFrom(0, 1, 2, 3),
  refuseContextKey: fc.constantFrom(undefined, "a", "tenant"),
  maxFrameLength: fc.constantFrom(16, 4096, MAX_FRAME_LENGTH),
});

type ChecksConfig = typeof checksArb extends fc.Arbitrary<infer T> ? T : never;

function checks(config: ChecksConfig, log: string[]): HeaderChecks {
  return {
    maxEncryptedDataKeys: config.maxEncryptedDataKeys,
    suite(suite) {
      log.push(`suite ${suite.id}`);
      if (suite.id === config.refuseSuite) throw new AccessDeniedError("suite refused");
    },
    context(context) {
      log.push(`context ${JSON.stringify(context)}`);
      if (
        config.refuseContextKey !== undefined &&
        Object.hasOwn(context, config.refuseContextKey)
      ) {
        throw new AccessDeniedError("context refused");
      }
    },
    frameLength(frameLength) {
      log.push(`frameLength ${frameLength}`);
      if (frameLength > config.maxFrameLength) throw new AccessDeniedError("frames refused");
    },
  };
}

/** What a parse came to, in a form `toStrictEqual` compares. */
type Outcome =
  | { readonly kind: "header"; readonly length: number; readonly header: unknown }
  | { readonly kind: "needed"; readonly needed: number }
  | { readonly kind: "error"; readonly name: string; readonly message: string };

function describeParse(parsed: HeaderParse): Outcome {
  if (parsed.header === undefined) return { kind: "needed", needed: parsed.needed };
  const h = parsed.header;
  const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
  return {
    kind: "header",
    length: parsed.length,
    header: {
      suite: h.suite.id,
      messageId: hex(h.messageId),
      encryptionContextBytes: hex(h.encryptionContextBytes),
      encryptionContext: h.encryptionContext,
      encryptedDataKeys: h.encryptedDataKeys.map((e) => [
        e.providerId,
        e.providerInfo,
        hex(e.ciphertext),
      ]),
      frameLength: h.frameLength,
      commitment: hex(h.commitment),
      authenticated: hex(h.authenticated),
      tag: hex(h.tag),
    },
  };
}

function attempt(parse: () => HeaderParse): Outcome {
  try {
    return describeParse(parse());
  } catch (error) {
    const e = error as Error;
    return { kind: "error", name: e.constructor.name, message: e.message };
  }
}

/**
 * Feeds `bytes` in pieces cut at `cuts`, as MessageDecryptor does: each parse gets the prefix
 * received so far in a buffer of its own (earlier ones are overwritten, as a reused chunk
 * would be), and runs only once the last reported bound has arrived.
 */
function chunked(bytes: Uint8Array, cuts: readonly number[], parser: HeaderParser): Outcome {
  const points = [...new Set(cuts.map((c) => Math.min(c, bytes.length)))].sort((a, b) => a - b);
  let needed = 0;
  let last: Outcome = { kind: "needed", needed: 0 };
  let previous: Uint8Array | undefined;
  for (const end of [...points, bytes.length]) {
    if (end < needed) continue;
    previous?.fill(0xee);
    const prefix = bytes.slice(0, end);
    previous = prefix;
    last = attempt(() => parser.parse(prefix));
    if (last.kind !== "needed") return last;
    needed = last.needed;
  }
  return last;
}

describe("HeaderParser in pieces ends as one call on the whole input", () => {
  it("same header, bound or error, and the same checks called once each", () => {
    fc.assert(
      fc.property(
        headerArb,
        checksArb,
        fc.array(fc.nat({ max: 160 }), { maxLength: 12 }),
        (bytes, config, cuts) => {
          const wholeLog: string[] = [];
          const whole = attempt(() => new HeaderParser(checks(config, wholeLog)).parse(bytes));
          const piecesLog: string[] = [];
          const pieces = chunked(bytes, cuts, new HeaderParser(checks(config, piecesLog)));
          // A header's views are of the last prefix, which the feeder has not overwritten.
          expect(pieces).toStrictEqual(whole);
          expect(piecesLog).toStrictEqual(wholeLog);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("a bound it reports is never past the end of the header it then parses", () => {
    fc.assert(
      fc.property(headerArb, fc.nat({ max: 200 }), (bytes, cut) => {
        const whole = attempt(() => new HeaderParser({ maxEncryptedDataKeys: 16 }).parse(bytes));
        if (whole.kind !== "header") return;
        const prefix = bytes.slice(0, Math.min(cut, whole.length - 1));
        const short = attempt(() => new HeaderParser({ maxEncryptedDataKeys: 16 }).parse(prefix));
        if (short.kind === "needed") {
          expect(short.needed).toBeGreaterThan(prefix.length);
          expect(short.needed).toBeLessThanOrEqual(whole.length);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
