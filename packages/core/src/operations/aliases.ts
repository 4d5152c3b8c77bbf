import { aliasArn, keyArn } from "../arn.ts";
import {
  InvalidAliasNameError,
  KeyStoreConflictError,
  KmsInternalError,
  LimitExceededError,
  NotFoundError,
  ValidationError,
} from "../errors.ts";
import { assertObject } from "../internal/assert.ts";
import { retryOnConflict } from "../internal/compare-and-set.ts";
import {
  checkKeyState,
  destroyKey,
  getKey,
  isDeletionDue,
  type KmsContext,
} from "../internal/key-access.ts";
import { pageLimit, pageMarker, toPage } from "../internal/pagination.ts";
import { KEY_SPEC_TABLE } from "../key-specs.ts";
import type { StoredAlias, StoredKey } from "../keystore/key-store.ts";
import type { AliasRequest, ListAliasesRequest, ListAliasesResponse } from "../types.ts";
import { directKeyId } from "./key-arguments.ts";

const ALIAS_NAME = /^alias\/[a-zA-Z0-9:/_-]+$/;

/**
 * AWS's quota of aliases per KMS key. Beyond bounding the store, it bounds the aliases a policy
 * with kms:ResourceAliases reads on every call to the key.
 */
export const MAX_ALIASES_PER_KEY = 50;

/**
 * AWS's alias naming rules: `alias/` then letters, digits, `/_-:`, at most 256 characters in
 * all, and never under the reserved `alias/aws/` prefix.
 * @throws ValidationError for a missing prefix, InvalidAliasNameError for the rest.
 */
export function validateAliasName(name: unknown): string {
  if (typeof name !== "string" || name.length === 0) {
    throw new ValidationError(`"aliasName" must be a string starting with "alias/"`);
  }
  if (!name.startsWith("alias/")) {
    throw new ValidationError(`"aliasName" ${name} must start with the prefix "alias/"`);
  }
  if (name.length > 256 || !ALIAS_NAME.test(name)) {
    throw new InvalidAliasNameError(
      `"aliasName" ${name} must be at most 256 characters of letters, digits, "/", "_", "-" and ":" after "alias/"`,
    );
  }
  if (name.startsWith("alias/aws/")) {
    throw new InvalidAliasNameError(`"aliasName" ${name}: the alias/aws/ prefix is reserved`);
  }
  return name;
}

/**
 * The alias, unless the key it points to is past its deletion window: that key is destroyed
 * here, with its aliases, as on any use of the key (getKey). Without this, the alias of a key
 * deleted while nothing used it would still be listed, hold its name, and move or delete as
 * if the key were alive, until runMaintenance() ran.
 */
async function liveAlias(ctx: KmsContext, aliasName: string): Promise<StoredAlias | undefined> {
  const alias = await ctx.store.getAlias(aliasName);
  if (alias === undefined || !(await destroyExpiredTargets(ctx, [alias]))) return alias;
  // Re-read: another writer may have cancelled the deletion first, keeping key and alias.
  return ctx.store.getAlias(aliasName);
}

/** Destroys the keys past their deletion window that `aliases` point to; true if any was. */
async function destroyExpiredTargets(
  ctx: KmsContext,
  aliases: readonly StoredAlias[],
): Promise<boolean> {
  let destroyed = false;
  for (const keyId of new Set(aliases.map((a) => a.targetKeyId))) {
    const key = await ctx.store.getKey(keyId);
    if (key !== undefined && isDeletionDue(ctx, key)) {
      await destroyKey(ctx, key);
      destroyed = true;
    }
  }
  return destroyed;
}

export async function createAlias(ctx: KmsContext, request: AliasRequest): Promise<void> {
  assertObject("request", request);
  const aliasName = validateAliasName(request.aliasName);
  // The arguments' form before any store read (moto, too, refuses an alias target before it
  // answers AlreadyExists): a refused call destroys no expired key and tells nothing of aliases.
  const targetKeyId = directKeyId(ctx, "createAlias", "targetKeyId", request.targetKeyId);
  // Frees the name if it belongs to a key whose deletion window has passed.
  await liveAlias(ctx, aliasName);
  const key = await getKey(ctx, targetKeyId);
  checkKeyState(ctx, key, "createAlias");
  await assertAliasRoom(ctx, key);
  const now = ctx.clock.now();
  await ctx.store.createAlias({
    aliasName,
    targetKeyId: key.keyId,
    createdAt: now,
    updatedAt: now,
  });
  const undo = (written: StoredAlias) => ctx.store.deleteAlias(aliasName, written.seal ?? null);
  if (!(await targetOutlived(ctx, aliasName, key.keyId, undo))) throw missingKey(ctx, key.keyId);
}

export async function updateAlias(ctx: KmsContext, request: AliasRequest): Promise<void> {
  assertObject("request", request);
  const aliasName = validateAliasName(request.aliasName);
  // The arguments' form before any store read, as createAlias: not NotFound for a missing
  // alias, nor AccessDenied on its current key, when the target could never be accepted.
  const targetKeyId = directKeyId(ctx, "updateAlias", "targetKeyId", request.targetKeyId);
  await retryAliasWrite(aliasName, "update", async () => {
    const current = await liveAlias(ctx, aliasName);
    if (current === undefined) throw new NotFoundError(`alias ${aliasName} does not exist`);
    // AWS authorizes UpdateAlias on the key the alias points to now as well as on the new one:
    // a caller allowed on its own key must not take over an alias of a key it cannot touch.
    const previous = await currentTarget(ctx, current.targetKeyId);
    const key = await getKey(ctx, targetKeyId);
    checkKeyState(ctx, key, "updateAlias");
    if (
      previous !== undefined &&
      (previous.keyUsage !== key.keyUsage || keyType(previous) !== keyType(key))
    ) {
      // AWS requires the same key type and usage so that code using the alias keeps working;
      // the key spec may change (RSA_2048 to RSA_4096, HMAC_256 to HMAC_512…).
      throw new ValidationError(
        `alias ${aliasName} points to a ${keyType(previous)} ${previous.keyUsage} key and cannot be moved to a ${keyType(key)} ${key.keyUsage} key`,
      );
    }
    if (key.keyId !== current.targetKeyId) await assertAliasRoom(ctx, key);
    // Compare-and-set on the record authorized above, not on a later read of the alias.
    await ctx.store.updateAlias(
      aliasName,
      key.keyId,
      ctx.clock.now(),
      undefined,
      current.seal ?? null,
    );
    if (key.keyId === current.targetKeyId) return;
    const pointBack = async (written: StoredAlias) => {
      await ctx.store.updateAlias(
        aliasName,
        current.targetKeyId,
        current.updatedAt,
        undefined,
        written.seal ?? null,
      );
      // The key it pointed to may have been destroyed since the move, which left the alias
      // alone then: pointed back there, it would dangle in turn.
      if (previous === undefined) return;
      await targetOutlived(ctx, aliasName, previous.keyId, (restored) =>
        ctx.store.deleteAlias(aliasName, restored.seal ?? null),
      );
    };
    if (!(await targetOutlived(ctx, aliasName, key.keyId, pointBack))) {
      throw missingKey(ctx, key.keyId);
    }
  });
}

/**
 * Whether `keyId` outlived the write that pointed `aliasName` to it: false when the key was
 * destroyed between its check and the write, and the write then undone with `undo` (given the
 * alias as stored). The store offers no alias write conditional on its target key, while
 * deleteKey removes a key with its aliases as one step: a destruction after the write took the
 * alias with it, one before leaves the key missing here. Without this, the alias would point to
 * a key that no longer exists, and hold its name.
 */
async function targetOutlived(
  ctx: KmsContext,
  aliasName: string,
  keyId: string,
  undo: (written: StoredAlias) => Promise<void>,
): Promise<boolean> {
  if ((await ctx.store.getKey(keyId)) !== undefined) return true;
  const written = await ctx.store.getAlias(aliasName);
  if (written?.targetKeyId !== keyId) return false;
  try {
    await undo(written);
  } catch (error) {
    // Another writer moved or deleted the alias since: the record is theirs, not this call's.
    if (!(error instanceof KeyStoreConflictError) && !(error instanceof NotFoundError)) {
      throw error;
    }
  }
  return false;
}

/** What getKey throws for `keyId`, had the call checked the key after its destruction. */
function missingKey(ctx: KmsContext, keyId: string): NotFoundError {
  return new NotFoundError(`key ${keyArn(ctx.identity, keyId)} does not exist`);
}

/**
 * @throws LimitExceededError when the key already has {@link MAX_ALIASES_PER_KEY} aliases.
 * Checked before the write, so concurrent creations can pass it together, each at most once.
 */
async function assertAliasRoom(ctx: KmsContext, key: StoredKey): Promise<void> {
  const aliases = await ctx.store.listAliases({
    targetKeyId: key.keyId,
    limit: MAX_ALIASES_PER_KEY,
  });
  if (aliases.length >= MAX_ALIASES_PER_KEY) {
    throw new LimitExceededError(`a key can have at most ${MAX_ALIASES_PER_KEY} aliases`);
  }
}

/** AWS's key types for UpdateAlias: symmetric, asymmetric or HMAC. */
function keyType(key: StoredKey): "symmetric" | "asymmetric" | "HMAC" {
  const { family } = KEY_SPEC_TABLE[key.keySpec];
  return family === "SYMMETRIC" ? "symmetric" : family === "HMAC" ? "HMAC" : "asymmetric";
}

export async function deleteAlias(ctx: KmsContext, request: { aliasName: string }): Promise<void> {
  assertObject("request", request);
  const aliasName = validateAliasName(request.aliasName);
  await retryAliasWrite(aliasName, "delete", async () => {
    const current = await liveAlias(ctx, aliasName);
    if (current === undefined) throw new NotFoundError(`alias ${aliasName} does not exist`);
    // AWS authorizes DeleteAlias on the key the alias points to.
    await currentTarget(ctx, current.targetKeyId);
    // Compare-and-set: an alias moved meanwhile to a key the caller has no rights on stays.
    await ctx.store.deleteAlias(aliasName, current.seal ?? null);
  });
}

/**
 * Runs one read–authorize–write of an alias until the store accepts its compare-and-set, as
 * updateKey does for keys: a KeyStoreConflictError means another writer changed the alias after
 * `attempt` read it, so the next attempt reads it again, authorizes the caller on the key it
 * points to now and re-checks every rule. AWS has no conflict error for aliases; the outcome is
 * that of the two calls run one after the other.
 * @throws KmsInternalError when the alias keeps changing under every attempt.
 */
function retryAliasWrite(
  aliasName: string,
  verb: "update" | "delete",
  attempt: () => Promise<void>,
): Promise<void> {
  return retryOnConflict(attempt, {
    exhausted: (cause) =>
      new KmsInternalError(`alias ${aliasName} is being changed too often to ${verb}; try again`, {
        cause,
      }),
  });
}

/**
 * The key an existing alias points to, authorized for the running operation. Undefined when a
 * store kept the alias of a destroyed key: nothing is left to authorize against.
 */
async function currentTarget(ctx: KmsContext, keyId: string): Promise<StoredKey | undefined> {
  const key = await ctx.store.getKey(keyId);
  if (key === undefined) return undefined;
  const deciding = ctx.authorize?.(key);
  if (deciding !== undefined) await deciding;
  return key;
}

export async function listAliases(
  ctx: KmsContext,
  request: ListAliasesRequest = {},
): Promise<ListAliasesResponse> {
  const limit = pageLimit(request, { max: 100, default: 50 });
  const targetKeyId =
    request.keyId === undefined
      ? undefined
      : directKeyId(ctx, "listAliases", "keyId", request.keyId);
  if (targetKeyId !== undefined) await getKey(ctx, targetKeyId);
  // A marker lists on from where it was made: the same listing, all aliases or one key's.
  const scope = targetKeyId === undefined ? "listAliases" : `listAliases ${targetKeyId}`;
  const after = pageMarker(request, scope);
  const query = () =>
    ctx.store.listAliases({
      limit: limit + 1,
      ...(after !== undefined ? { after } : {}),
      ...(targetKeyId !== undefined ? { targetKeyId } : {}),
    });
  let found = await query();
  // Aliases of keys past their deletion window go with their keys; each pass destroys one or
  // more keys, so this ends.
  while (await destroyExpiredTargets(ctx, found)) found = await query();
  const page = toPage(found, limit, (a) => a.aliasName, scope);
  return {
    aliases: page.items.map((a) => ({
      aliasName: a.aliasName,
      aliasArn: aliasArn(ctx.identity, a.aliasName),
      targetKeyId: a.targetKeyId,
      creationDate: new Date(a.createdAt),
      lastUpdatedDate: new Date(a.updatedAt),
    })),
    truncated: page.truncated,
    ...(page.nextMarker !== undefined ? { nextMarker: page.nextMarker } : {}),
  };
}
