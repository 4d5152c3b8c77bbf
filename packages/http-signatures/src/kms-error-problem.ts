/**
 * How a `KmsError` is answered over HTTP and logged, shared by the framework layers so Express
 * and Nest send one answer (and write one log line) for the same error.
 */
import { isKmsError, type KmsError, type KmsErrorCode } from "@kms/core";
import { PROBLEM_TYPE_BASE, type ProblemDetails } from "./problem.ts";

/** HTTP status for each KMS error code; client faults not listed answer 400. */
const STATUS: Partial<Record<KmsErrorCode, number>> = {
  AccessDeniedException: 403,
  // The ciphertext is not readable in this request's encryption context: another tenant's
  // data, or altered. Not a 400: the request was well formed, the caller lacks access.
  InvalidCiphertextException: 403,
  IncorrectKeyException: 403,
  NotFoundException: 404,
  AlreadyExistsException: 409,
  ConflictException: 409,
  DisabledException: 409,
  KMSInvalidStateException: 409,
  LimitExceededException: 429,
};

/**
 * Decryption failures stay generic (no oracle telling "wrong tenant" from "altered"). So do
 * denials, key states and key usage: their messages name the server's principal, key ARNs or
 * aliases and the policy statement that denied, which are the operator's business (in the audit
 * trail), not the client's.
 */
const GENERIC_DETAIL: Partial<Record<KmsErrorCode, string>> = {
  AccessDeniedException: "the key management service denied an operation this request needs",
  NotFoundException: "a key this request needs does not exist",
  DisabledException: "a key this request needs is disabled",
  KMSInvalidStateException:
    "a key this request needs is not in a state that allows this operation (for example, pending deletion)",
  InvalidCiphertextException:
    "the ciphertext cannot be decrypted in this request's encryption context " +
    "(it belongs to another tenant or context, or it was altered)",
  IncorrectKeyException: "the ciphertext was not encrypted under the requested key",
  InvalidKeyUsageException: "a key this request needs does not allow this operation",
  UnsupportedOperationException:
    "a key this request needs does not support this operation in its current state or type",
};

/**
 * The problem+json body for a KMS error: `type` `kms/<code>`, status by code
 * (`InvalidCiphertextException`, `IncorrectKeyException`, `AccessDeniedException` 403,
 * `NotFoundException` 404, conflicts and key states 409, `LimitExceededException` 429, other
 * client faults 400), a fixed detail where the message would name keys, principals or tell
 * tenants apart, else the message. An internal fault gets an opaque 500 `kms/internal`: log it
 * with `describeKmsFault`.
 */
export function kmsErrorProblem(error: KmsError): ProblemDetails {
  if (!error.clientFault) {
    return {
      type: `${PROBLEM_TYPE_BASE}kms/internal`,
      title: "Key management failure",
      status: 500,
      detail: "the key management service failed; see the server logs",
    };
  }
  return {
    type: `${PROBLEM_TYPE_BASE}kms/${error.code}`,
    title: error.code,
    status: STATUS[error.code] ?? 400,
    // Messages of client faults name an argument and a rule, never plaintext or key material.
    detail: GENERIC_DETAIL[error.code] ?? error.message,
    code: error.code,
  };
}

/** A driver's error code (`SQLITE_BUSY`, `23505`, `ER_LOCK_DEADLOCK`); anything else is left out. */
const DRIVER_CODE = /^[\w.-]{1,64}$/;

/** How many causes below the fault are logged; a longer chain is cut there. */
const MAX_CAUSES = 4;

/**
 * One cause, for the log. A KMS error's message names an argument and a rule, never plaintext
 * or key material (core's guarantee), so it is kept. Any other error's message is left out: a
 * driver's or an ORM's can echo the statement and its values (a unique violation quoting the
 * duplicate, a `QueryFailedError` carrying the query), which may be decrypted data. Its class
 * and its code, which say what failed, remain.
 */
function describeCause(cause: unknown): string {
  if (!(cause instanceof Error)) return "caused by a non-Error";
  if (isKmsError(cause)) return `caused by ${cause.name}: ${cause.message}`;
  const code: unknown = (cause as { code?: unknown }).code;
  const shown = typeof code === "string" || typeof code === "number" ? String(code) : "";
  return DRIVER_CODE.test(shown)
    ? `caused by ${cause.name} (code ${shown}; message not logged)`
    : `caused by ${cause.name} (message not logged)`;
}

/**
 * The log text for a fault answered with an opaque 500: its stack, then up to four causes (the
 * store or driver errors below it), one a line — a `KmsError` with its name and message, any
 * other error by class and `code` only (`caused by SqliteError (code SQLITE_BUSY; message not
 * logged)`), since such messages can quote a statement's values.
 */
export function describeKmsFault(error: KmsError): string {
  const lines = [error.stack ?? `${error.name}: ${error.message}`];
  let cause: unknown = error.cause;
  for (let depth = 0; cause !== undefined && depth < MAX_CAUSES; depth++) {
    lines.push(describeCause(cause));
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return lines.join("\n");
}
