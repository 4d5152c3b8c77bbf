import { isKmsError, KmsInternalError } from "@kms/core";

/**
 * What an application callback (a key lookup, a context resolver) threw, as an Error that is
 * safe to pass to Express's `next`. The router reads a falsy value (`throw undefined`) as
 * success and `"route"` / `"router"` as routing instructions, so passing such a value on
 * unchanged would run the handler with the request unverified or without its context.
 */
export function callbackError(thrown: unknown, source: string): Error {
  if (thrown instanceof Error) return thrown;
  return new KmsInternalError(`${source} threw a value that is not an Error`, { cause: thrown });
}

/**
 * As `callbackError`, for the server's own work on a request (verifying its signature): a KMS
 * client fault there — a disabled, deleted or denied verification key — is nothing the client
 * can fix, so it becomes an internal error (the original in `cause`, for logs). Otherwise
 * `kmsErrorHandler` would answer it as the client's fault (404, 409…), as @kms/nestjs does not.
 */
export function serverFault(thrown: unknown, source: string): Error {
  const error = callbackError(thrown, source);
  if (!isKmsError(error) || !error.clientFault) return error;
  return new KmsInternalError(`${source} failed with ${error.code}`, { cause: error });
}
