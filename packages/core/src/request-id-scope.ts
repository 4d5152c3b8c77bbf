import { AsyncLocalStorage } from "node:async_hooks";
import { ValidationError } from "./errors.ts";

/**
 * The ambient request id: which incoming request the KMS calls made below it serve. Kept apart
 * from the ambient encryption context on purpose: it only correlates audit events, and anything
 * per-request bound into ciphertexts would make them unreadable from any other request.
 */
const storage = new AsyncLocalStorage<string>();

/**
 * Runs `fn` with `requestId` as the ambient request id, across awaits. The in-process `Kms`
 * records it as the `requestID` of the audit events of calls that pass no
 * `CallOptions.requestId`, and the field engine passes it to whatever `KmsLike` it uses. An
 * inner scope replaces the id of an enclosing one.
 * @throws ValidationException when `requestId` is not a string (as `CallOptions.requestId`).
 */
export function runWithRequestId<T>(requestId: string, fn: () => T): T {
  if (typeof requestId !== "string") {
    throw new ValidationError(`"requestId" must be a string`);
  }
  return storage.run(requestId, fn);
}

/** The ambient request id, or undefined outside any `runWithRequestId`. */
export function currentRequestId(): string | undefined {
  return storage.getStore();
}
