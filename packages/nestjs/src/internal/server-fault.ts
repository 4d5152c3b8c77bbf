import { isKmsError, KmsInternalError } from "@kms/core";

/**
 * What an application callback (a key lookup, a verifier, a nonce store, a context `setup`)
 * threw, as an Error. Nest answers a thrown non-Error object that carries a `statusCode` and a
 * `message` with that status and message, so an outage of the callback's backend would reach
 * the client as a client fault, its message included; and an exception filter of the app's
 * would be handed `undefined`. An Error passes unchanged.
 */
export function asError(thrown: unknown, during: string): Error {
  if (thrown instanceof Error) return thrown;
  return new KmsInternalError(`${during} threw a value that is not an Error`, { cause: thrown });
}

/**
 * A KMS error raised by the guard's or an interceptor's own work (key lookup, a KMS verifier,
 * missing configuration) is the server's fault whatever its code: a disabled or missing
 * verification key, or an unset `keyLookup`, is nothing the client can fix. It is re-thrown
 * as an internal error (the original in `cause`, for logs), so `KmsExceptionFilter` answers
 * an opaque 500 instead of a client-fault status whose detail names the server's keys or
 * configuration. A thrown value that is not an Error becomes one (see `asError`). Other errors
 * (an `HttpException` from a user's lookup) pass unchanged.
 */
export function asServerFault(thrown: unknown, during: string): Error {
  const error = asError(thrown, during);
  if (!isKmsError(error) || !error.clientFault) return error;
  return new KmsInternalError(`${during} failed with ${error.code}`, { cause: error });
}
