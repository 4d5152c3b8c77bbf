/**
 * Property-based robustness of message decryption (docs/FORMAT.md §5.6). tamper.test.ts pins the
 * systematic cases (every truncation, every single-bit flip, named frame reorderings); these
 * properties throw random input and random splices at every decrypt API, because a parser bug
 * shows up as the wrong exception type or as plaintext released from a frame that never
 * verified, and fixed cases only find the bugs someone already thought of.
 */
import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  AccessDeniedError,
  createDecryptStream,
  type DecryptMessageOptions,
  type DecryptPolicy,
  decryptMessage,
  decryptTransformStream,
  type EncryptionContext,
  encodeEncryptionContext,
  encryptMessage,
  InvalidCiphertextError,
  type MessageSuite,
} from "../../src/index.ts";
import { aesKeyring, concat, split, throughNode } from "./helpers.ts";

const keyring = aesKeyring();
const FRAME = 16;
const REGULAR_FRAMES = 4;
// Several regular frames and a short final one, so splices land in every kind of region.
const PLAINTEXT = randomBytes(FRAME * REGULAR_FRAMES + 5);
const REGULAR = 4 + FRAME + 16;
const FINAL = 12 + 5 + 16;
const PUBLIC_KEY = "kms-message:public-key";
// tamper.test.ts does the same: without it a damaged key count can legitimately be refused by the
// default limit of 16 copies, and the strict runs want the one generic error.
const ANY_KEY_COUNT: DecryptPolicy = { maxEncryptedDataKeys: 65_535 };

interface Fixture {
  readonly name: string;
  readonly message: Uint8Array;
  /** What decrypt expects; undefined also covers the path that checks no context at all. */
  readonly expected: EncryptionContext | undefined;
  readonly headerLength: number;
  /** End of the final frame: the signature footer (signing suite) or the end of the message. */
  readonly bodyEnd: number;
  /** Offsets where regions meet, for splices that straddle them. */
  readonly boundaries: readonly number[];
  readonly [fc.toStringMethod]: () => string;
}

/** Walks the header as FORMAT.md §5.2 lays it out, independently of the parser under test. */
function headerLengthOf(message: Uint8Array): number {
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  let at = 1 + 2 + 32;
  at += 2 + view.getUint16(at);
  const count = view.getUint16(at);
  at += 2;
  for (let i = 0; i < count; i++) {
    for (let part = 0; part < 3; part++) at += 2 + view.getUint16(at);
  }
  return at + 4 + 32 + 16;
}

async function fixture(
  name: string,
  suite: MessageSuite,
  context: EncryptionContext | undefined,
): Promise<Fixture> {
  const message = await encryptMessage(PLAINTEXT, {
    keyring,
    frameLength: FRAME,
    suite,
    ...(context === undefined ? {} : { encryptionContext: context }),
  });
  const headerLength = headerLengthOf(message);
  const bodyEnd = headerLength + REGULAR_FRAMES * REGULAR + FINAL;
  if (suite === "AES_256_GCM_HKDF_SHA512_COMMIT_KEY") {
    expect(bodyEnd).toBe(message.length);
  } else {
    expect(bodyEnd + 2 + ((message[bodyEnd]! << 8) | message[bodyEnd + 1]!)).toBe(message.length);
  }
  // Version, suite, context length, frame length, header tag; then each frame's sequence
  // number, ciphertext and tag; the final frame's length field; the signature footer.
  const boundaries = [0, 3, 35, headerLength - 52, headerLength - 16];
  for (let i = 0; i < REGULAR_FRAMES; i++) {
    const start = headerLength + i * REGULAR;
    boundaries.push(start, start + 4, start + 4 + FRAME);
  }
  const final = headerLength + REGULAR_FRAMES * REGULAR;
  boundaries.push(final, final + 8, final + 12, bodyEnd - 16, bodyEnd, message.length);
  return {
    name,
    message,
    expected: context,
    headerLength,
    bodyEnd,
    boundaries,
    // Counterexamples name the fixture instead of dumping its bytes.
    [fc.toStringMethod]: () => name,
  };
}

const FIXTURES = await Promise.all([
  fixture("unsigned, with context", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", {
    tenant: "acme",
    table: "exports",
  }),
  fixture("unsigned, no context", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", undefined),
  fixture("ECDSA P-384, with context", "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384", {
    tenant: "acme",
  }),
]);
const SIGNED = FIXTURES[2]!;

function optionsFor(f: Fixture, policy?: DecryptPolicy): DecryptMessageOptions {
  return {
    keyring,
    ...(f.expected === undefined ? {} : { encryptionContext: f.expected }),
    ...(policy === undefined ? {} : { policy }),
  };
}

interface Outcome {
  /** Plaintext handed to the caller: the result, or what a stream emitted before failing. */
  readonly released: Uint8Array;
  readonly error?: unknown;
}

async function oneShot(message: Uint8Array, options: DecryptMessageOptions): Promise<Outcome> {
  try {
    return { released: (await decryptMessage(message, options)).plaintext };
  } catch (error) {
    return { released: new Uint8Array(0), error };
  }
}

async function nodeStream(
  message: Uint8Array,
  cuts: readonly number[],
  options: DecryptMessageOptions,
): Promise<Outcome> {
  const stream = createDecryptStream(options);
  const released: Uint8Array[] = [];
  stream.on("data", (d: Uint8Array) => released.push(d));
  try {
    await throughNode(stream, split(message, cuts));
    return { released: concat(released) };
  } catch (error) {
    return { released: concat(released), error };
  }
}

/** Like helpers' throughWeb, but keeps what came out before the failure. */
async function webStream(
  message: Uint8Array,
  cuts: readonly number[],
  options: DecryptMessageOptions,
): Promise<Outcome> {
  const chunks = split(message, cuts);
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(c);
      controller.close();
    },
  });
  const reader = source.pipeThrough(decryptTransformStream(options)).getReader();
  const released: Uint8Array[] = [];
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      released.push(value);
    }
    return { released: concat(released) };
  } catch (error) {
    return { released: concat(released), error };
  }
}

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * Fails with the unexpected error's own stack in the message: fast-check reports the message
 * next to the counterexample, and the stack is what locates the parser bug.
 */
function expectFailure(outcome: Outcome, allowed: readonly ErrorClass[], what: string): void {
  const { error } = outcome;
  if (error === undefined) throw new Error(`${what}: decrypted, expected a failure`);
  if (!allowed.some((c) => error instanceof c)) {
    const detail = error instanceof Error ? (error.stack ?? String(error)) : String(error);
    throw new Error(`${what}: unexpected error ${detail}`);
  }
}

function expectPlaintext(outcome: Outcome, what: string): void {
  if (outcome.error !== undefined) {
    throw new Error(`${what}: expected the original plaintext`, { cause: outcome.error });
  }
  expect(Buffer.from(outcome.released).equals(PLAINTEXT), what).toBe(true);
}

/** Released plaintext is a prefix of the original and holds nothing from `limit` on. */
function expectReleaseWithin(outcome: Outcome, limit: number, what: string): void {
  const released = Buffer.from(outcome.released);
  expect(released.equals(PLAINTEXT.subarray(0, released.length)), `${what}: not a prefix`).toBe(
    true,
  );
  expect(released.length, `${what}: released past the first damaged frame`).toBeLessThanOrEqual(
    limit,
  );
}

/**
 * Chunk boundaries for the streams. Unbiased and mostly within the first frames, so that chunks
 * often end between frames and a stream has released plaintext by the time it fails.
 */
const cutsArb = fc.array(fc.noBias(fc.nat({ max: 600 })), { maxLength: 12 });

const BOTH: readonly ErrorClass[] = [InvalidCiphertextError, AccessDeniedError];
const INVALID: readonly ErrorClass[] = [InvalidCiphertextError];

async function expectOnlyGenericFailures(
  bytes: Uint8Array,
  cuts: readonly number[],
  options: DecryptMessageOptions,
): Promise<void> {
  expectFailure(await oneShot(bytes, options), BOTH, "decryptMessage");
  expectFailure(await nodeStream(bytes, cuts, options), BOTH, "createDecryptStream");
  expectFailure(await webStream(bytes, cuts, options), BOTH, "decryptTransformStream");
}

describe("arbitrary input fails only with InvalidCiphertextError or AccessDeniedError", () => {
  it("arbitrary bytes", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 4096 }),
        cutsArb,
        fc.constantFrom(...FIXTURES),
        async (bytes, cuts, f) => {
          await expectOnlyGenericFailures(bytes, cuts, optionsFor(f));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("arbitrary bytes after a valid version and suite id", async () => {
    // Random bytes almost never start with 0x01 0x00 0x0{1,2,3}; this gets past the first check
    // into the length fields, the key copies and the frame length.
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(1, 2, 3),
        fc.uint8Array({ maxLength: 2048 }),
        cutsArb,
        fc.constantFrom(...FIXTURES),
        async (suite, rest, cuts, f) => {
          await expectOnlyGenericFailures(Uint8Array.of(1, 0, suite, ...rest), cuts, optionsFor(f));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("well-formed headers with arbitrary fields (contexts, key copies, frame lengths)", async () => {
    const contextBytes = fc.oneof(
      fc.constant(new Uint8Array(0)),
      fc
        .dictionary(fc.string({ minLength: 1, maxLength: 8 }), fc.string({ maxLength: 8 }), {
          maxKeys: 4,
        })
        .map((c) => encodeEncryptionContext({ ...c })),
      fc.uint8Array({ maxLength: 64 }),
    );
    const copy = fc.record({
      providerId: fc.constantFrom("test", "kms", "tes", ""),
      providerInfo: fc.constantFrom("k1", "k2", ""),
      // 60 bytes is the raw AES copy's exact size, the only one the keyring tries to unwrap.
      ciphertext: fc.oneof(
        fc.uint8Array({ minLength: 60, maxLength: 60 }),
        fc.uint8Array({ maxLength: 80 }),
      ),
    });
    const frameLength = fc.oneof(
      fc.constantFrom(0, 1, FRAME, 16 * 1024 * 1024, 16 * 1024 * 1024 + 1, 0xffffffff),
      fc.nat(),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(0, 1, 2, 3, 4),
        contextBytes,
        fc.array(copy, { maxLength: 3 }),
        frameLength,
        fc.uint8Array({ maxLength: 160 }),
        cutsArb,
        fc.constantFrom(...FIXTURES),
        async (suite, context, copies, frames, rest, cuts, f) => {
          const u16 = (n: number) => [n >> 8, n & 0xff];
          const parts: number[] = [1, ...u16(suite), ...randomBytes(32)];
          parts.push(...u16(context.length), ...context, ...u16(copies.length));
          for (const c of copies) {
            for (const field of [Buffer.from(c.providerId), Buffer.from(c.providerInfo)]) {
              parts.push(...u16(field.length), ...field);
            }
            parts.push(...u16(c.ciphertext.length), ...c.ciphertext);
          }
          parts.push(frames >>> 24, (frames >>> 16) & 0xff, (frames >>> 8) & 0xff, frames & 0xff);
          // Commitment, header tag and whatever body follows: all arbitrary.
          parts.push(...rest);
          await expectOnlyGenericFailures(Uint8Array.from(parts), cuts, optionsFor(f));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a real header followed by arbitrary bytes, after zero or more real frames", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...FIXTURES),
        fc.integer({ min: 0, max: REGULAR_FRAMES }),
        fc.uint8Array({ maxLength: 2048 }),
        cutsArb,
        async (f, frames, tail, cuts) => {
          const keep = f.message.subarray(0, f.headerLength + frames * REGULAR);
          const bytes = concat([keep, tail]);
          // A tail that happens to be the genuine rest is the one input that must decrypt.
          if (Buffer.from(bytes).equals(f.message)) return;
          await expectOnlyGenericFailures(bytes, cuts, optionsFor(f));
          const streamed = await nodeStream(bytes, cuts, optionsFor(f, ANY_KEY_COUNT));
          expectFailure(streamed, INVALID, "createDecryptStream");
          const d = firstDifference(f.message, bytes) ?? f.message.length;
          expectReleaseWithin(streamed, releaseLimit(f, d), "createDecryptStream");
        },
      ),
      { numRuns: 300 },
    );
  });

  it("a real signed message with an arbitrary signature footer", async () => {
    const f = SIGNED;
    const original = f.message.subarray(f.bodyEnd);
    const footer = fc.oneof(
      // A consistent length prefix gets the bytes as far as ECDSA verification.
      fc
        .uint8Array({ maxLength: 140 })
        .map((der) => Uint8Array.of(der.length >> 8, der.length & 0xff, ...der)),
      fc.uint8Array({ maxLength: 140 }),
      // Near misses of the real signature: one byte changed somewhere in the DER.
      fc
        .tuple(fc.nat({ max: original.length - 1 }), fc.integer({ min: 1, max: 255 }))
        .map(([at, x]) => {
          const copy = original.slice();
          copy[at]! ^= x;
          return copy;
        }),
    );
    await fc.assert(
      fc.asyncProperty(footer, cutsArb, async (sig, cuts) => {
        const bytes = concat([f.message.subarray(0, f.bodyEnd), sig]);
        if (Buffer.from(sig).equals(original)) return;
        const options = optionsFor(f);
        expectFailure(await oneShot(bytes, options), INVALID, "decryptMessage");
        const streamed = await nodeStream(bytes, cuts, options);
        expectFailure(streamed, INVALID, "createDecryptStream");
        expectReleaseWithin(streamed, PLAINTEXT.length, "createDecryptStream");
        expectFailure(await webStream(bytes, cuts, options), INVALID, "decryptTransformStream");
      }),
      { numRuns: 300 },
    );
  });
});

/**
 * An offset: uniform over the message or over the body (the header is half of these small
 * messages, and frames are where plaintext gets released), or a few bytes around a boundary.
 */
type Position =
  | { readonly fraction: number; readonly inBody: boolean }
  | { readonly boundary: number; readonly delta: number };

const positionArb: fc.Arbitrary<Position> = fc.oneof(
  // Unbiased: fast-check's default bias towards small values would crowd the header.
  fc.record({
    fraction: fc.noBias(fc.double({ min: 0, max: 1, noNaN: true })),
    inBody: fc.boolean(),
  }),
  fc.record({ boundary: fc.noBias(fc.nat({ max: 999 })), delta: fc.integer({ min: -3, max: 3 }) }),
);

const lengthArb = fc.oneof(fc.integer({ min: 0, max: 6 }), fc.integer({ min: 0, max: 120 }));

type Splice =
  | { readonly kind: "delete"; readonly at: Position; readonly length: number }
  | { readonly kind: "insert"; readonly at: Position; readonly bytes: Uint8Array }
  | { readonly kind: "overwrite"; readonly at: Position; readonly bytes: Uint8Array }
  /** XOR with a mask that may be all zeros: the overwrite that is sometimes a no-op. */
  | { readonly kind: "xor"; readonly at: Position; readonly mask: Uint8Array }
  | {
      readonly kind: "duplicate";
      readonly from: Position;
      readonly length: number;
      readonly to: Position;
    };

const spliceArb: fc.Arbitrary<Splice> = fc.oneof(
  fc.record({ kind: fc.constant("delete"), at: positionArb, length: lengthArb }),
  fc.record({
    kind: fc.constant("insert"),
    at: positionArb,
    bytes: fc.uint8Array({ maxLength: 64 }),
  }),
  fc.record({
    kind: fc.constant("overwrite"),
    at: positionArb,
    bytes: fc.uint8Array({ maxLength: 64 }),
  }),
  fc.record({ kind: fc.constant("xor"), at: positionArb, mask: fc.uint8Array({ maxLength: 16 }) }),
  fc.record({
    kind: fc.constant("duplicate"),
    from: positionArb,
    length: lengthArb,
    to: positionArb,
  }),
);

function offsetOf(f: Fixture, p: Position): number {
  const n = f.message.length;
  let raw: number;
  if ("fraction" in p) {
    const start = p.inBody ? f.headerLength : 0;
    raw = start + Math.floor(p.fraction * (n - start));
  } else {
    raw = f.boundaries[p.boundary % f.boundaries.length]! + p.delta;
  }
  return Math.min(Math.max(raw, 0), n);
}

function applySplice(f: Fixture, s: Splice): Uint8Array {
  const m = f.message;
  switch (s.kind) {
    case "delete": {
      const at = offsetOf(f, s.at);
      return concat([m.subarray(0, at), m.subarray(Math.min(at + s.length, m.length))]);
    }
    case "insert": {
      const at = offsetOf(f, s.at);
      return concat([m.subarray(0, at), s.bytes, m.subarray(at)]);
    }
    case "overwrite": {
      const at = offsetOf(f, s.at);
      // Writing past the end extends the message, which is another splice worth having.
      return concat([
        m.subarray(0, at),
        s.bytes,
        m.subarray(Math.min(at + s.bytes.length, m.length)),
      ]);
    }
    case "xor": {
      const out = m.slice();
      const at = offsetOf(f, s.at);
      for (let i = 0; i < s.mask.length && at + i < out.length; i++) out[at + i]! ^= s.mask[i]!;
      return out;
    }
    case "duplicate": {
      const from = offsetOf(f, s.from);
      const copy = m.slice(from, Math.min(from + s.length, m.length));
      const to = offsetOf(f, s.to);
      return concat([m.subarray(0, to), copy, m.subarray(to)]);
    }
  }
}

function firstDifference(a: Uint8Array, b: Uint8Array): number | undefined {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? undefined : n;
}

/**
 * Plaintext bytes that may come out when the first changed byte is at `d`: the regular frames
 * wholly before it verified untouched; the frame holding `d` and every later one must not be
 * released. A change only in the signature footer or after the message may follow all frames.
 */
function releaseLimit(f: Fixture, d: number): number {
  if (d < f.headerLength) return 0;
  if (d >= f.bodyEnd) return PLAINTEXT.length;
  return Math.min(Math.floor((d - f.headerLength) / REGULAR), REGULAR_FRAMES) * FRAME;
}

describe("random splices of a real message", () => {
  it("fail with InvalidCiphertextError and release no plaintext of a damaged frame, or are no-ops", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...FIXTURES),
        spliceArb,
        cutsArb,
        async (f, splice, cuts) => {
          const bytes = applySplice(f, splice);
          const d = firstDifference(f.message, bytes);
          if (d === undefined) {
            expectPlaintext(await oneShot(bytes, optionsFor(f)), "decryptMessage (no-op)");
            expectPlaintext(await nodeStream(bytes, cuts, optionsFor(f)), "node stream (no-op)");
            expectPlaintext(await webStream(bytes, cuts, optionsFor(f)), "web stream (no-op)");
            return;
          }
          const limit = releaseLimit(f, d);
          const strict = optionsFor(f, ANY_KEY_COUNT);
          expectFailure(await oneShot(bytes, strict), INVALID, "decryptMessage");
          // Under the default limit of 16 copies a damaged key count may be refused by policy
          // instead, but only a change in the header can do that.
          const defaults = await oneShot(bytes, optionsFor(f));
          expectFailure(defaults, d < f.headerLength ? BOTH : INVALID, "decryptMessage (defaults)");
          const node = await nodeStream(bytes, cuts, strict);
          expectFailure(node, INVALID, "createDecryptStream");
          expectReleaseWithin(node, limit, "createDecryptStream");
          const web = await webStream(bytes, cuts, optionsFor(f));
          expectFailure(web, d < f.headerLength ? BOTH : INVALID, "decryptTransformStream");
          expectReleaseWithin(web, limit, "decryptTransformStream");
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("round trip", () => {
  const contextKey = fc
    .oneof(
      fc.string({ minLength: 1, maxLength: 12 }),
      fc.string({ unit: "grapheme", minLength: 1, maxLength: 6 }),
    )
    .filter((k) => !k.startsWith("kms-message:"));
  const contextArb = fc.dictionary(
    contextKey,
    fc.oneof(fc.string({ maxLength: 16 }), fc.string({ unit: "grapheme", maxLength: 8 })),
    { maxKeys: 5 },
  );
  const sizeArb = fc.oneof(
    // Around k whole frames, where the regular/final split changes.
    fc.record({ frames: fc.nat({ max: 5 }), delta: fc.integer({ min: -2, max: 2 }) }),
    fc.record({ frames: fc.constant(0), delta: fc.nat({ max: 400 }) }),
  );

  it("decrypts arbitrary sizes, frame lengths and contexts, and reports the context", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 64 }),
        sizeArb,
        contextArb,
        fc.constantFrom<MessageSuite>(
          "AES_256_GCM_HKDF_SHA512_COMMIT_KEY",
          "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
        ),
        cutsArb,
        async (frameLength, size, rawContext, suite, cuts) => {
          // A plain object: fast-check may hand out null-prototype dictionaries.
          const context: Record<string, string> = { ...rawContext };
          const plaintext = randomBytes(Math.max(0, size.frames * frameLength + size.delta));
          const message = await encryptMessage(plaintext, {
            keyring,
            encryptionContext: context,
            frameLength,
            suite,
          });
          const out = await decryptMessage(message, { keyring, encryptionContext: context });
          expect(Buffer.from(out.plaintext).equals(plaintext)).toBe(true);
          expect(out.frameLength).toBe(frameLength);
          const { [PUBLIC_KEY]: publicKey, ...reported } = out.encryptionContext;
          expect(reported).toEqual(context);
          expect(publicKey === undefined).toBe(suite === "AES_256_GCM_HKDF_SHA512_COMMIT_KEY");
          const stream = createDecryptStream({ keyring, encryptionContext: context });
          let header: EncryptionContext | undefined;
          stream.on("header", (info: { encryptionContext: EncryptionContext }) => {
            header = info.encryptionContext;
          });
          const streamed = await throughNode(stream, split(message, cuts));
          expect(Buffer.from(streamed).equals(plaintext)).toBe(true);
          expect(header).toEqual(out.encryptionContext);
        },
      ),
      { numRuns: 300 },
    );
  });
});
