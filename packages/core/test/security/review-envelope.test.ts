/**
 * Adversarial review of the canonical encryption-context encoding (docs/FORMAT.md §2): one
 * encoding per context, and a decoder that accepts exactly what the encoder can write, so that
 * decoding then encoding gives back the same bytes (§2.6).
 */
import { describe, expect, it } from "vitest";
import {
  decodeEncryptionContext,
  encodeEncryptionContext,
  MAX_ENCRYPTION_CONTEXT_BYTES,
  ValidationError,
} from "../../src/index.ts";

function encoding(pairs: readonly [Uint8Array, Uint8Array][]): Uint8Array {
  const parts: Buffer[] = [Buffer.from([pairs.length >> 8, pairs.length & 0xff])];
  for (const [k, v] of pairs) {
    const kl = Buffer.alloc(2);
    kl.writeUInt16BE(k.length);
    const vl = Buffer.alloc(2);
    vl.writeUInt16BE(v.length);
    parts.push(kl, Buffer.from(k), vl, Buffer.from(v));
  }
  return new Uint8Array(Buffer.concat(parts));
}
const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

describe("decodeEncryptionContext accepts only what the encoder writes (FORMAT §2.4–§2.6)", () => {
  it("refuses an empty key (§2.4: keys are non-empty)", () => {
    const bytes = encoding([[utf8(""), utf8("x")]]);
    expect(() => encodeEncryptionContext({ "": "x" })).toThrow(ValidationError);
    expect(() => decodeEncryptionContext(bytes)).toThrow(ValidationError);
    // Also when it would sort first before other keys.
    expect(() =>
      decodeEncryptionContext(
        encoding([
          [utf8(""), utf8("x")],
          [utf8("a"), utf8("y")],
        ]),
      ),
    ).toThrow(ValidationError);
  });

  it(`refuses an encoding longer than ${MAX_ENCRYPTION_CONTEXT_BYTES} bytes (§2.5)`, () => {
    const fits = encoding([
      [utf8("k"), new Uint8Array(MAX_ENCRYPTION_CONTEXT_BYTES - 7).fill(0x61)],
    ]);
    expect(fits.length).toBe(MAX_ENCRYPTION_CONTEXT_BYTES);
    const context = decodeEncryptionContext(fits);
    expect(Buffer.from(encodeEncryptionContext(context)).equals(Buffer.from(fits))).toBe(true);
    const over = encoding([
      [utf8("k"), new Uint8Array(MAX_ENCRYPTION_CONTEXT_BYTES - 6).fill(0x61)],
    ]);
    expect(() => encodeEncryptionContext(decodeEncryptionContextUnchecked(over))).toThrow(
      ValidationError,
    );
    expect(() => decodeEncryptionContext(over)).toThrow(ValidationError);
  });
});

/** The pairs of an encoding, without any rule but framing (to build the encoder's input). */
function decodeEncryptionContextUnchecked(bytes: Uint8Array): Record<string, string> {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: Record<string, string> = {};
  let at = 2;
  for (let i = 0; i < view.readUInt16BE(0); i++) {
    const kl = view.readUInt16BE(at);
    const k = view.toString("utf8", at + 2, at + 2 + kl);
    at += 2 + kl;
    const vl = view.readUInt16BE(at);
    out[k] = view.toString("utf8", at + 2, at + 2 + vl);
    at += 2 + vl;
  }
  return out;
}

describe("encodeEncryptionContext reads each value once", () => {
  it("a value that changes between reads cannot leave unwritten bytes in the encoding", () => {
    let reads = 0;
    const context = {};
    Object.defineProperty(context, "tenant", {
      enumerable: true,
      get: () => (reads++ === 0 ? "acme-corporation" : ""),
    });
    const bytes = encodeEncryptionContext(context);
    // The encoding is one whole, canonical encoding of what was read.
    expect(decodeEncryptionContext(bytes)).toEqual({ tenant: "acme-corporation" });
  });

  it("nor overrun the buffer sized from the first read", () => {
    let reads = 0;
    const context = {};
    Object.defineProperty(context, "a", {
      enumerable: true,
      get: () => (reads++ === 0 ? "" : "x".repeat(64)),
    });
    Object.defineProperty(context, "b", { enumerable: true, value: "y" });
    const bytes = encodeEncryptionContext(context);
    expect(decodeEncryptionContext(bytes)).toEqual({ a: "", b: "y" });
  });
});
