import { isKmsError, type KmsError } from "@kms/core";
import { describeKmsFault, kmsErrorProblem } from "@kms/http-signatures";
import type { ErrorRequestHandler } from "express";
import { kmsContextOf } from "./kms-context.ts";
import { type ProblemDetails, sendProblem } from "./problem.ts";

// The mapping lives in @kms/http-signatures, so this handler and @kms/nestjs's
// `KmsExceptionFilter` send one answer for one error; exported here as before.
export { kmsErrorProblem } from "@kms/http-signatures";

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
      log(`${requestId === undefined ? "" : `[request ${requestId}] `}${describeKmsFault(error)}`);
    }
    sendProblem(res, toProblem(error));
  };
}
