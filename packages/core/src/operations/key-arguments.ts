import { type KeyReference, parseKeyReference } from "../arn.ts";
import { KmsInternalError, NotFoundError, ValidationError } from "../errors.ts";
import { checkKeyState, getKey, type KmsContext } from "../internal/key-access.ts";
import type { KeyStateOperation } from "../key-state-table.ts";
import type { StoredKey } from "../keystore/key-store.ts";

/**
 * How a request argument may name a key:
 * - `keyOrAlias`: key id, key ARN, alias name or alias ARN (an alias is resolved in the store);
 * - `keyOnly`: key id or key ARN; an alias is refused with NotFoundError ("Invalid keyId");
 * - `aliasTarget`: key id or key ARN; an alias is refused with ValidationError.
 */
export type KeyNaming = "keyOrAlias" | "keyOnly" | "aliasTarget";

/**
 * Every request argument that names a key, per operation, and how it may name it. The one
 * definition both the operations and `kms.explain` read, so that explain refuses what the call
 * refuses. It follows AWS KMS's API reference: "key ID, key ARN, alias name, or alias ARN" for
 * the cryptographic operations, DescribeKey and GetPublicKey; "key ID or key ARN" for every
 * operation that reads or changes a key's state, description, rotation, policy, tags, grants or
 * last usage, which answers an alias with NotFoundException. Resolving one there would let
 * whoever may re-point the alias, between a caller's look-up and the call, turn the call on
 * another key: disable it, schedule its deletion, widen its policy, grant it away. An alias
 * cannot point to an alias, and AWS answers CreateAlias's with ValidationException ("Aliases
 * must refer to keys. Not aliases"); ListAliases' KeyId is refused alike.
 *
 * The cryptographic operations resolve their `keyOrAlias` arguments through loadKey and
 * resolveKeyId, whose rule this is; their entries say which arguments explain reads.
 */
export const KEY_ARGUMENTS = {
  encrypt: { keyId: "keyOrAlias" },
  decrypt: { keyId: "keyOrAlias" },
  reEncrypt: { sourceKeyId: "keyOrAlias", destinationKeyId: "keyOrAlias" },
  generateDataKey: { keyId: "keyOrAlias" },
  generateDataKeyWithoutPlaintext: { keyId: "keyOrAlias" },
  generateDataKeyPair: { keyId: "keyOrAlias" },
  generateDataKeyPairWithoutPlaintext: { keyId: "keyOrAlias" },
  sign: { keyId: "keyOrAlias" },
  verify: { keyId: "keyOrAlias" },
  generateMac: { keyId: "keyOrAlias" },
  verifyMac: { keyId: "keyOrAlias" },
  deriveSharedSecret: { keyId: "keyOrAlias" },
  describeKey: { keyId: "keyOrAlias" },
  getPublicKey: { keyId: "keyOrAlias" },

  updateKeyDescription: { keyId: "keyOnly" },
  enableKey: { keyId: "keyOnly" },
  disableKey: { keyId: "keyOnly" },
  scheduleKeyDeletion: { keyId: "keyOnly" },
  cancelKeyDeletion: { keyId: "keyOnly" },
  enableKeyRotation: { keyId: "keyOnly" },
  disableKeyRotation: { keyId: "keyOnly" },
  getKeyRotationStatus: { keyId: "keyOnly" },
  rotateKeyOnDemand: { keyId: "keyOnly" },
  listKeyRotations: { keyId: "keyOnly" },
  putKeyPolicy: { keyId: "keyOnly" },
  getKeyPolicy: { keyId: "keyOnly" },
  listKeyPolicies: { keyId: "keyOnly" },
  tagResource: { keyId: "keyOnly" },
  untagResource: { keyId: "keyOnly" },
  listResourceTags: { keyId: "keyOnly" },
  createGrant: { keyId: "keyOnly" },
  listGrants: { keyId: "keyOnly" },
  revokeGrant: { keyId: "keyOnly" },
  // Read only without a grantToken, which names the key itself (see retireGrant).
  retireGrant: { keyId: "keyOnly" },
  getKeyLastUsage: { keyId: "keyOnly" },

  createAlias: { targetKeyId: "aliasTarget" },
  updateAlias: { targetKeyId: "aliasTarget" },
  listAliases: { keyId: "aliasTarget" },
} as const satisfies Readonly<Record<string, Readonly<Record<string, KeyNaming>>>>;

type KeyArguments = typeof KEY_ARGUMENTS;

/** An operation with an argument that names a key. */
export type KeyOperation = keyof KeyArguments;

/**
 * The arguments of `O` that take a key id or key ARN only, and so need no store read to be
 * resolved; never for an operation whose every key argument takes an alias.
 */
export type DirectKeyArgument<O extends KeyOperation> = {
  [A in keyof KeyArguments[O]]: KeyArguments[O][A] extends "keyOrAlias" ? never : A;
}[keyof KeyArguments[O]];

/** The arguments that name a key in a request of `operation`, and how; none for others. */
export function keyArgumentsOf(operation: string): readonly (readonly [string, KeyNaming])[] {
  if (!Object.hasOwn(KEY_ARGUMENTS, operation)) return [];
  return Object.entries(KEY_ARGUMENTS[operation as KeyOperation]);
}

/**
 * Checks the form of `reference`, given as `argument` of `operation`, against how that argument
 * may name a key ({@link KEY_ARGUMENTS}). Reads nothing: an alias is refused before the store
 * is read for anything, and a `keyOrAlias` one is left for resolveKeyId to look up.
 * @throws ValidationError when it is not a key reference at all, or is an alias where an alias
 *   target is expected; NotFoundError for an alias where a key id or key ARN only is expected,
 *   and for a reference no key of this KMS could have.
 */
export function parseKeyArgument(
  ctx: KmsContext,
  operation: string,
  argument: string,
  naming: KeyNaming,
  reference: unknown,
): KeyReference {
  if (naming === "keyOrAlias") return parseKeyReference(ctx.identity, reference, argument);
  return { kind: "key", keyId: keyIdNamedDirectly(ctx, operation, argument, naming, reference) };
}

function keyIdNamedDirectly(
  ctx: KmsContext,
  operation: string,
  argument: string,
  naming: "keyOnly" | "aliasTarget",
  reference: unknown,
): string {
  if (
    naming === "aliasTarget" &&
    typeof reference === "string" &&
    (reference.startsWith("alias/") || reference.includes(":alias/"))
  ) {
    // Before parsing, so that an alias ARN of another account or region is refused as an
    // alias too, not answered as a reference this KMS cannot hold.
    throw new ValidationError(`"${argument}" must be a key id or key ARN, not an alias`);
  }
  const ref = parseKeyReference(ctx.identity, reference, argument);
  if (ref.kind === "alias") {
    throw new NotFoundError(
      `Invalid ${argument} ${String(reference)}: ${operation} takes a key id or key ARN, not an alias`,
    );
  }
  return ref.keyId;
}

/**
 * The key id that `reference`, given as `argument` of `operation`, names directly: a key id or
 * key ARN, never an alias (see {@link KEY_ARGUMENTS}). Reads nothing, so the form is checked
 * before any store read.
 * @throws as {@link parseKeyArgument}.
 */
export function directKeyId<O extends KeyOperation>(
  ctx: KmsContext,
  operation: O,
  argument: DirectKeyArgument<O>,
  reference: unknown,
): string {
  const naming = (KEY_ARGUMENTS[operation] as Readonly<Record<string, KeyNaming>>)[
    argument as string
  ];
  if (naming === undefined || naming === "keyOrAlias") {
    // Unreachable for callers the types let through; refuses rather than resolve an alias.
    throw new KmsInternalError(
      `${operation} has no key id or key ARN argument ${String(argument)}`,
    );
  }
  return keyIdNamedDirectly(ctx, operation, argument as string, naming, reference);
}

/**
 * Reads the key that `reference`, given as `argument` of `operation`, names directly (see
 * {@link directKeyId}), authorized for the call, and checks its state for `operation`.
 * @throws ValidationError, NotFoundError, AccessDeniedError, the state errors of checkKeyState.
 */
export async function loadDirectKey<O extends KeyOperation & KeyStateOperation>(
  ctx: KmsContext,
  operation: O,
  argument: DirectKeyArgument<O>,
  reference: unknown,
): Promise<StoredKey> {
  const key = await getKey(ctx, directKeyId(ctx, operation, argument, reference));
  checkKeyState(ctx, key, operation);
  return key;
}
