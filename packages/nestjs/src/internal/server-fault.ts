import { isKmsError, KmsInternalError } from "@kms/core";

/**
 * A KMS error raised by the guard's or an interceptor's own work (key lookup, a KMS verifier,
 * missing configuration) is the server's fault whatever its code: a disabled or missing
 * verification key, or an unset `keyLookup`, is nothing the client can fix. It is re-thrown
 * as an internal error (the original in `cause`, for logs), so `KmsExceptionFilter` answers
 * an opaque 500 instead of a client-fault status whose detail names the server's keys or
 * configuration. Other errors (an `HttpException` from a user's lookup) pass unchanged.
 */
export function asServerFault(error: unknown, during: string): unknown {
  if (!isKmsError(error) || !error.clientFault) return error;
  return new KmsInternalError(`${during} failed with ${error.code}`, { cause: error });
}
