import {
  AccessDeniedError,
  AlreadyExistsError,
  ConflictError,
  DisabledError,
  DryRunOperationError,
  IncorrectKeyError,
  InvalidAliasNameError,
  InvalidArnError,
  InvalidCiphertextError,
  InvalidGrantIdError,
  InvalidGrantTokenError,
  InvalidKeyUsageError,
  InvalidMacError,
  InvalidMarkerError,
  InvalidSignatureError,
  InvalidStateError,
  isKmsError,
  type KmsError,
  type KmsErrorCode,
  KmsInternalError,
  LimitExceededError,
  MalformedPolicyDocumentError,
  NotFoundError,
  TagError,
  UnsupportedOperationError,
  ValidationError,
} from "@kms/core";

type KmsErrorClass = new (message: string, options?: { readonly cause?: unknown }) => KmsError;

/**
 * The AWS exception names that core has a class for. RootKeyError and KeyStoreConflictError are
 * codes of core's own storage layer, not AWS exceptions: an endpoint naming them is reporting
 * its own internal failure, which is what KmsInternalError already says. Typed as a complete
 * table so that a code added to core fails the build here until it is mapped or excluded.
 */
const ERROR_CLASSES: {
  readonly [C in Exclude<KmsErrorCode, "RootKeyError" | "KeyStoreConflictError">]: KmsErrorClass;
} = {
  AccessDeniedException: AccessDeniedError,
  AlreadyExistsException: AlreadyExistsError,
  ConflictException: ConflictError,
  DisabledException: DisabledError,
  DryRunOperationException: DryRunOperationError,
  IncorrectKeyException: IncorrectKeyError,
  InvalidAliasNameException: InvalidAliasNameError,
  InvalidArnException: InvalidArnError,
  InvalidCiphertextException: InvalidCiphertextError,
  InvalidGrantIdException: InvalidGrantIdError,
  InvalidGrantTokenException: InvalidGrantTokenError,
  InvalidKeyUsageException: InvalidKeyUsageError,
  InvalidMarkerException: InvalidMarkerError,
  KMSInternalException: KmsInternalError,
  KMSInvalidMacException: InvalidMacError,
  KMSInvalidSignatureException: InvalidSignatureError,
  KMSInvalidStateException: InvalidStateError,
  LimitExceededException: LimitExceededError,
  MalformedPolicyDocumentException: MalformedPolicyDocumentError,
  NotFoundException: NotFoundError,
  TagException: TagError,
  UnsupportedOperationException: UnsupportedOperationError,
  ValidationException: ValidationError,
};

/** The message the SDK gives an exception whose response had none. */
const SDK_NO_MESSAGE = "UnknownError";

/** What the SDK throws for an error response: a ServiceException named after `__type`. */
interface ServiceException extends Error {
  readonly $fault: "client" | "server";
}

// Structural rather than `instanceof KMSServiceException`: with the SDK as a peer dependency
// the application's copy and the one this package resolves need not be the same module.
function isServiceException(error: unknown): error is ServiceException {
  if (!(error instanceof Error)) return false;
  const fault: unknown = (error as { $fault?: unknown }).$fault;
  return fault === "client" || fault === "server";
}

/**
 * Turns what `KMSClient.send` threw into @kms/core's error hierarchy, for code that calls the SDK
 * directly and wants the same errors as `awsKms`. The original error is `cause` (its
 * `$metadata.requestId` finds the call in CloudTrail), except for an answer the SDK could not
 * read: that error holds the answer, which may be a plaintext or data key, and `cause` is then an
 * Error of the same name and `$metadata` without it.
 *
 * - An AWS exception core has a class for (NotFoundException, DisabledException,
 *   KMSInvalidStateException, InvalidCiphertextException, AccessDeniedException,
 *   ValidationException, KMSInvalidSignatureException, …) becomes that class, with the same
 *   `code` and AWS's message, or `AWS KMS <operation> failed with <name>` when AWS sent none.
 * - Any other AWS exception (DependencyTimeoutException, KeyUnavailableException,
 *   CustomKeyStore*, ThrottlingException, the signature and access key refusals, @kms/server's
 *   InsecureTransportException, …) becomes KmsInternalError whose message names it.
 * - Anything else (network, credentials, an unreadable response) becomes KmsInternalError
 *   naming only the error's class: such messages can quote response bytes.
 * @param operation The AWS operation name, for messages (e.g. "Decrypt").
 */
export function toKmsError(error: unknown, operation = "request"): KmsError {
  if (isKmsError(error)) return error;
  if (isServiceException(error)) {
    const name = error.name;
    const failed = `AWS KMS ${operation} failed with ${name}`;
    // AWS sends some exceptions without a message (InvalidCiphertextException,
    // KMSInvalidSignatureException), and the SDK fills in its placeholder.
    const message =
      error.message === SDK_NO_MESSAGE || error.message === "" ? undefined : error.message;
    if (Object.hasOwn(ERROR_CLASSES, name)) {
      const ErrorClass = ERROR_CLASSES[name as keyof typeof ERROR_CLASSES];
      return new ErrorClass(message ?? failed, { cause: error });
    }
    // These are AWS-side faults or quotas the caller cannot fix by changing the request, and
    // the SDK has already retried the retryable ones; one class keeps adapters' handling
    // (isKmsError, clientFault false → an opaque 500) unchanged.
    return new KmsInternalError(message === undefined ? failed : `${failed}: ${message}`, {
      cause: error,
    });
  }
  const kind = error instanceof Error ? error.name : typeof error;
  return new KmsInternalError(`AWS KMS ${operation} could not be completed (${kind}); see cause`, {
    cause: error instanceof Error && readingAnswer(error) ? withheld(error) : error,
  });
}

/**
 * The SDK attaches the answer it failed to read to the error, hidden (`$response`, and for JSON
 * `$responseBodyText`): a Decrypt's plaintext or a data key, in base64, when the answer was one.
 */
function readingAnswer(error: Error): boolean {
  return Object.hasOwn(error, "$response") || Object.hasOwn(error, "$responseBodyText");
}

/**
 * An error raised while reading an answer, without the answer: its class and `$metadata` (HTTP
 * status, request id, attempts) are kept. Its message is not, since it can quote the answer too
 * (V8's JSON.parse quotes the text around a fault: `Unexpected token 'p', ..."Plaintext":p6enp6en"...`),
 * and loggers print a cause's message with the error's.
 */
function withheld(error: Error): Error {
  const copy = new Error(
    "the AWS KMS answer could not be read; the error's message and the answer are withheld, " +
      "as they may hold plaintext or key material",
  );
  copy.name = error.name;
  const metadata: unknown = (error as { $metadata?: unknown }).$metadata;
  return metadata === undefined ? copy : Object.assign(copy, { $metadata: metadata });
}
