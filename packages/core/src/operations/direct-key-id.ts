import { parseKeyReference } from "../arn.ts";
import { NotFoundError } from "../errors.ts";
import { checkKeyState, getKey, type KmsContext } from "../internal/key-access.ts";
import type { KeyStateOperation } from "../key-state-table.ts";
import type { StoredKey } from "../keystore/key-store.ts";

/**
 * The key id that `reference` names directly: a key id or key ARN, never an alias. AWS KMS takes
 * an alias only where its API reference says "key ID, key ARN, alias name, or alias ARN" (the
 * cryptographic operations, DescribeKey, GetPublicKey); every operation that changes or reads a
 * key's settings, policy, tags, grants, rotation or state says "key ID or key ARN", and answers
 * an alias with NotFoundException. Resolving one there would let anyone allowed to re-point the
 * alias, between the caller's look-up and the call, turn the call on another key: disable it,
 * schedule its deletion, widen its policy, grant it away.
 * @throws ValidationError when `reference` is not a key reference at all, NotFoundError for an
 *   alias name or alias ARN, and for a reference no key of this KMS could have.
 */
export function directKeyId(
  ctx: KmsContext,
  reference: unknown,
  operation: string,
  argument = "keyId",
): string {
  const ref = parseKeyReference(ctx.identity, reference, argument);
  if (ref.kind === "alias") {
    throw new NotFoundError(
      `Invalid ${argument} ${String(reference)}: ${operation} takes a key id or key ARN, not an alias`,
    );
  }
  return ref.keyId;
}

/**
 * Reads the key `reference` names directly (see {@link directKeyId}), authorized for the call,
 * and checks its state for `operation`.
 * @throws ValidationError, NotFoundError, AccessDeniedError, the state errors of checkKeyState.
 */
export async function loadDirectKey(
  ctx: KmsContext,
  reference: unknown,
  operation: KeyStateOperation,
): Promise<StoredKey> {
  const key = await getKey(ctx, directKeyId(ctx, reference, operation));
  checkKeyState(ctx, key, operation);
  return key;
}
