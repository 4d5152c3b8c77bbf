/**
 * The symmetric ciphertext blob (docs/FORMAT.md §3). Every field the decryptor acts on sits in
 * the header, and the whole header is part of the AES-GCM additional data, so a blob cannot be
 * re-pointed at another key, version or algorithm without failing authentication.
 *
 *   offset  size  field
 *   0       1     format version (0x01)
 *   1       1     algorithm (0x01 = AES-256-GCM, SYMMETRIC_DEFAULT)
 *   2       16    key id (UUID, 16 raw bytes)
 *   18      4     key version (uint32 BE)
 *   22      12    IV
 *   34      n     ciphertext
 *   34+n    16    GCM tag
 */
import { InvalidCiphertextError } from "../errors.ts";
import { uuidFromBytes, uuidToBytes } from "../internal/uuid.ts";

export const BLOB_FORMAT_VERSION = 0x01;
export const ALGORITHM_AES_256_GCM = 0x01;
export const BLOB_HEADER_LENGTH = 22;
export const IV_LENGTH = 12;
export const TAG_LENGTH = 16;
/** Header + IV + tag: what a blob adds to its plaintext. */
export const BLOB_OVERHEAD = BLOB_HEADER_LENGTH + IV_LENGTH + TAG_LENGTH;

export interface BlobHeader {
  readonly keyId: string;
  readonly keyVersion: number;
}

export interface ParsedBlob extends BlobHeader {
  /** Header bytes, the prefix of the additional authenticated data. */
  readonly header: Uint8Array;
  readonly iv: Uint8Array;
  readonly ciphertext: Uint8Array;
  readonly tag: Uint8Array;
}

/** Writes the header into the first BLOB_HEADER_LENGTH bytes of `out`. */
export function writeBlobHeader(out: Uint8Array, keyId: string, keyVersion: number): void {
  out[0] = BLOB_FORMAT_VERSION;
  out[1] = ALGORITHM_AES_256_GCM;
  out.set(uuidToBytes(keyId), 2);
  out[18] = keyVersion >>> 24;
  out[19] = (keyVersion >>> 16) & 0xff;
  out[20] = (keyVersion >>> 8) & 0xff;
  out[21] = keyVersion & 0xff;
}

const GENERIC = "the ciphertext is not valid or cannot be decrypted with the given context";

/**
 * Splits a blob into its fields without trusting any of them yet.
 * @throws InvalidCiphertextError for anything that is not a well-formed version-1 blob.
 */
export function parseBlob(blob: Uint8Array): ParsedBlob {
  if (!(blob instanceof Uint8Array) || blob.length < BLOB_OVERHEAD + 1) {
    throw new InvalidCiphertextError(GENERIC);
  }
  if (blob[0] !== BLOB_FORMAT_VERSION || blob[1] !== ALGORITHM_AES_256_GCM) {
    throw new InvalidCiphertextError(GENERIC);
  }
  const keyVersion = ((blob[18]! << 24) | (blob[19]! << 16) | (blob[20]! << 8) | blob[21]!) >>> 0;
  if (keyVersion === 0) throw new InvalidCiphertextError(GENERIC);
  const tagStart = blob.length - TAG_LENGTH;
  return {
    keyId: uuidFromBytes(blob.subarray(2, 18)),
    keyVersion,
    header: blob.subarray(0, BLOB_HEADER_LENGTH),
    iv: blob.subarray(BLOB_HEADER_LENGTH, BLOB_HEADER_LENGTH + IV_LENGTH),
    ciphertext: blob.subarray(BLOB_HEADER_LENGTH + IV_LENGTH, tagStart),
    tag: blob.subarray(tagStart),
  };
}

export function invalidCiphertext(cause?: unknown): InvalidCiphertextError {
  return new InvalidCiphertextError(GENERIC, cause === undefined ? undefined : { cause });
}
