import { ValidationError } from "../errors.ts";
import { describe } from "../internal/assert.ts";
import { isWellFormed } from "../internal/unicode.ts";
import type { EncryptionContext } from "../types.ts";

const EMPTY = new Uint8Array(0);

/** Upper bound on the canonical encoding, so a context always fits a uint16-framed header. */
export const MAX_ENCRYPTION_CONTEXT_BYTES = 8192;

/**
 * Validates an encryption context and returns its canonical encoding (docs/FORMAT.md §2):
 * pairs sorted by the UTF-8 bytes of their key, each key and value length-prefixed (uint16 BE),
 * preceded by the pair count (uint16 BE). The empty context encodes to zero bytes, so a
 * ciphertext made without a context is not bound to any context structure at all.
 *
 * Sorting by bytes rather than by JS string order keeps the encoding identical across
 * languages for keys outside the BMP.
 * @throws ValidationError naming the offending key when the context is malformed.
 */
export function encodeEncryptionContext(
  context: EncryptionContext | undefined,
  argument = "encryptionContext",
): Uint8Array {
  if (context === undefined) return EMPTY;
  // Only plain objects: a Map, Date or class instance has no own enumerable pairs and would
  // silently encrypt with no context at all.
  const proto: unknown =
    typeof context === "object" && context !== null ? Object.getPrototypeOf(context) : undefined;
  if (proto !== Object.prototype && proto !== null) {
    throw new ValidationError(`"${argument}" expected an object of string pairs`);
  }
  const keys = Object.keys(context);
  const count = keys.length;
  if (count === 0) return EMPTY;
  // Each value is read once: an accessor (or Proxy) answering differently on a second read must
  // not make the bytes written differ from the bytes sized and validated, which would leave
  // uninitialised memory in, or overrun, the buffer below. Kept in flat arrays rather than a
  // pair per key: this runs on every encrypt and decrypt.
  const values: string[] = [];
  const keyLengths: number[] = [];
  const valueLengths: number[] = [];
  let size = 2;
  let ascii = true;
  for (let i = 0; i < count; i++) {
    const key = keys[i] as string;
    const value = (context as Record<string, unknown>)[key];
    if (typeof value !== "string") {
      throw new ValidationError(`"${argument}" value for key "${key}" must be a string`);
    }
    if (key.length === 0) throw new ValidationError(`"${argument}" keys must not be empty`);
    if (!isWellFormed(key) || !isWellFormed(value)) {
      throw new ValidationError(
        `"${argument}" keys and values must be well-formed Unicode (no lone surrogates)`,
      );
    }
    const keyBytes = Buffer.byteLength(key, "utf8");
    const valueBytes = Buffer.byteLength(value, "utf8");
    if (keyBytes !== key.length) ascii = false;
    size += 4 + keyBytes + valueBytes;
    if (size > MAX_ENCRYPTION_CONTEXT_BYTES) {
      throw new ValidationError(
        `"${argument}" must encode to at most ${MAX_ENCRYPTION_CONTEXT_BYTES} bytes`,
      );
    }
    values.push(value);
    keyLengths.push(keyBytes);
    valueLengths.push(valueBytes);
  }
  const order = sortedOrder(keys, ascii);
  // A plain Uint8Array of its own, written in place. Not a view of a Buffer: a context fits
  // V8's on-heap typed arrays, and reading such a Buffer's `.buffer` to make the view moves it
  // off the heap, which cost more than the whole encoding.
  const out = new Uint8Array(size);
  writeUint16(out, 0, count);
  let offset = 2;
  for (let n = 0; n < count; n++) {
    const i = order[n] as number;
    offset = writeField(out, offset, keys[i] as string, keyLengths[i] as number);
    offset = writeField(out, offset, values[i] as string, valueLengths[i] as number);
  }
  return out;
}

/** Up to this many pairs, an insertion sort: no comparator closure, no sort call. */
const INSERTION_SORT_MAX = 16;

/**
 * The indexes of `keys` in the order of their UTF-8 bytes. For ASCII keys JS string order is
 * that order; otherwise the encoded bytes are compared (UTF-16 code-unit order differs from it
 * for characters beyond U+FFFF). Keys are distinct, so the order is unique.
 */
function sortedOrder(keys: readonly string[], ascii: boolean): number[] {
  const order: number[] = [];
  for (let i = 0; i < keys.length; i++) order.push(i);
  if (keys.length === 1) return order;
  const before = ascii
    ? (a: number, b: number): boolean => (keys[a] as string) < (keys[b] as string)
    : (a: number, b: number): boolean =>
        Buffer.compare(
          Buffer.from(keys[a] as string, "utf8"),
          Buffer.from(keys[b] as string, "utf8"),
        ) < 0;
  if (keys.length > INSERTION_SORT_MAX) return order.sort((a, b) => (before(a, b) ? -1 : 1));
  for (let i = 1; i < order.length; i++) {
    const x = order[i] as number;
    let j = i - 1;
    while (j >= 0 && before(x, order[j] as number)) {
      order[j + 1] = order[j] as number;
      j--;
    }
    order[j + 1] = x;
  }
  return order;
}

function writeUint16(out: Uint8Array, at: number, value: number): void {
  out[at] = value >>> 8;
  out[at + 1] = value & 0xff;
}

/** Short ASCII text is copied code unit by code unit: cheaper than a call into the encoder. */
const COPY_ASCII_MAX = 64;

const utf8 = new TextEncoder();

/**
 * Writes `text` (`bytes` long in UTF-8, well-formed) length-prefixed at `at`; returns the offset
 * after it.
 */
function writeField(out: Uint8Array, at: number, text: string, bytes: number): number {
  writeUint16(out, at, bytes);
  const start = at + 2;
  // UTF-8 is as long as the UTF-16 text only when every code unit is ASCII.
  if (bytes === text.length && bytes <= COPY_ASCII_MAX) {
    for (let i = 0; i < bytes; i++) out[start + i] = text.charCodeAt(i);
  } else {
    utf8.encodeInto(text, out.subarray(start, start + bytes));
  }
  return start + bytes;
}

/**
 * Decodes a canonical encoding back into a context (used by formats that carry the context).
 * @throws ValidationError for input that is not a Uint8Array, and for anything the encoder
 * would not write: truncation, trailing bytes, no pairs, an empty key, keys out of order or
 * repeated, invalid UTF-8, more than 8192 bytes.
 */
export function decodeEncryptionContext(bytes: Uint8Array): Record<string, string> {
  // A public entry point: junk (a string, an ArrayBuffer, undefined) is the caller's error to
  // name, not a TypeError from the DataView below.
  if (!(bytes instanceof Uint8Array)) {
    throw new ValidationError(`"bytes" expected a Uint8Array, got ${describe(bytes)}`);
  }
  const out: Record<string, string> = {};
  if (bytes.length === 0) return out;
  // Only what the encoder can write (§2.4, §2.5), so decoding then encoding gives the same bytes.
  if (bytes.length > MAX_ENCRYPTION_CONTEXT_BYTES) {
    throw new ValidationError(
      `encryption context is longer than ${MAX_ENCRYPTION_CONTEXT_BYTES} bytes`,
    );
  }
  // ignoreBOM: a leading U+FEFF is part of the key or value; stripping it would decode two
  // distinct encodings ("a" and "\uFEFFa") to one key, so the context read back would no longer
  // be the one the bytes bind.
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (offset: number, n: number): void => {
    if (offset + n > bytes.length) throw new ValidationError("encryption context is truncated");
  };
  need(0, 2);
  const count = view.getUint16(0);
  let offset = 2;
  let previous: Uint8Array | undefined;
  for (let i = 0; i < count; i++) {
    need(offset, 2);
    const kLen = view.getUint16(offset);
    if (kLen === 0) throw new ValidationError("encryption context has an empty key");
    need(offset + 2, kLen);
    const k = bytes.subarray(offset + 2, offset + 2 + kLen);
    offset += 2 + kLen;
    need(offset, 2);
    const vLen = view.getUint16(offset);
    need(offset + 2, vLen);
    const v = bytes.subarray(offset + 2, offset + 2 + vLen);
    offset += 2 + vLen;
    if (previous !== undefined && Buffer.compare(previous, k) >= 0) {
      throw new ValidationError("encryption context is not in canonical order");
    }
    previous = k;
    let key: string;
    let value: string;
    try {
      key = decoder.decode(k);
      value = decoder.decode(v);
    } catch {
      throw new ValidationError("encryption context is not valid UTF-8");
    }
    // defineProperty, not assignment: a key named "__proto__" must stay a key.
    Object.defineProperty(out, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  if (offset !== bytes.length || count === 0) {
    throw new ValidationError("encryption context has trailing bytes or no pairs");
  }
  return out;
}
