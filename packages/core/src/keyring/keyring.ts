/**
 * Keyrings wrap and unwrap the data key of an envelope message (docs/FORMAT.md §5.3). A message
 * carries one encrypted copy of its data key per wrapping key, and any one of them decrypts it.
 */
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { isKmsError, type KmsError, KmsInternalError, ValidationError } from "../errors.ts";
import type { EncryptionContext } from "../types.ts";

/** Length of every data key: the message suites all use AES-256. */
export const DATA_KEY_LENGTH = 32;

/** Whether a keyring's answer is a data key at all: a custom keyring may return anything. */
export function isDataKey(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array && value.length === DATA_KEY_LENGTH;
}

/**
 * The data key an encrypt request brings (a multi-keyring's generator made it), checked.
 * Wrapped as it is, a key of another length would give a copy that can never open: the raw
 * AES keyring would write it into its fixed 60-byte layout (cut short, or padded with zeros
 * that its tag then covers), and every keyring's decrypt refuses a key that is not 32 bytes. A
 * caller composing keyrings itself would find out only when the copy is needed (escrow).
 * @throws ValidationException when `dataKey` is present and not a 32-byte Uint8Array.
 */
export function requestDataKey(request: EncryptDataKeyRequest): Uint8Array | undefined {
  const dataKey: unknown = request.dataKey;
  if (dataKey === undefined || isDataKey(dataKey)) return dataKey;
  throw new ValidationError(`"dataKey" expected a ${DATA_KEY_LENGTH}-byte Uint8Array`);
}

/** One wrapped copy of the data key, as stored in a message header. */
export interface EncryptedDataKey {
  /** Who can unwrap it: `"kms"` for KMS keys, the key namespace for raw keyrings. */
  readonly providerId: string;
  /** Which key: the KMS key ARN, or the raw key's name. */
  readonly providerInfo: string;
  readonly ciphertext: Uint8Array;
}

export interface EncryptDataKeyRequest {
  /** The message's full encryption context, which keyrings bind the wrapped key to. */
  readonly encryptionContext: EncryptionContext;
  /** Algorithm suite id of the message. */
  readonly suiteId: number;
  /** Present when an earlier keyring (a multi-keyring's generator) already made the key. */
  readonly dataKey?: Uint8Array;
}

export interface EncryptDataKeyResult {
  /**
   * The 32-byte data key (generated here when the request had none). The built-in keyrings'
   * results print it as `[redacted: 32 bytes]` when the whole result is inspected.
   */
  readonly dataKey: Uint8Array;
  /** At least one encrypted copy per wrapping key of this keyring. */
  readonly encryptedDataKeys: readonly EncryptedDataKey[];
}

export interface DecryptDataKeyRequest {
  readonly encryptionContext: EncryptionContext;
  readonly suiteId: number;
  /** The copies the decrypt policy allows; the keyring tries those it recognises. */
  readonly encryptedDataKeys: readonly EncryptedDataKey[];
}

/**
 * A source of data keys. Implementations: KmsKeyring (any KmsLike), RawAesKeyring,
 * RawRsaKeyring, MultiKeyring.
 */
export interface Keyring {
  /**
   * The data-key cache keys entries by it, so two keyrings share cached keys only when their
   * identities are equal. Make it unique per instance, or equal only for keyrings that hold the
   * same keys and are authorized alike (KmsKeyring: same client, keys, caller and grant tokens).
   */
  readonly identity: string;
  /**
   * Generates a data key when `request.dataKey` is absent, and wraps it under each of this
   * keyring's keys.
   */
  encryptDataKey(request: EncryptDataKeyRequest): Promise<EncryptDataKeyResult>;
  /**
   * Returns the data key from the first encrypted copy this keyring can unwrap, or undefined
   * when it can unwrap none. Failures of single copies are not errors.
   */
  decryptDataKey(request: DecryptDataKeyRequest): Promise<Uint8Array | undefined>;
}

let counter = 0;

/** A process-unique suffix for keyring identities (no key-derived value ever goes in one). */
export function nextKeyringInstance(): number {
  counter += 1;
  return counter;
}

/**
 * Canonical context encodings the message layer already computed, by context object, for the
 * duration of one keyring call: the raw AES keyring needs the same bytes as its AAD, and
 * encoding twice per message is measurable on small payloads. Entries are set just before the
 * call and removed right after, so a context object a caller mutates later never meets a stale
 * entry. (A keyring that mutates the request's context mid-call gets the header's bytes, which
 * are the ones that count.)
 */
const encodedContexts = new WeakMap<object, Uint8Array>();

/** Runs `call` with `bytes` registered as the canonical encoding of `context`. */
export async function withEncodedContext<T>(
  context: EncryptionContext,
  bytes: Uint8Array,
  call: () => Promise<T>,
): Promise<T> {
  encodedContexts.set(context, bytes);
  try {
    return await call();
  } finally {
    encodedContexts.delete(context);
  }
}

/** The canonical encoding of `context` (docs/FORMAT.md §2), reusing a registered one. */
export function encodedContext(context: EncryptionContext): Uint8Array {
  return encodedContexts.get(context) ?? encodeEncryptionContext(context);
}

/**
 * What the message layer throws when a keyring call throws: a KmsError as it is (a KMS refusal
 * or outage keeps its code), anything else — a custom keyring's TypeError, a driver's network
 * error, a thrown string — as a KmsInternalError with it as the `cause`, so callers can rely on
 * the error contract (`code`, `clientFault`) whatever keyring they were given.
 */
export function keyringFailure(
  error: unknown,
  call: "encryptDataKey" | "decryptDataKey",
): KmsError {
  if (isKmsError(error)) return error;
  return new KmsInternalError(`the keyring's ${call} failed; see cause`, { cause: error });
}
