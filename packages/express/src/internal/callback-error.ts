import { KmsInternalError } from "@kms/core";

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
