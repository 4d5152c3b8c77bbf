/**
 * The envelope message format, version 1 (docs/FORMAT.md §5): suites, header layout, key
 * schedule and the per-frame IV/AAD construction. Everything here is synchronous and
 * allocation-light; the encryptor and decryptor drive it.
 */
import { createCipheriv, createSecretKey, hkdfSync, type KeyObject } from "node:crypto";
import {
  decodeEncryptionContext,
  MAX_ENCRYPTION_CONTEXT_BYTES,
} from "../envelope/encryption-context.ts";
import { AccessDeniedError, InvalidCiphertextError, ValidationError } from "../errors.ts";
import { publicBuffer } from "../internal/public-bytes.ts";
import type { EncryptedDataKey } from "../keyring/keyring.ts";

export const MESSAGE_FORMAT_VERSION = 0x01;
export const MESSAGE_ID_LENGTH = 32;
export const COMMITMENT_LENGTH = 32;
export const TAG_LENGTH = 16;
export const IV_LENGTH = 12;
/**
 * Default plaintext bytes per frame of streams and files: large enough that per-frame costs
 * vanish next to AES, small enough that the encrypting stream holds little.
 */
export const DEFAULT_FRAME_LENGTH = 64 * 1024;
/**
 * Default frame length of `encryptMessage`, whose caller already holds the whole plaintext. Each
 * frame costs a cipher of its own and one output node:crypto allocates and the encryptor copies;
 * a 1 MiB message in one frame takes ~0.6× the CPU time of one in 64 KiB frames (measured on
 * Node 24). A stream decryptor holds one frame, so this is also what
 * reading such a message as a stream costs (`DecryptPolicy.maxFrameLength` can refuse more).
 */
export const DEFAULT_MESSAGE_FRAME_LENGTH = 1024 * 1024;
/** Largest frame length a message may declare; it bounds the decryptor's buffering. */
export const MAX_FRAME_LENGTH = 16 * 1024 * 1024;
/** Default cap on encrypted data keys accepted on decrypt (decrypt policy can lower it). */
export const DEFAULT_MAX_ENCRYPTED_DATA_KEYS = 16;
/** Marker in place of a sequence number that opens the final frame. */
export const FINAL_FRAME_MARKER = 0xffffffff;
/** Sequence numbers run 1..MAX_SEQUENCE; IV 0 is the header's. */
export const MAX_SEQUENCE = 0xfffffffe;
/** Encryption-context key holding a signing suite's public key (base64 compressed point). */
export const PUBLIC_KEY_CONTEXT_KEY = "kms-message:public-key";
/** Context keys with this prefix belong to the format; callers may not set them. */
export const RESERVED_CONTEXT_PREFIX = "kms-message:";

/** Algorithm suites. All use AES-256-GCM under a key derived with HKDF-SHA-512 and commit to it. */
export type MessageSuite =
  | "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
  | "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384"
  | "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256";

export interface SuiteInfo {
  readonly name: MessageSuite;
  readonly id: number;
  /** node:crypto curve name and hash of the trailing signature, if any. */
  readonly signature?: { readonly curve: "P-384" | "P-256"; readonly hash: "sha384" | "sha256" };
}

export const SUITES: readonly SuiteInfo[] = [
  { name: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY", id: 0x0001 },
  {
    name: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384",
    id: 0x0002,
    signature: { curve: "P-384", hash: "sha384" },
  },
  {
    name: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P256",
    id: 0x0003,
    signature: { curve: "P-256", hash: "sha256" },
  },
];

export const DEFAULT_SUITE: MessageSuite = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY";

export function suiteByName(name: unknown): SuiteInfo {
  const suite = SUITES.find((s) => s.name === name);
  if (suite === undefined) {
    throw new ValidationError(`"suite" must be one of ${SUITES.map((s) => s.name).join(", ")}`);
  }
  return suite;
}

const GENERIC =
  "the message is not valid or cannot be decrypted with the given keyring and context";

/** The one error every authentication or format failure becomes: no oracle. */
export function invalidMessage(cause?: unknown): InvalidCiphertextError {
  return new InvalidCiphertextError(GENERIC, cause === undefined ? undefined : { cause });
}

export interface MessageHeader {
  readonly suite: SuiteInfo;
  readonly messageId: Uint8Array;
  /** Canonical encoding of the context, as stored. */
  readonly encryptionContextBytes: Uint8Array;
  readonly encryptionContext: Readonly<Record<string, string>>;
  readonly encryptedDataKeys: readonly EncryptedDataKey[];
  readonly frameLength: number;
  readonly commitment: Uint8Array;
  /** Every header byte before the tag: the tag's additional data, and the signature's start. */
  readonly authenticated: Uint8Array;
  readonly tag: Uint8Array;
}

/** The header fields before the tag, as the encryptor knows them. */
export interface HeaderFields {
  readonly suite: SuiteInfo;
  readonly messageId: Uint8Array;
  readonly encryptionContextBytes: Uint8Array;
  readonly encryptedDataKeys: readonly EncryptedDataKey[];
  readonly frameLength: number;
  readonly commitment: Uint8Array;
}

/**
 * Size of the header up to (not including) its tag.
 * @throws ValidationException when the keyring's copies do not fit the u16 length fields.
 */
export function headerBodyLength(fields: HeaderFields): number {
  const edks = fields.encryptedDataKeys;
  if (edks.length === 0 || edks.length > 0xffff) {
    throw new ValidationError("the keyring must return 1–65535 encrypted data keys");
  }
  let size = 1 + 2 + MESSAGE_ID_LENGTH + 2 + fields.encryptionContextBytes.length + 2;
  for (const edk of edks) {
    const id = Buffer.byteLength(edk.providerId, "utf8");
    const info = Buffer.byteLength(edk.providerInfo, "utf8");
    if (id > 0xffff || info > 0xffff || edk.ciphertext.length > 0xffff) {
      throw new ValidationError("an encrypted data key field exceeds 65535 bytes");
    }
    size += 6 + id + info + edk.ciphertext.length;
  }
  return size + 4 + COMMITMENT_LENGTH;
}

/**
 * Serializes the header up to (not including) its tag into `out` at 0, which must hold
 * `headerBodyLength(fields)` bytes; returns that length. Writing in place lets the one-shot
 * encryptor build the whole message in a single buffer.
 */
export function writeHeaderBody(out: Buffer, fields: HeaderFields): number {
  let at = out.writeUInt8(MESSAGE_FORMAT_VERSION, 0);
  at = out.writeUInt16BE(fields.suite.id, at);
  out.set(fields.messageId, at);
  at += MESSAGE_ID_LENGTH;
  at = out.writeUInt16BE(fields.encryptionContextBytes.length, at);
  out.set(fields.encryptionContextBytes, at);
  at += fields.encryptionContextBytes.length;
  at = out.writeUInt16BE(fields.encryptedDataKeys.length, at);
  for (const edk of fields.encryptedDataKeys) {
    // Strings are written straight into the header (no intermediate Buffer per field).
    const id = out.write(edk.providerId, at + 2, "utf8");
    at = out.writeUInt16BE(id, at) + id;
    const info = out.write(edk.providerInfo, at + 2, "utf8");
    at = out.writeUInt16BE(info, at) + info;
    at = out.writeUInt16BE(edk.ciphertext.length, at);
    out.set(edk.ciphertext, at);
    at += edk.ciphertext.length;
  }
  at = out.writeUInt32BE(fields.frameLength, at);
  out.set(fields.commitment, at);
  return at + COMMITMENT_LENGTH;
}

/**
 * The whole header (body and tag) in a buffer of its own, for the streaming encryptor.
 * @throws ValidationException as `headerBodyLength`.
 */
export function encodeHeader(fields: HeaderFields, key: KeyObject): Buffer {
  const bodyLength = headerBodyLength(fields);
  const out = publicBuffer(bodyLength + TAG_LENGTH);
  writeHeaderBody(out, fields);
  writeHeaderTag(key, out, bodyLength);
  return out;
}

/** A parsed header and its length, or how many bytes the header needs at least. */
export type HeaderParse =
  | { readonly header: MessageHeader; readonly length: number }
  | { readonly header: undefined; readonly needed: number };

/**
 * Rules a decryptor applies to header fields the moment they are read (§5.6), so a stream is
 * refused before the rest of a header it would refuse anyway is buffered. Each throws to refuse.
 */
export interface HeaderChecks {
  /** Copies allowed; a larger count is refused before any copy is read. */
  readonly maxEncryptedDataKeys: number;
  /** Called once the suite id (byte 3) is read. */
  suite?(suite: SuiteInfo): void;
  /** Called once the encryption context is read and decoded, before any copy is read. */
  context?(context: Readonly<Record<string, string>>): void;
  /** Called once the frame length is read. */
  frameLength?(frameLength: number): void;
}

/**
 * Parses one header from bytes that arrive in pieces. Each call to `parse` passes the header's
 * bytes received so far (the same prefix, grown); the parser resumes where the last call
 * stopped, so a header in n pieces costs O(header) in all, not O(n × header), and calls each
 * check as soon as its field is complete. When more bytes are needed it says how many the
 * header holds at least (a bound that grows as length fields are read), so a stream calls it
 * again only once that many arrived. Nothing in the result is authenticated.
 */
export class HeaderParser {
  readonly #checks: HeaderChecks;
  #suite: SuiteInfo | undefined;
  #context: Record<string, string> | undefined;
  /** Offset of the copy count, once the context was read. */
  #countAt = 0;
  #count = 0;
  /** Offset of the next unread length field of the copies, and how many were walked. */
  #at = 0;
  #fields = 0;
  /** The frame length, once read and checked (the rest of the header may not have arrived). */
  #frameLength = 0;

  constructor(checks: HeaderChecks) {
    this.#checks = checks;
  }

  /**
   * @throws InvalidCiphertextException for a malformed header; whatever a check throws
   *   (AccessDeniedException for more than `maxEncryptedDataKeys` copies).
   */
  parse(bytes: Uint8Array): HeaderParse {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const short = (end: number): HeaderParse | undefined =>
      end > bytes.length ? { header: undefined, needed: end } : undefined;
    if (this.#suite === undefined) {
      const more = short(3);
      if (more !== undefined) return more;
      if (bytes[0] !== MESSAGE_FORMAT_VERSION) throw invalidMessage();
      const suiteId = view.getUint16(1);
      const suite = SUITES.find((s) => s.id === suiteId);
      if (suite === undefined) throw invalidMessage();
      this.#checks.suite?.(suite);
      this.#suite = suite;
    }
    const suite = this.#suite;
    if (this.#context === undefined) {
      const contextAt = 3 + MESSAGE_ID_LENGTH + 2;
      const lengthOnly = short(contextAt);
      if (lengthOnly !== undefined) return lengthOnly;
      const contextLength = view.getUint16(contextAt - 2);
      // Refused on its length field (§2.5), not after up to 64 KiB of a context that could
      // never decode has been buffered.
      if (contextLength > MAX_ENCRYPTION_CONTEXT_BYTES) throw invalidMessage();
      const more = short(contextAt + contextLength + 2);
      if (more !== undefined) return more;
      const countAt = contextAt + contextLength;
      let context: Record<string, string>;
      try {
        context = decodeEncryptionContext(bytes.subarray(contextAt, countAt));
      } catch (cause) {
        throw invalidMessage(cause);
      }
      if (!reservedKeysFit(context, suite)) throw invalidMessage();
      this.#checks.context?.(context);
      const count = view.getUint16(countAt);
      if (count === 0) throw invalidMessage();
      const max = this.#checks.maxEncryptedDataKeys;
      if (count > max) {
        throw new AccessDeniedError(
          `the message carries ${count} encrypted data keys; the decrypt policy allows at most ${max}`,
        );
      }
      this.#context = context;
      this.#countAt = countAt;
      this.#count = count;
      this.#at = countAt + 2;
    }
    // Lengths first, without decoding or allocating: each copy has three length-prefixed fields.
    while (this.#fields < 3 * this.#count) {
      const more = short(this.#at + 2) ?? short(this.#at + 2 + view.getUint16(this.#at));
      if (more !== undefined) return more;
      this.#at += 2 + view.getUint16(this.#at);
      this.#fields += 1;
    }
    let at = this.#at;
    if (this.#frameLength === 0) {
      // Checked as soon as its four bytes are in (§5.6), not once the commitment and tag
      // behind it have arrived too.
      const more = short(at + 4);
      if (more !== undefined) return more;
      const frameLength = view.getUint32(at);
      if (frameLength === 0 || frameLength > MAX_FRAME_LENGTH) throw invalidMessage();
      this.#checks.frameLength?.(frameLength);
      this.#frameLength = frameLength;
    }
    const frameLength = this.#frameLength;
    const more = short(at + 4 + COMMITMENT_LENGTH + TAG_LENGTH);
    if (more !== undefined) return more;
    at += 4;
    const commitment = bytes.subarray(at, at + COMMITMENT_LENGTH);
    at += COMMITMENT_LENGTH;
    const authenticated = bytes.subarray(0, at);
    const tag = bytes.subarray(at, at + TAG_LENGTH);
    // Views into this call's bytes: earlier calls may have seen another (smaller) buffer.
    let from = this.#countAt + 2;
    const part = (): Uint8Array => {
      const n = view.getUint16(from);
      from += 2 + n;
      return bytes.subarray(from - n, from);
    };
    const encryptedDataKeys: EncryptedDataKey[] = [];
    try {
      for (let i = 0; i < this.#count; i++) {
        encryptedDataKeys.push({
          providerId: UTF8.decode(part()),
          providerInfo: UTF8.decode(part()),
          ciphertext: part(),
        });
      }
    } catch (cause) {
      throw invalidMessage(cause);
    }
    return {
      header: {
        suite,
        // A copy: it is handed to callers (MessageInfo), who may keep it after reusing their
        // buffer. The other fields stay views of `bytes`: the decryptor reads them while it
        // opens the header and keeps none.
        messageId: new Uint8Array(bytes.subarray(3, 3 + MESSAGE_ID_LENGTH)),
        encryptionContextBytes: bytes.subarray(3 + MESSAGE_ID_LENGTH + 2, this.#countAt),
        encryptionContext: this.#context,
        encryptedDataKeys,
        frameLength,
        commitment,
        authenticated,
        tag,
      },
      length: at + TAG_LENGTH,
    };
  }
}

/**
 * Parses a header from the start of `bytes` in one call, with no checks but the copy count.
 * @throws as `HeaderParser.parse`.
 */
export function parseHeader(bytes: Uint8Array, maxEncryptedDataKeys: number): HeaderParse {
  return new HeaderParser({ maxEncryptedDataKeys }).parse(bytes);
}

/**
 * The encryptor writes exactly one reserved key, the public key of a signing suite (§5.8).
 * Anything else under the prefix is refused before any unwrap: the exact-context check ignores
 * reserved keys, and an unsigned message must not present a signer's public key to whoever
 * reads `MessageInfo.encryptionContext`.
 */
function reservedKeysFit(context: Readonly<Record<string, string>>, suite: SuiteInfo): boolean {
  const signed = suite.signature !== undefined;
  if (signed && !Object.hasOwn(context, PUBLIC_KEY_CONTEXT_KEY)) return false;
  for (const key of Object.keys(context)) {
    if (key.startsWith(RESERVED_CONTEXT_PREFIX) && !(signed && key === PUBLIC_KEY_CONTEXT_KEY)) {
      return false;
    }
  }
  return true;
}

// ignoreBOM: a leading U+FEFF stays in the provider id or info, so a header reads back exactly
// as the keyring wrote it (one encoding per header).
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const KEY_SCHEDULE_LABEL = "KMSMSG1 KEYS";
/** HKDF info per suite id, built once: "KMSMSG1 KEYS" || suite id (u16 BE). */
const KEY_SCHEDULE_INFO = new Map<number, Buffer>(
  SUITES.map((suite) => {
    const info = Buffer.alloc(KEY_SCHEDULE_LABEL.length + 2);
    info.write(KEY_SCHEDULE_LABEL, 0, "ascii");
    info.writeUInt16BE(suite.id, KEY_SCHEDULE_LABEL.length);
    return [suite.id, info];
  }),
);

/**
 * The key schedule of the committing suites (§5.4): one HKDF-SHA-512 call over the data key,
 * salted with the message id, with info = "KMSMSG1 KEYS" || suite id (u16 BE), yields 64 bytes:
 * the first 32 are the message key, the last 32 the key commitment stored in the header. (The
 * AWS Encryption SDK's 0x0478 makes two HKDF calls with separate labels; halves of one HKDF
 * output are independent in the same way, and one call costs half as much, which matters for
 * small messages.) A fresh message id makes the message key unique even when a cached data key
 * is reused, which is what allows deterministic per-frame IVs.
 */
export function deriveMessageKey(
  dataKey: Uint8Array,
  messageId: Uint8Array,
  suite: SuiteInfo,
): { key: KeyObject; commitment: Uint8Array } {
  // KeyObjects are node's fast path for both calls (measured on Node 24: hkdfSync over a raw
  // buffer ~10 µs vs ~6 µs with createSecretKey; createCipheriv with a raw key ~11 µs vs ~3 µs
  // with a KeyObject), so one KeyObject per message beats passing the key bytes around.
  const okm = hkdfSync(
    "sha512",
    createSecretKey(dataKey),
    messageId,
    KEY_SCHEDULE_INFO.get(suite.id)!,
    64,
  );
  const keyBytes = new Uint8Array(okm, 0, 32);
  const key = createSecretKey(keyBytes);
  keyBytes.fill(0);
  // A view, not a copy: the commitment is public and its half of `okm` is never reused.
  return { key, commitment: new Uint8Array(okm, 32, 32) };
}

/** Writes sequence number `seq` into a 12-byte IV: 8 zero bytes then seq (uint32 BE). */
export function setFrameIv(iv: Buffer, seq: number): void {
  iv.writeUInt32BE(seq, 8);
}

export const FRAME_AAD_LENGTH = MESSAGE_ID_LENGTH + 1 + 4 + 8;
export const KIND_REGULAR = 0x00;
export const KIND_FINAL = 0x01;

/** Frame AAD: message id || kind (u8) || seq (u32 BE) || plaintext length (u64 BE). */
export function newFrameAad(messageId: Uint8Array): Buffer {
  const aad = Buffer.alloc(FRAME_AAD_LENGTH);
  aad.set(messageId, 0);
  return aad;
}

export function setFrameAad(aad: Buffer, kind: number, seq: number, length: number): void {
  aad[MESSAGE_ID_LENGTH] = kind;
  aad.writeUInt32BE(seq, MESSAGE_ID_LENGTH + 1);
  aad.writeUInt32BE(Math.floor(length / 2 ** 32), MESSAGE_ID_LENGTH + 5);
  aad.writeUInt32BE(length >>> 0, MESSAGE_ID_LENGTH + 9);
}

const ZERO_IV = Buffer.alloc(IV_LENGTH);

/** The header tag: AES-GCM under the message key with the all-zero IV over the header body. */
export function headerTag(key: KeyObject, authenticated: Uint8Array): Buffer {
  const cipher = createCipheriv("aes-256-gcm", key, ZERO_IV, { authTagLength: TAG_LENGTH });
  cipher.setAAD(authenticated);
  cipher.final();
  return cipher.getAuthTag();
}

/** Computes the tag over `out[0, bodyLength)` and writes it right after. */
export function writeHeaderTag(key: KeyObject, out: Buffer, bodyLength: number): void {
  out.set(headerTag(key, out.subarray(0, bodyLength)), bodyLength);
}
