import { isKmsError, type KmsError, type KmsErrorCode } from "@kms/core";
import type { ErrorRequestHandler } from "express";
import { kmsContextOf } from "./kms-context.ts";
import { PROBLEM_TYPE_BASE, type ProblemDetails, sendProblem } from "./problem.ts";

// The same table and wording as @kms/nestjs's `kmsErrorProblem`, so a client sees one answer
// whichever adapter serves it. Adapters do not import each other; see the README.

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

/** The problem+json body for a KMS error: status by code, internal faults kept opaque. */
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

/**
 * One cause, for the log. A KMS error's message names an argument and a rule, never plaintext
 * or key material (core's guarantee), so it is kept. Any other error's message is left out: a
 * driver's or an ORM's can echo the statement and its values (a unique violation quoting the
 * duplicate), which may be decrypted data. Its class and its code, which say what failed, remain.
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

/** The fault's stack, then each cause (the store or driver error) as `describeCause` puts it. */
function describeFault(error: KmsError): string {
  const lines = [error.stack ?? `${error.name}: ${error.message}`];
  let cause: unknown = error.cause;
  for (let depth = 0; cause !== undefined && depth < 4; depth++) {
    lines.push(describeCause(cause));
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return lines.join("\n");
}

export interface KmsErrorHandlerOptions {
  /**
   * Receives each internal fault (an opaque 500 to the client), prefixed with the request id:
   * its stack, then each cause — a KMS error with its message, any other error (a driver's,
   * whose message can quote query values) by class and code only. Default `console.error`.
   */
  readonly log?: (message: string) => void;
  /** Builds the body (and status) for a KMS error; default `kmsErrorProblem`. */
  readonly toProblem?: (error: KmsError) => ProblemDetails;
}

/**
 * Express error-handling middleware answering a `KmsError` as `application/problem+json`
 * (`kms/<code>`): `InvalidCiphertextException` → 403 with a generic detail (another tenant's
 * data and altered data read alike), `AccessDeniedException` 403, `NotFoundException` 404,
 * disabled or pending-deletion keys and conflicts 409, `LimitExceededException` 429, other
 * client faults 400, internal faults 500 with an opaque body (logged). Anything else, and a
 * response whose head has already left, goes on to the next error handler. Mount it after
 * your routes: `app.use(kmsErrorHandler())`.
 */
export function kmsErrorHandler(options: KmsErrorHandlerOptions = {}): ErrorRequestHandler {
  const log = options.log ?? ((message: string) => console.error(message));
  const toProblem = options.toProblem ?? kmsErrorProblem;
  return (error: unknown, req, res, next) => {
    if (!isKmsError(error) || res.headersSent) {
      next(error);
      return;
    }
    if (!error.clientFault) {
      const requestId = kmsContextOf(req)?.requestId;
      log(`${requestId === undefined ? "" : `[request ${requestId}] `}${describeFault(error)}`);
    }
    sendProblem(res, toProblem(error));
  };
}
