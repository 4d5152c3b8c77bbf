/**
 * Checks on request members that the SDK would otherwise alter before AWS sees them. Its
 * serializer drops map entries and list items that are `null` or `undefined`, spreads a string
 * given as a map into one pair per character and UTF-8 encodes a string given as a blob, so such
 * a request would run as a different one (an encryption context pair silently gone) instead of
 * failing as it does against the in-process Kms. Everything else about a value (lengths, formats,
 * enumerations) is left to AWS. Messages name the member and the rule, as core's do, never a
 * value: blobs are plaintext and keys.
 */
import { type EncryptionContext, ValidationError } from "@kms/core";

/** Describes a bad value by type and size only: it may be a secret. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (value instanceof Uint8Array) return `${value.constructor.name}(${value.length})`;
  if (Array.isArray(value)) return `array(${value.length})`;
  if (typeof value === "string") return `string(${value.length})`;
  return typeof value;
}

export function assertRequest(request: unknown): void {
  if (request === null || typeof request !== "object") {
    throw new ValidationError(`"request" expected an object, got ${describe(request)}`);
  }
}

/**
 * An encryption context, copied (the SDK models take mutable records). As in core, only a plain
 * object of string values: a `null` or `undefined` value would be dropped from the wire, and a
 * Map or class instance has no own pairs, so either would encrypt under less context than the
 * caller wrote. Each value is read once. Keys are user data and are copied verbatim, `__proto__`
 * included.
 */
export function context(value: EncryptionContext | undefined): Record<string, string> | undefined {
  if (value === undefined) return undefined;
  const proto: unknown =
    typeof value === "object" && value !== null ? Object.getPrototypeOf(value) : undefined;
  if (proto !== Object.prototype && proto !== null) {
    throw new ValidationError(`"encryptionContext" expected an object of string pairs`);
  }
  // One read of each value, checked and copied from that snapshot: re-reading (a spread after
  // the check) lets an accessor or Proxy answer a string to the check and `undefined` to the
  // copy, which the SDK then drops from the wire.
  const pairs = Object.entries(value);
  for (const [key, pair] of pairs) {
    if (typeof pair !== "string") {
      throw new ValidationError(`"encryptionContext" value for key "${key}" must be a string`);
    }
  }
  // fromEntries defines own properties, so a `__proto__` key stays a pair.
  return Object.fromEntries(pairs) as Record<string, string>;
}

/** Grant tokens, copied: an array of strings (the SDK drops `null` items). */
export function grantTokens(value: readonly string[] | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value)) {
    throw new ValidationError(`"grantTokens" expected an array of strings, got ${describe(value)}`);
  }
  const tokens: unknown[] = [...value];
  tokens.forEach((token, i) => {
    if (typeof token !== "string") {
      throw new ValidationError(`"grantTokens[${i}]" expected a string, got ${describe(token)}`);
    }
  });
  return tokens as string[];
}

/**
 * A blob member: a Uint8Array (any view; the SDK encodes only the view's bytes). A string would
 * be sent as its UTF-8 bytes. An absent member is left for AWS to refuse.
 */
export function blob(name: string, value: Uint8Array | undefined): Uint8Array | undefined {
  if (value === undefined || value instanceof Uint8Array) return value;
  throw new ValidationError(`"${name}" expected a Uint8Array, got ${describe(value)}`);
}
