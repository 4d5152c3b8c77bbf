/**
 * docs/FORMAT.md §2 (canonical encryption context), written from the spec alone: this file
 * imports nothing from packages/core/src, so a disagreement with the real code is a finding
 * about one of the two, not an echo of shared code.
 */
import { Buffer } from "node:buffer";

export type SpecContext = Record<string, string>;

/** §2.5 */
export const SPEC_MAX_CONTEXT_BYTES = 8192;

/** Raised by every spec-only decoder: the reason names the rule, for test diagnostics only. */
export class SpecFormatError extends Error {
  override readonly name = "SpecFormatError";
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** §1.4: UTF-8 without BOM handling; a string that is not well-formed Unicode has no UTF-8 form. */
export function utf8(text: string): Uint8Array {
  // In a /u regex a surrogate pair is one code point, so \p{Cs} matches lone surrogates only.
  if (/\p{Cs}/u.test(text)) throw new SpecFormatError("string is not well-formed Unicode");
  return new Uint8Array(Buffer.from(text, "utf8"));
}

/** Strict UTF-8 decoding that keeps a leading U+FEFF (§2.6). */
export function fromUtf8(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new SpecFormatError("invalid UTF-8");
  }
}

export function u16(value: number): Uint8Array {
  return new Uint8Array([value >>> 8, value & 0xff]);
}

export function u32(value: number): Uint8Array {
  return new Uint8Array([value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]);
}

export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}

/** §2.1–§2.5 */
export function specEncodeContext(context: SpecContext): Uint8Array {
  const pairs = Object.keys(context).map((key) => {
    const value = context[key];
    if (key.length === 0) throw new SpecFormatError("empty key");
    if (typeof value !== "string") throw new SpecFormatError("value is not a string");
    return { key: utf8(key), value: utf8(value) };
  });
  if (pairs.length === 0) return new Uint8Array(0);
  pairs.sort((a, b) => Buffer.compare(a.key, b.key));
  const parts: Uint8Array[] = [u16(pairs.length)];
  for (const { key, value } of pairs) {
    parts.push(u16(key.length), key, u16(value.length), value);
  }
  const encoded = concat(...parts);
  if (encoded.length > SPEC_MAX_CONTEXT_BYTES) throw new SpecFormatError("context too large");
  return encoded;
}

/** §2.6. Returns the pairs in encoded order; a Map, so that a key "__proto__" stays a key. */
export function specDecodeContext(bytes: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  if (bytes.length === 0) return out;
  if (bytes.length > SPEC_MAX_CONTEXT_BYTES) throw new SpecFormatError("context too large");
  const reader = new SpecReader(bytes);
  const count = reader.u16();
  if (count === 0) throw new SpecFormatError("count of zero");
  let previous: Uint8Array | undefined;
  for (let i = 0; i < count; i++) {
    const key = reader.bytes(reader.u16());
    const value = reader.bytes(reader.u16());
    if (key.length === 0) throw new SpecFormatError("empty key");
    if (previous !== undefined && Buffer.compare(previous, key) >= 0) {
      throw new SpecFormatError("keys out of order or duplicated");
    }
    previous = key;
    out.set(fromUtf8(key), fromUtf8(value));
  }
  if (!reader.atEnd()) throw new SpecFormatError("trailing bytes");
  return out;
}

export function contextFromMap(map: ReadonlyMap<string, string>): SpecContext {
  const out: SpecContext = {};
  for (const [key, value] of map) {
    Object.defineProperty(out, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

/** Big-endian reader that refuses to read past the end. */
export class SpecReader {
  offset = 0;
  readonly #bytes: Uint8Array;

  constructor(bytes: Uint8Array, offset = 0) {
    this.#bytes = bytes;
    this.offset = offset;
  }

  bytes(length: number): Uint8Array {
    if (this.offset + length > this.#bytes.length) throw new SpecFormatError("truncated");
    const out = this.#bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  u8(): number {
    return this.bytes(1)[0]!;
  }

  u16(): number {
    const b = this.bytes(2);
    return (b[0]! << 8) | b[1]!;
  }

  u32(): number {
    const b = this.bytes(4);
    return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
  }

  remaining(): number {
    return this.#bytes.length - this.offset;
  }

  atEnd(): boolean {
    return this.offset === this.#bytes.length;
  }
}
