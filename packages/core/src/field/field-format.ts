import { InvalidCiphertextError } from "../errors.ts";

/**
 * Byte layout of a field value (docs/FORMAT.md §6.1):
 *
 *   randomized:    0xC1 || data key id (16) || IV (12) || AES-256-GCM(tag || payload) || tag (16)
 *   deterministic: 0xC2 || data key id (16) || SIV (16) || AES-SIV ciphertext(tag || payload)
 *
 * Text columns hold `kms1:` + base64url (no padding) of those bytes.
 */
export const FORMAT_RANDOMIZED = 0xc1;
export const FORMAT_DETERMINISTIC = 0xc2;
export const DATA_KEY_ID_LENGTH = 16;
export const HEADER_LENGTH = 1 + DATA_KEY_ID_LENGTH;
export const IV_LENGTH = 12;
export const TAG_LENGTH = 16;
export const SIV_LENGTH = 16;
/** Bytes a randomized value adds to its payload, type tag included: 46. */
export const RANDOMIZED_OVERHEAD = HEADER_LENGTH + IV_LENGTH + TAG_LENGTH + 1;
/** Bytes a deterministic value adds to its payload, type tag included: 34. */
export const DETERMINISTIC_OVERHEAD = HEADER_LENGTH + SIV_LENGTH + 1;
export const TEXT_PREFIX = "kms1:";

export type FieldCiphertextMode = "randomized" | "deterministic";

export interface ParsedFieldCiphertext {
  readonly mode: FieldCiphertextMode;
  readonly dataKeyId: string;
}

const HEX: string[] = [];
for (let i = 0; i < 256; i++) HEX.push(i.toString(16).padStart(2, "0"));

export function hexOf(bytes: Uint8Array, from = 0, to = bytes.length): string {
  let out = "";
  for (let i = from; i < to; i++) out += HEX[bytes[i] as number];
  return out;
}

export function bytesOfHex(hex: string): Uint8Array {
  return Uint8Array.from(Buffer.from(hex, "hex"));
}

/** The one error every field decryption failure raises: generic, so it is no oracle. */
export function invalidFieldCiphertext(cause?: unknown): InvalidCiphertextError {
  return new InvalidCiphertextError(
    "field value is not valid ciphertext",
    cause === undefined ? undefined : { cause },
  );
}

/** Reads the header, or returns undefined when the bytes are not a field ciphertext. */
export function parseFieldCiphertext(bytes: Uint8Array): ParsedFieldCiphertext | undefined {
  const format = bytes[0];
  if (format === FORMAT_RANDOMIZED && bytes.length >= RANDOMIZED_OVERHEAD) {
    return { mode: "randomized", dataKeyId: hexOf(bytes, 1, HEADER_LENGTH) };
  }
  if (format === FORMAT_DETERMINISTIC && bytes.length >= DETERMINISTIC_OVERHEAD) {
    return { mode: "deterministic", dataKeyId: hexOf(bytes, 1, HEADER_LENGTH) };
  }
  return undefined;
}

/** True when `text` carries this library's prefix (the value was written by the engine). */
export function isFieldCiphertextText(text: string): boolean {
  return text.startsWith(TEXT_PREFIX);
}

/**
 * True when a database comparing text under a case- or accent-insensitive collation (MySQL's and
 * MariaDB's default `_ci` ones) may find `text` equal to a value starting with `kms1:`: the prefix
 * in any case, width or accent, with characters such a collation ignores in between. Such text is
 * refused wherever a value is refused as ciphertext, and never becomes a legacy lookup form: sent
 * in clear, "KMS1:" + the rest of a leaked ciphertext would match the stored row and return its
 * plaintext. Reading stays with `isFieldCiphertextText`: the engine writes the prefix one way.
 */
export function mayCollateAsFieldCiphertextText(text: string): boolean {
  const head = text.slice(0, TEXT_PREFIX.length);
  // Printable ASCII collates by case alone: the common case, decided without normalizing.
  if (/^[\x20-\x7e]*$/.test(head)) {
    return head.toLowerCase() === TEXT_PREFIX;
  }
  // Compatibility forms (fullwidth, Kelvin sign, long s) fold onto ASCII under NFKD; accents,
  // zero-width and control characters are dropped, as collations ignore them.
  const folded = text.normalize("NFKD").replace(COLLATION_IGNORED, "").toLowerCase();
  return folded.startsWith(TEXT_PREFIX);
}

const COLLATION_IGNORED = /[\p{M}\p{Default_Ignorable_Code_Point}\p{Cc}\p{Cf}]/gu;

export function toFieldText(bytes: Uint8Array): string {
  const { buffer, byteOffset, byteLength } = bytes;
  // A value carved from the current slab encodes through the slab's own Buffer: Buffer#toString
  // reads a range without making a view of it first.
  if (buffer === slab) {
    return TEXT_PREFIX + slabBuffer.toString("base64url", byteOffset, byteOffset + byteLength);
  }
  return TEXT_PREFIX + Buffer.from(buffer, byteOffset, byteLength).toString("base64url");
}

/*
 * Reading the text form (FORMAT §6.1 item 5). Only the canonical spelling decodes: the prefix,
 * then base64url without padding, nothing outside `A–Z a–z 0–9 - _`, no length ≡ 1 (mod 4), and
 * the unused low bits of a final group of 2 or 3 characters zero, so that one value has one text
 * (a deterministic value could otherwise dodge equality lookups and unique indexes). Buffer's
 * decoder checks none of this: it skips junk, takes "+" and "/" too, ignores unused bits and
 * folds non-Latin-1 characters onto ASCII ones.
 *
 * Two paths, one rule: a short text (most field values) is copied out by Buffer#write, then
 * checked and decoded in one JS pass over its bytes, as Buffer's decoder and the regular
 * expression that must guard it cost some 1.5 times that pass there (32-byte strings), and a
 * pass reading the string itself (charCodeAt) twice as much; past JS_DECODE_MAX characters the
 * native decoder's speed per character wins, and the text is checked by FIELD_TEXT first.
 */

const BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** The 6-bit value of each base64url character's byte; 0xff for every other byte. */
const SEXTETS = new Uint8Array(256).fill(0xff);
for (let i = 0; i < BASE64URL.length; i++) SEXTETS[BASE64URL.charCodeAt(i)] = i;
const FIELD_TEXT = /^kms1:[A-Za-z0-9_-]*$/;
/** Texts up to this many characters (92 bytes: a randomized string of 46) decode in the JS pass. */
export const JS_DECODE_MAX = 128;
/** The UTF-8 of the short text being decoded: three bytes a UTF-16 unit at most. */
const textUtf8 = Buffer.alloc(JS_DECODE_MAX * 3);
/** `textUtf8` as a plain Uint8Array: the JS pass reads Uint8Arrays only. */
const textBytes = new Uint8Array(textUtf8.buffer, textUtf8.byteOffset, textUtf8.length);

/** Bytes of the base64url after the prefix of `text`; -1 when its length is no base64url. */
function decodedLength(text: string): number {
  const chars = text.length - TEXT_PREFIX.length;
  const tail = chars & 3;
  return tail === 1 || chars < 0 ? -1 : (chars >> 2) * 3 + (tail === 0 ? 0 : tail - 1);
}

/**
 * The bits of the last sextet of a final group of `tail` characters that carry no data: 4 of a
 * group of 2 (one byte), 2 of a group of 3 (two bytes), none of a full group.
 */
function unusedBits(tail: number, last: number): number {
  return tail === 0 ? 0 : last & (tail === 2 ? 0x0f : 0x03);
}

/**
 * Checks `text` (of a length `decodedLength` accepts, at most JS_DECODE_MAX) and decodes its
 * base64url into `out` (room for `decodedLength`) in one pass.
 * @throws InvalidCiphertextException when `text` is not prefix + canonical base64url.
 */
function decodeShortFieldText(text: string, out: Uint8Array): void {
  if (!text.startsWith(TEXT_PREFIX)) throw invalidFieldCiphertext();
  // Up to the first character outside ASCII, byte i is character i; that character's first
  // byte (0x80 or above, 0xff in the table) is then read where the character stands, and
  // refused.
  textUtf8.write(text);
  const bytes = textBytes;
  const table = SEXTETS;
  const tail = (text.length - TEXT_PREFIX.length) & 3;
  const groupsEnd = text.length - tail;
  // Every sextet, or-ed: one test after the loop finds a byte outside the alphabet (0xff from
  // the table) wherever it was.
  let sextets = 0;
  let at = 0;
  for (let i = TEXT_PREFIX.length; i < groupsEnd; i += 4) {
    const a = table[bytes[i] as number] as number;
    const b = table[bytes[i + 1] as number] as number;
    const c = table[bytes[i + 2] as number] as number;
    const d = table[bytes[i + 3] as number] as number;
    sextets |= a | b | c | d;
    out[at] = (a << 2) | (b >> 4);
    out[at + 1] = (b << 4) | (c >> 2);
    out[at + 2] = (c << 6) | d;
    at += 3;
  }
  if (sextets > 0x3f || (tail !== 0 && !decodeFinalGroup(groupsEnd, tail, out, at))) {
    throw invalidFieldCiphertext();
  }
}

/**
 * Decodes the final group of 2 or 3 characters, at `from` in `textBytes`, into `out` at `at`;
 * false when one of them is outside the alphabet or any unused bit is set. Apart from the loop
 * of decodeShortFieldText, which V8 compiles to slower code with this in the same function.
 */
function decodeFinalGroup(from: number, tail: number, out: Uint8Array, at: number): boolean {
  const a = SEXTETS[textBytes[from] as number] as number;
  const b = SEXTETS[textBytes[from + 1] as number] as number;
  // Sextet 0 stands in for the missing third character of a group of 2.
  const c = tail === 3 ? (SEXTETS[textBytes[from + 2] as number] as number) : 0;
  out[at] = (a << 2) | (b >> 4);
  if (tail === 3) out[at + 1] = (b << 4) | (c >> 2);
  const unused = unusedBits(tail, tail === 2 ? b : c);
  return (a | b | c) <= 0x3f && unused === 0;
}

/**
 * The checks of the native path, on a text of a length `decodedLength` accepts.
 * @throws InvalidCiphertextException when `text` is not prefix + canonical base64url.
 */
function checkLongFieldText(text: string): void {
  const tail = (text.length - TEXT_PREFIX.length) & 3;
  // The last character is in the alphabet once FIELD_TEXT has matched.
  const last = SEXTETS[text.charCodeAt(text.length - 1) & 0x7f] as number;
  if (!FIELD_TEXT.test(text) || unusedBits(tail, last) !== 0) throw invalidFieldCiphertext();
}

/** @throws InvalidCiphertextException when `text` is not prefix + canonical base64url. */
export function fromFieldText(text: string): Uint8Array {
  const length = decodedLength(text);
  if (length < 0) throw invalidFieldCiphertext();
  if (text.length <= JS_DECODE_MAX) {
    // Buffer's pool, as the native path's Buffer.from: an ArrayBuffer of its own per small value
    // costs more than decoding it. Every byte is written before the bytes are returned.
    const pooled = Buffer.allocUnsafe(length);
    const out = new Uint8Array(pooled.buffer, pooled.byteOffset, length);
    decodeShortFieldText(text, out);
    return out;
  }
  checkLongFieldText(text);
  const buf = Buffer.from(text.slice(TEXT_PREFIX.length), "base64url");
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Texts up to this length decode into the shared scratch buffer of readFieldText. */
const SCRATCH_TEXT_LENGTH = 4096;
const scratch = Buffer.alloc((SCRATCH_TEXT_LENGTH * 3) / 4);
/** `scratch` as a plain Uint8Array: the JS pass then only ever writes to Uint8Arrays. */
const scratchBytes = new Uint8Array(scratch.buffer, scratch.byteOffset, scratch.length);
/** The text whose bytes `scratch` holds; undefined while (or after) a text is refused there. */
let currentText: string | undefined;
/**
 * The views of `scratch` readFieldText returns, one per length, made when a length is first met:
 * a row's columns have lengths of their own, and a view made whenever the length changed was an
 * object per value of a result set.
 */
const views: (Uint8Array<ArrayBuffer> | undefined)[] = [];
/** The view readFieldText returned last. */
let view = new Uint8Array(scratch.buffer, scratch.byteOffset, 0);

/**
 * `fromFieldText` for a synchronous read path: small values decode into one buffer shared by
 * every call, which spares an allocation (and its garbage) per value of a result set; values
 * of one length share the view returned. The bytes hold their value until the next call: check
 * `isCurrentRead` after anything that may run caller code (a getter may call back into the
 * engine).
 * @throws InvalidCiphertextException as `fromFieldText`.
 */
export function readFieldText(text: string): Uint8Array {
  if (text.length > SCRATCH_TEXT_LENGTH) return fromFieldText(text);
  const length = decodedLength(text);
  if (length < 0) throw invalidFieldCiphertext();
  // Cleared first: a text refused halfway has overwritten part of the bytes read last.
  currentText = undefined;
  if (text.length <= JS_DECODE_MAX) {
    decodeShortFieldText(text, scratchBytes);
  } else {
    checkLongFieldText(text);
    scratch.write(text.slice(TEXT_PREFIX.length), 0, "base64url");
  }
  currentText = text;
  view = views[length] ??= new Uint8Array(scratch.buffer, scratch.byteOffset, length);
  return view;
}

/**
 * False when `bytes` came from `readFieldText(text)` and a later call reused their buffer for
 * another text (or refused one there): the view itself may be the same object again.
 */
export function isCurrentRead(bytes: Uint8Array, text: string): boolean {
  // Identity first: reading a view's `buffer` costs more than the rest, and the bytes of a
  // result set's values are nearly always the current read.
  return (bytes === view && text === currentText) || bytes.buffer !== scratch.buffer;
}

/**
 * Slab size. Each new slab is an ArrayBuffer with a backing store of its own, which cost about
 * as much as the cipher on a small value every hundred values at 8 KiB; at 64 KiB a slab serves
 * some 800 small values. A value kept alive keeps its slab alive: keep a `slice()` of a value you
 * hold for long among many you drop.
 */
const SLAB_SIZE = 64 * 1024;
/** Larger values get an ArrayBuffer of their own. */
const SLAB_MAX_VALUE = 4 * 1024;
let slab = new ArrayBuffer(0);
/** A Buffer over `slab`, for `toFieldText`. */
let slabBuffer = Buffer.from(slab);
let used = 0;

/**
 * `size` zero-filled bytes for a new field ciphertext. Ciphertext is public, so small values are
 * carved from slabs that hold field ciphertext and nothing else (as publicBuffer does for every
 * public output, but a plain Uint8Array view: building a Buffer, then the view the engine
 * returns, cost more than the cipher's own allocations on a small value).
 */
export function ciphertextBytes(size: number): Uint8Array {
  if (size > SLAB_MAX_VALUE) return new Uint8Array(size);
  if (used + size > slab.byteLength) {
    slab = new ArrayBuffer(SLAB_SIZE);
    slabBuffer = Buffer.from(slab);
    used = 0;
  }
  const out = new Uint8Array(slab, used, size);
  // 8-byte alignment, so typed-array views over a value stay cheap.
  used = (used + size + 7) & ~7;
  return out;
}
