/**
 * Reading SDK outputs into @kms/core's response types. Every SDK output member is optional in
 * its TypeScript model, while core's responses promise most of them: a member that is absent,
 * of the wrong type or outside core's enumerations means the endpoint is not answering as AWS
 * KMS does, and the call fails here with KmsInternalError instead of handing `undefined` on.
 * Messages name the operation and the member, never a value: outputs carry plaintext and keys.
 */
import { KmsInternalError } from "@kms/core";

/** The member names of `T` whose (defined) values are of type `V`. */
type MembersOf<T, V> = {
  [K in keyof T]-?: [NonNullable<T[K]>] extends [V] ? K : never;
}[keyof T] &
  string;

function missing(operation: string, member: string): KmsInternalError {
  return new KmsInternalError(`AWS KMS ${operation} response lacks "${member}"`);
}

function mistyped(operation: string, member: string, expected: string): KmsInternalError {
  return new KmsInternalError(
    `AWS KMS ${operation} response member "${member}" is not ${expected}`,
  );
}

export function text<T extends object>(
  operation: string,
  output: T,
  member: MembersOf<T, string>,
): string {
  const value: unknown = output[member];
  if (value === undefined || value === null) throw missing(operation, member);
  if (typeof value !== "string") throw mistyped(operation, member, "a string");
  return value;
}

export function optionalText<T extends object>(
  operation: string,
  output: T,
  member: MembersOf<T, string>,
): string | undefined {
  return output[member] === undefined ? undefined : text(operation, output, member);
}

export function flag<T extends object>(
  operation: string,
  output: T,
  member: MembersOf<T, boolean>,
): boolean {
  const value: unknown = output[member];
  if (value === undefined || value === null) throw missing(operation, member);
  if (typeof value !== "boolean") throw mistyped(operation, member, "a boolean");
  return value;
}

function sdkBytes<T extends object>(
  operation: string,
  output: T,
  member: MembersOf<T, Uint8Array>,
): Uint8Array {
  const value: unknown = output[member];
  if (value === undefined || value === null) throw missing(operation, member);
  if (!(value instanceof Uint8Array)) throw mistyped(operation, member, "a blob");
  return value;
}

/**
 * A blob, copied: the SDK decodes base64 into views of a shared pool buffer, so `.buffer` of
 * its arrays exposes other decoded bytes; core's responses own their bytes. `new Uint8Array`
 * rather than `.slice()`: a Buffer (from a mocked client or a custom `base64Decoder`) slices
 * into a view of the same memory, which {@link wipe} would then zero under the caller.
 */
export function bytes<T extends object>(
  operation: string,
  output: T,
  member: MembersOf<T, Uint8Array>,
): Uint8Array {
  return new Uint8Array(sdkBytes(operation, output, member));
}

/**
 * Zeroes the SDK's copy of a secret blob (plaintext, data key), when the output has one: it is a
 * view of a shared pool buffer that outlives the call. Run whatever the outcome, a malformed or
 * late answer included, so that the copy handed to the caller is the only one a wipe has to
 * reach.
 */
export function wipe(output: unknown, member: string): void {
  if (output === null || typeof output !== "object") return;
  const value: unknown = (output as Record<string, unknown>)[member];
  if (value instanceof Uint8Array) value.fill(0);
}

/** An enumeration of core's, as a table so that the compiler checks it is complete. */
export type Members<U extends string> = Readonly<Record<U, true>>;

export function isMember<U extends string>(table: Members<U>, value: unknown): value is U {
  return typeof value === "string" && Object.hasOwn(table, value);
}

/** A scalar enumeration member: a value core does not know is a failure. */
export function oneOf<T extends object, U extends string>(
  operation: string,
  output: T,
  member: MembersOf<T, string>,
  table: Members<U>,
): U {
  const value = text(operation, output, member);
  if (!isMember(table, value)) {
    throw new KmsInternalError(
      `AWS KMS ${operation} response member "${member}" has a value @kms/core does not know`,
    );
  }
  return value;
}

/**
 * A scalar enumeration member that must equal what the request asked for (or AWS's default for
 * it): a signature made, or a MAC computed, with another algorithm than the caller named would be
 * verified later under the wrong one, or not at all, and an endpoint that swaps one is not
 * answering the call it was sent.
 */
export function asRequested<T extends object, U extends string>(
  operation: string,
  output: T,
  member: MembersOf<T, string>,
  table: Members<U>,
  expected: U,
): U {
  const value = oneOf(operation, output, member, table);
  if (value !== expected) {
    throw new KmsInternalError(
      `AWS KMS ${operation} response member "${member}" is not the algorithm the request named`,
    );
  }
  return value;
}

/**
 * The key ARN an answer names, which must be the key the request named when it named one by key
 * id or key ARN: an answer for another key (a ciphertext under a key the caller does not control,
 * a signature by another signer) would otherwise be handed on as the requested key's. An alias
 * (name or ARN) is not checked: only AWS knows the key it points to at the time of the call.
 */
export function keyIdFor<T extends object>(
  operation: string,
  output: T,
  member: MembersOf<T, string>,
  requested: unknown,
): string {
  const keyId = text(operation, output, member);
  if (typeof requested === "string" && !namesKey(requested, keyId)) {
    throw new KmsInternalError(
      `AWS KMS ${operation} response member "${member}" names another key than the request's "keyId"`,
    );
  }
  return keyId;
}

/** A key id such as `1234abcd-12ab-…` or `mrk-…`, as opposed to an alias or an ARN. */
const BARE_KEY_ID = /^[A-Za-z0-9-]+$/;

function namesKey(requested: string, arn: string): boolean {
  if (requested.startsWith("arn:")) {
    // Only a key ARN identifies the key; an alias ARN (`:alias/…`) is resolved by AWS.
    return !/^arn:[^:]*:kms:[^:]*:[^:]*:key\//.test(requested) || requested === arn;
  }
  if (!BARE_KEY_ID.test(requested)) return true;
  return arn === requested || arn.endsWith(`:key/${requested}`);
}

/**
 * A list of enumeration members, or undefined when absent. Values core does not know are
 * dropped: these lists describe what a key supports, and AWS adds algorithms over time; a
 * caller of core can only ask for the algorithms core knows anyway.
 */
export function knownMembers<T extends object, U extends string>(
  operation: string,
  output: T,
  member: MembersOf<T, readonly string[]>,
  table: Members<U>,
): U[] | undefined {
  const value: unknown = output[member];
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) throw mistyped(operation, member, "a list");
  return value.filter((entry): entry is U => isMember(table, entry));
}

export function date<T extends object>(
  operation: string,
  output: T,
  member: MembersOf<T, Date>,
): Date {
  const value: unknown = output[member];
  if (value === undefined || value === null) throw missing(operation, member);
  if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
    throw mistyped(operation, member, "a date");
  }
  return value;
}
