/**
 * What a decryptor accepts before it spends a KMS call (docs/FORMAT.md §5.7). Every violation
 * is an AccessDeniedError naming the rule: the message may be perfectly valid, the caller's
 * policy refuses it. (Authentication failures are InvalidCiphertextError instead.)
 */
import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { AccessDeniedError, ValidationError } from "../errors.ts";
import { assertObject, assertOneOf } from "../internal/assert.ts";
import type { EncryptedDataKey } from "../keyring/keyring.ts";
import { KMS_PROVIDER_ID } from "../keyring/kms-keyring.ts";
import type { EncryptionContext } from "../types.ts";
import { DEFAULT_MAX_ENCRYPTED_DATA_KEYS, MAX_FRAME_LENGTH, type MessageHeader } from "./format.ts";

export interface DecryptPolicy {
  /**
   * KMS key ids or ARNs whose copies may be used. Copies under other KMS keys are ignored.
   * Absent = any KMS key the keyring accepts.
   */
  readonly allowedKeyIds?: readonly string[];
  /**
   * Raw keyring keys whose copies may be used, as "namespace/name". Absent = any raw key the
   * keyring accepts.
   */
  readonly allowedKeyNames?: readonly string[];
  /** Pairs the message's encryption context must contain (it may contain others too). */
  readonly requiredEncryptionContext?: EncryptionContext;
  /** Most encrypted data keys a message may carry; default 16. */
  readonly maxEncryptedDataKeys?: number;
  /**
   * Largest frame length accepted, 1 B – 16 MiB (the default and the format's limit). A stream
   * decryptor buffers one frame, so this bounds its memory per message.
   */
  readonly maxFrameLength?: number;
  /** "required": reject unsigned suites; "forbidden": reject signed ones; default "allowed". */
  readonly signature?: "required" | "forbidden" | "allowed";
}

/**
 * Validates the policy and returns the key-count limit, which the header parser needs before the
 * policy itself can be applied (copies are counted as they are read).
 * @throws ValidationException for a limit out of range or a rule of the wrong shape.
 */
export function validateDecryptPolicy(policy: DecryptPolicy | undefined): number {
  if (policy !== undefined) {
    // A malformed rule must refuse, never quietly not apply: a misspelt `signature` would allow
    // signed and unsigned messages alike, and `allowedKeyNames` given as one string would match
    // any name that is a substring of it (String#includes).
    assertObject("policy", policy);
    assertStrings("policy.allowedKeyIds", policy.allowedKeyIds);
    assertStrings("policy.allowedKeyNames", policy.allowedKeyNames);
    encodeEncryptionContext(policy.requiredEncryptionContext, "policy.requiredEncryptionContext");
    if (policy.signature !== undefined) {
      assertOneOf("policy.signature", policy.signature, ["required", "forbidden", "allowed"]);
    }
  }
  const max = policy?.maxEncryptedDataKeys ?? DEFAULT_MAX_ENCRYPTED_DATA_KEYS;
  if (!Number.isInteger(max) || max < 1 || max > 0xffff) {
    throw new ValidationError('"policy.maxEncryptedDataKeys" must be an integer in 1–65535');
  }
  const frames = policy?.maxFrameLength;
  if (
    frames !== undefined &&
    (!Number.isInteger(frames) || frames < 1 || frames > MAX_FRAME_LENGTH)
  ) {
    throw new ValidationError(
      `"policy.maxFrameLength" must be an integer in 1–${MAX_FRAME_LENGTH}`,
    );
  }
  return max;
}

/**
 * Applies the policy to a parsed (not yet authenticated) header and returns the copies the
 * keyring may try.
 * @throws AccessDeniedException naming the violated rule.
 */
export function applyDecryptPolicy(
  policy: DecryptPolicy | undefined,
  header: MessageHeader,
): readonly EncryptedDataKey[] {
  if (policy === undefined) return header.encryptedDataKeys;
  const maxFrameLength = policy.maxFrameLength ?? MAX_FRAME_LENGTH;
  if (header.frameLength > maxFrameLength) {
    throw new AccessDeniedError(
      `the message's frames are ${header.frameLength} bytes; the decrypt policy allows at most ${maxFrameLength}`,
    );
  }
  const signed = header.suite.signature !== undefined;
  if (policy.signature === "required" && !signed) {
    throw new AccessDeniedError("the decrypt policy requires a signed message");
  }
  if (policy.signature === "forbidden" && signed) {
    throw new AccessDeniedError("the decrypt policy forbids signed messages");
  }
  for (const [key, value] of Object.entries(policy.requiredEncryptionContext ?? {})) {
    if (header.encryptionContext[key] !== value) {
      throw new AccessDeniedError(
        `the decrypt policy requires encryption context key "${key}" with a given value`,
      );
    }
  }
  const ids = policy.allowedKeyIds;
  const names = policy.allowedKeyNames;
  if (ids === undefined && names === undefined) return header.encryptedDataKeys;
  const allowed = header.encryptedDataKeys.filter((edk) =>
    edk.providerId === KMS_PROVIDER_ID
      ? ids === undefined ||
        ids.some((id) => id === edk.providerInfo || edk.providerInfo.endsWith(`:key/${id}`))
      : names === undefined || names.includes(`${edk.providerId}/${edk.providerInfo}`),
  );
  if (allowed.length === 0) {
    throw new AccessDeniedError(
      "none of the message's encrypted data keys is under a key the decrypt policy allows",
    );
  }
  return allowed;
}

function assertStrings(name: string, value: unknown): void {
  if (value === undefined) return;
  if (!Array.isArray(value) || !value.every((entry) => typeof entry === "string")) {
    throw new ValidationError(`"${name}" expected an array of strings`);
  }
}
