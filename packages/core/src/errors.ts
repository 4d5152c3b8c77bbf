/**
 * One error class per failure kind. `code` is the AWS KMS exception name where AWS has one, so
 * adapters and the server can map errors without string matching on messages. Messages name the
 * bad argument and the rule; they never carry plaintext or key material.
 */
export type KmsErrorCode =
  | "AccessDeniedException"
  | "AlreadyExistsException"
  | "ConflictException"
  | "DisabledException"
  | "DryRunOperationException"
  | "IncorrectKeyException"
  | "InvalidAliasNameException"
  | "InvalidArnException"
  | "InvalidCiphertextException"
  | "InvalidGrantIdException"
  | "InvalidGrantTokenException"
  | "InvalidKeyUsageException"
  | "InvalidMarkerException"
  | "KMSInternalException"
  | "KMSInvalidMacException"
  | "KMSInvalidSignatureException"
  | "KMSInvalidStateException"
  | "LimitExceededException"
  | "MalformedPolicyDocumentException"
  | "NotFoundException"
  | "TagException"
  | "UnsupportedOperationException"
  | "ValidationException"
  | "RootKeyError"
  | "KeyStoreConflictError";

export interface KmsErrorOptions {
  readonly cause?: unknown;
}

/** Base class of every error the KMS throws. */
export abstract class KmsError extends Error {
  abstract readonly code: KmsErrorCode;
  /** True when the caller can fix the request; false for internal failures. */
  readonly clientFault: boolean = true;

  constructor(message: string, options?: KmsErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
  }

  override get name(): string {
    return this.constructor.name;
  }

  /** The AWS exception name, for protocol adapters (`__type` in the AWS JSON protocol). */
  get awsExceptionName(): KmsErrorCode {
    return this.code;
  }

  toJSON(): { name: string; code: KmsErrorCode; message: string } {
    return { name: this.name, code: this.code, message: this.message };
  }
}

export class AccessDeniedError extends KmsError {
  readonly code = "AccessDeniedException";
}
export class AlreadyExistsError extends KmsError {
  readonly code = "AlreadyExistsException";
}
export class ConflictError extends KmsError {
  readonly code = "ConflictException";
}
export class DisabledError extends KmsError {
  readonly code = "DisabledException";
}
export class DryRunOperationError extends KmsError {
  readonly code = "DryRunOperationException";
}
export class IncorrectKeyError extends KmsError {
  readonly code = "IncorrectKeyException";
}
export class InvalidAliasNameError extends KmsError {
  readonly code = "InvalidAliasNameException";
}
export class InvalidArnError extends KmsError {
  readonly code = "InvalidArnException";
}
/** Decryption failed. The message is deliberately generic: it must not become an oracle. */
export class InvalidCiphertextError extends KmsError {
  readonly code = "InvalidCiphertextException";
}
export class InvalidGrantIdError extends KmsError {
  readonly code = "InvalidGrantIdException";
}
export class InvalidGrantTokenError extends KmsError {
  readonly code = "InvalidGrantTokenException";
}
export class InvalidKeyUsageError extends KmsError {
  readonly code = "InvalidKeyUsageException";
}
export class InvalidMarkerError extends KmsError {
  readonly code = "InvalidMarkerException";
}
export class KmsInternalError extends KmsError {
  readonly code = "KMSInternalException";
  override readonly clientFault = false;
}
export class InvalidMacError extends KmsError {
  readonly code = "KMSInvalidMacException";
}
export class InvalidSignatureError extends KmsError {
  readonly code = "KMSInvalidSignatureException";
}
export class InvalidStateError extends KmsError {
  readonly code = "KMSInvalidStateException";
}
export class LimitExceededError extends KmsError {
  readonly code = "LimitExceededException";
}
export class MalformedPolicyDocumentError extends KmsError {
  readonly code = "MalformedPolicyDocumentException";
}
export class NotFoundError extends KmsError {
  readonly code = "NotFoundException";
}
export class TagError extends KmsError {
  readonly code = "TagException";
}
export class UnsupportedOperationError extends KmsError {
  readonly code = "UnsupportedOperationException";
}
export class ValidationError extends KmsError {
  readonly code = "ValidationException";
}
/** The root key is missing, malformed, or is not the one the key store was created with. */
export class RootKeyError extends KmsError {
  readonly code = "RootKeyError";
  override readonly clientFault = false;
}
/**
 * A key store write lost an optimistic-concurrency race. The facade retries these itself; a
 * store implementation throws it when the expected revision no longer matches.
 */
export class KeyStoreConflictError extends KmsError {
  readonly code = "KeyStoreConflictError";
  override readonly clientFault = false;
}

export function isKmsError(value: unknown): value is KmsError {
  return value instanceof KmsError;
}
