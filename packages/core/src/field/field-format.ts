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

const FIELD_TEXT = /^kms1:[A-Za-z0-9_-]*$/;

/** The 6-bit value of a base64url character already checked against FIELD_TEXT. */
function sextet(code: number): number {
  if (code >= 0x61) return code - 0x61 + 26; // a-z
  if (code >= 0x41) return code === 0x5f ? 63 : code - 0x41; // A-Z, "_"
  if (code >= 0x30) return code - 0x30 + 52; // 0-9
  return 62; // "-"
}

/**
 * The checks of the text form: prefix, strict base64url alphabet, and one spelling per value.
 * Buffer's decoder skips junk silently (and folds non-Latin-1 characters onto ASCII ones): a
 * strict check keeps one value one encoding.
 */
function checkFieldText(text: string): void {
  const tail = (text.length - TEXT_PREFIX.length) % 4;
  if (tail === 1 || !FIELD_TEXT.test(text)) {
    throw new InvalidCiphertextError("field value is not valid ciphertext");
  }
  // A final group of 2 or 3 characters carries 4 or 2 bits more than the bytes need; the
  // decoder ignores them, so a text with any of them set would be a second spelling of the
  // same value (a deterministic value could then dodge equality lookups and unique indexes).
  if (tail !== 0 && (sextet(text.charCodeAt(text.length - 1)) & (tail === 2 ? 0x0f : 0x03)) !== 0) {
    throw new InvalidCiphertextError("field value is not valid ciphertext");
  }
}

/** @throws InvalidCiphertextException when `text` is not prefix + base64url. */
export function fromFieldText(text: string): Uint8Array {
  checkFieldText(text);
  const buf = Buffer.from(text.slice(TEXT_PREFIX.length), "base64url");
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Texts up to this length decode into the shared scratch buffer of readFieldText. */
const SCRATCH_TEXT_LENGTH = 4096;
const scratch = Buffer.alloc((SCRATCH_TEXT_LENGTH * 3) / 4);
let current: Uint8Array | undefined;

/**
 * `fromFieldText` for a synchronous read path: small values decode into one buffer shared by
 * every call, which spares an allocation (and its garbage) per value of a result set. The bytes
 * hold their value until the next call: check `isCurrentRead` after anything that may run
 * caller code (a getter may call back into the engine).
 * @throws InvalidCiphertextException as `fromFieldText`.
 */
export function readFieldText(text: string): Uint8Array {
  if (text.length > SCRATCH_TEXT_LENGTH) return fromFieldText(text);
  checkFieldText(text);
  const length = scratch.write(text.slice(TEXT_PREFIX.length), 0, "base64url");
  current = new Uint8Array(scratch.buffer, scratch.byteOffset, length);
  return current;
}

/** False when `bytes` came from readFieldText and a later call reused their buffer. */
export function isCurrentRead(bytes: Uint8Array): boolean {
  return bytes === current || bytes.buffer !== scratch.buffer;
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
