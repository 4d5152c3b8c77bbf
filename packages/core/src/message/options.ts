import { DataKeyCache } from "../caching/data-key-cache.ts";
import { ValidationError } from "../errors.ts";
import { describe } from "../internal/assert.ts";
import type { Keyring } from "../keyring/keyring.ts";
import type { EncryptionContext } from "../types.ts";
import type { DecryptPolicy } from "./decrypt-policy.ts";
import type { MessageSuite } from "./format.ts";

export interface EncryptMessageOptions {
  /** Makes and wraps the data key. */
  readonly keyring: Keyring;
  /**
   * Non-secret pairs stored in the header and bound to the data key. Keys starting with
   * "kms-message:" are reserved.
   */
  readonly encryptionContext?: EncryptionContext;
  /** Default AES_256_GCM_HKDF_SHA512_COMMIT_KEY (no signature). */
  readonly suite?: MessageSuite;
  /**
   * Plaintext bytes per frame, 1 B – 16 MiB. Default 1 MiB for `encryptMessage` (the whole
   * plaintext is in memory already), 64 KiB for streams and files (the encryptor holds one
   * frame). A stream decryptor holds one frame too.
   */
  readonly frameLength?: number;
  /** Reuse data keys within the cache's limits (not used with signing suites). */
  readonly dataKeyCache?: DataKeyCache;
}

export interface EncryptStreamOptions extends EncryptMessageOptions {
  /**
   * The plaintext size, when known in advance. Required for data-key caching on streams (the
   * byte limit is charged up front); writing more than declared fails the stream.
   */
  readonly plaintextLength?: number;
}

export interface DecryptMessageOptions {
  /** Unwraps one of the message's encrypted data keys. */
  readonly keyring: Keyring;
  /**
   * When given, the message's context (without "kms-message:" keys) must equal it exactly,
   * like KMS Decrypt; a mismatch is InvalidCiphertextError.
   */
  readonly encryptionContext?: EncryptionContext;
  /** Which keys, contexts and suites are acceptable (violations: AccessDeniedError). */
  readonly policy?: DecryptPolicy;
  /** Reuse unwrapped data keys within the cache's age limit. */
  readonly dataKeyCache?: DataKeyCache;
}

/** What the header said, once it authenticated. */
export interface MessageInfo {
  readonly suite: MessageSuite;
  readonly messageId: Uint8Array;
  /** The full context, including a signing suite's "kms-message:public-key". */
  readonly encryptionContext: Readonly<Record<string, string>>;
  readonly frameLength: number;
  readonly encryptedDataKeys: readonly { providerId: string; providerInfo: string }[];
}

export interface DecryptStreamOptions extends DecryptMessageOptions {
  /** Called once the header has authenticated, before any plaintext is released. */
  readonly onHeader?: (info: MessageInfo) => void;
}

/**
 * Checked before the keyring is called: a cache of the wrong shape would otherwise be a
 * TypeError, on decrypt only after the data key was unwrapped.
 * @throws ValidationException for anything but a DataKeyCache.
 */
export function assertDataKeyCache(value: unknown): void {
  if (value !== undefined && !(value instanceof DataKeyCache)) {
    throw new ValidationError(`"dataKeyCache" expected a DataKeyCache, got ${describe(value)}`);
  }
}

/** @throws ValidationException for an `onHeader` that is not a function. */
export function assertOnHeader(value: unknown): void {
  if (value !== undefined && typeof value !== "function") {
    throw new ValidationError(`"onHeader" expected a function, got ${describe(value)}`);
  }
}
