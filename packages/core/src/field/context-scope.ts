import { AsyncLocalStorage } from "node:async_hooks";
import { ValidationError } from "../errors.ts";
import type { EncryptionContext } from "../types.ts";

/**
 * The ambient encryption context of the current request. HTTP adapters fill it from the
 * request (tenant, principal); ORM adapters read it to bind field values to their tenant.
 */
const storage = new AsyncLocalStorage<EncryptionContext>();

/**
 * Runs `fn` with `context` as the ambient encryption context. Nested scopes merge over the
 * enclosing one (inner values win), so a handler can add a key without losing the tenant.
 * @throws ValidationException when a context value is not a string.
 */
export function runWithEncryptionContext<T>(context: EncryptionContext, fn: () => T): T {
  // Each value read once: a getter or Proxy read again after the check could put a non-string
  // in the scope. fromEntries defines data properties, so a "__proto__" key stays a key.
  const entries = Object.entries(context);
  for (const [key, value] of entries) {
    if (typeof value !== "string") {
      throw new ValidationError(`"context" value for key "${key}" must be a string`);
    }
  }
  const read: EncryptionContext = Object.fromEntries(entries);
  const outer = storage.getStore();
  const merged = Object.freeze(outer === undefined ? read : { ...outer, ...read });
  return storage.run(merged, fn);
}

/** The ambient encryption context, or undefined outside any `runWithEncryptionContext`. */
export function currentEncryptionContext(): EncryptionContext | undefined {
  return storage.getStore();
}
