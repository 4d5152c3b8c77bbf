import { ValidationError } from "../errors.ts";
import type { EncryptionContext } from "../types.ts";

const encoder = new TextEncoder();
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
  if (typeof context !== "object" || context === null || Array.isArray(context)) {
    throw new ValidationError(`"${argument}" expected an object of string pairs`);
  }
  const keys = Object.keys(context);
  if (keys.length === 0) return EMPTY;
  const pairs: [Uint8Array, Uint8Array][] = [];
  let size = 2;
  for (const key of keys) {
    const value = (context as Record<string, unknown>)[key];
    if (typeof value !== "string") {
      throw new ValidationError(`"${argument}" value for key "${key}" must be a string`);
    }
    if (key.length === 0) throw new ValidationError(`"${argument}" keys must not be empty`);
    const k = encoder.encode(key);
    const v = encoder.encode(value);
    size += 4 + k.length + v.length;
    if (size > MAX_ENCRYPTION_CONTEXT_BYTES) {
      throw new ValidationError(
        `"${argument}" must encode to at most ${MAX_ENCRYPTION_CONTEXT_BYTES} bytes`,
      );
    }
    pairs.push([k, v]);
  }
  pairs.sort((a, b) => Buffer.compare(a[0], b[0]));
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint16(0, pairs.length);
  let offset = 2;
  for (const [k, v] of pairs) {
    view.setUint16(offset, k.length);
    out.set(k, offset + 2);
    offset += 2 + k.length;
    view.setUint16(offset, v.length);
    out.set(v, offset + 2);
    offset += 2 + v.length;
  }
  return out;
}

/** Decodes a canonical encoding back into a context (used by formats that carry the context). */
export function decodeEncryptionContext(bytes: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  if (bytes.length === 0) return out;
  const decoder = new TextDecoder("utf-8", { fatal: true });
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
    out[decoder.decode(k)] = decoder.decode(v);
  }
  if (offset !== bytes.length || count === 0) {
    throw new ValidationError("encryption context has trailing bytes or no pairs");
  }
  return out;
}
