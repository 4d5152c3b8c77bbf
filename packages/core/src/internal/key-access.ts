import { type KmsIdentity, keyArn, parseKeyReference } from "../arn.ts";
import type { Clock } from "../clock.ts";
import { DAY_MS } from "../clock.ts";
import {
  DisabledError,
  InvalidStateError,
  KeyStoreConflictError,
  KmsInternalError,
  NotFoundError,
  UnsupportedOperationError,
} from "../errors.ts";
import { asymmetricHsm } from "../hsm/asymmetric.ts";
import { randomBytes } from "../hsm/random.ts";
import type { SoftwareHsm } from "../hsm/software-hsm.ts";
import { algorithmLists } from "../key-specs.ts";
import { KEY_STATE_TABLE, type KeyStateOperation } from "../key-state-table.ts";
import type { KeyStore, StoredKey, StoredKeyVersion } from "../keystore/key-store.ts";
import type { CallState } from "../policy/authorizer.ts";
import type { KeyMetadata, RotationType } from "../types.ts";
import { retryOnConflict } from "./compare-and-set.ts";

/** Everything an operation needs; built once per Kms. */
export interface KmsContext {
  readonly store: KeyStore;
  readonly hsm: SoftwareHsm;
  readonly clock: Clock;
  readonly identity: KmsIdentity;
  /** The call being served (policy layer); absent for internal work such as maintenance. */
  readonly call?: CallState;
  /**
   * Authorizes the call on a key it just read, before any state check (AWS answers
   * AccessDenied before state errors). Throws AccessDeniedError.
   */
  readonly authorize?: (key: StoredKey) => Promise<void>;
  /** Most grants a key may hold (KmsOptions.maxGrantsPerKey); absent: the default. */
  readonly maxGrantsPerKey?: number;
}

/** Resolves any accepted key reference form to a key id (aliases through the store). */
export async function resolveKeyId(
  ctx: KmsContext,
  input: unknown,
  argument = "keyId",
): Promise<string> {
  const ref = parseKeyReference(ctx.identity, input, argument);
  if (ref.kind === "key") return ref.keyId;
  const alias = await ctx.store.getAlias(ref.aliasName);
  if (alias === undefined) throw new NotFoundError(`alias ${ref.aliasName} does not exist`);
  return alias.targetKeyId;
}

/**
 * Raises the error AWS raises for `operation` on a key in its current state, if any.
 * @throws DisabledError, InvalidStateError, UnsupportedOperationError.
 */
export function checkKeyState(ctx: KmsContext, key: StoredKey, operation: KeyStateOperation): void {
  const outcome = KEY_STATE_TABLE[operation][key.keyState];
  if (outcome === "ok") return;
  const arn = keyArn(ctx.identity, key.keyId);
  switch (outcome) {
    case "DisabledException":
      throw new DisabledError(
        key.keyState === "Disabled" ? `${arn} is disabled` : `${arn} is pending deletion`,
      );
    case "KMSInvalidStateException":
      throw new InvalidStateError(
        key.keyState === "PendingDeletion"
          ? `${arn} is pending deletion`
          : operation === "cancelKeyDeletion"
            ? `${arn} is not pending deletion`
            : `${arn} is ${key.keyState}, which does not allow ${operation}`,
      );
    case "UnsupportedOperationException":
      throw new UnsupportedOperationError(`${operation} is not supported for ${arn} in its state`);
  }
}

/**
 * Reads a key, destroying it first if its deletion window has passed (so an expired key is
 * gone on first use even if `runMaintenance` never ran).
 * @throws NotFoundError when the key does not exist or was destroyed.
 */
export async function getKey(ctx: KmsContext, keyId: string): Promise<StoredKey> {
  const key = await ctx.store.getKey(keyId);
  if (key === undefined)
    throw new NotFoundError(`key ${keyArn(ctx.identity, keyId)} does not exist`);
  if (isDeletionDue(ctx, key)) {
    await destroyKey(ctx, key);
    throw new NotFoundError(`key ${keyArn(ctx.identity, keyId)} does not exist`);
  }
  if (ctx.authorize !== undefined) await ctx.authorize(key);
  return key;
}

/** Resolves, reads and checks the state for `operation`. */
export async function loadKey(
  ctx: KmsContext,
  input: unknown,
  operation: KeyStateOperation,
  argument = "keyId",
): Promise<StoredKey> {
  const key = await getKey(ctx, await resolveKeyId(ctx, input, argument));
  checkKeyState(ctx, key, operation);
  return key;
}

export function isDeletionDue(ctx: KmsContext, key: StoredKey): boolean {
  return (
    key.keyState === "PendingDeletion" &&
    key.deletionDate !== undefined &&
    ctx.clock.now() >= key.deletionDate
  );
}

export async function destroyKey(ctx: KmsContext, key: StoredKey): Promise<void> {
  try {
    await ctx.store.deleteKey(key.keyId, key.revision);
  } catch (error) {
    // Another writer destroyed it or cancelled the deletion first: either outcome is final.
    if (!(error instanceof NotFoundError) && !(error instanceof KeyStoreConflictError)) throw error;
  }
  ctx.hsm.forget(key.keyId);
  asymmetricHsm(ctx.hsm).forget(key.keyId);
}

/**
 * Read–modify–write with compare-and-set: re-reads and re-applies `change` until the store
 * accepts it, so concurrent writers (other processes, other instances) never lose an update.
 *
 * Every attempt decides on the record it writes: getKey authorizes the call on it (a decision
 * is made per key record, so a record another writer changed is decided again, not by the
 * decision made on an earlier read), then `authorize` runs what the operation decides beyond
 * the key policy and grants (RetireGrant's retiring principal, CreateGrant's delegation rule),
 * then the state rules, then `change`. The write is a compare-and-set on that record's
 * revision, so a policy put, or a grant revoked, between the read and the write makes it lose,
 * and the next attempt is refused as an up-front denial would be.
 * @throws AccessDeniedError, the state errors of checkKeyState, whatever `authorize` and
 *   `change` throw; KmsInternalError when the key keeps changing under every attempt.
 */
export async function updateKey(
  ctx: KmsContext,
  keyId: string,
  operation: KeyStateOperation,
  change: (key: StoredKey) => Partial<Omit<StoredKey, "keyId" | "revision">>,
  authorize?: (key: StoredKey) => void,
): Promise<StoredKey> {
  return retryOnConflict(
    async () => {
      const current = await getKey(ctx, keyId);
      authorize?.(current);
      checkKeyState(ctx, current, operation);
      const next: StoredKey = { ...current, ...change(current), revision: current.revision + 1 };
      // A change removes a field by setting it to undefined: spreading alone cannot delete one.
      for (const [field, value] of Object.entries(next)) {
        if (value === undefined) delete (next as unknown as Record<string, unknown>)[field];
      }
      await ctx.store.updateKey(next);
      return next;
    },
    {
      exhausted: (cause) =>
        new KmsInternalError(`key ${keyId} is being changed too often to update; try again`, {
          cause,
        }),
    },
  );
}

/** Adds a new backing key version and makes it current. */
export function rotatedFields(
  ctx: KmsContext,
  key: StoredKey,
  rotationType: RotationType,
): Partial<StoredKey> {
  const now = ctx.clock.now();
  const version = key.versions[key.versions.length - 1]!.version + 1;
  const added: StoredKeyVersion = {
    version,
    createdAt: now,
    rotationType,
    keyMaterialId: newKeyMaterialId(),
    wrappedMaterial: ctx.hsm.generateSymmetricMaterial(key.keyId, version),
  };
  return {
    versions: [...key.versions, added],
    currentVersion: version,
    rotation: {
      ...key.rotation,
      ...(key.rotation.enabled ? { nextRotationAt: now + key.rotation.periodInDays * DAY_MS } : {}),
      ...(rotationType === "ON_DEMAND"
        ? { onDemandRotations: key.rotation.onDemandRotations + 1 }
        : {}),
    },
  };
}

export function isRotationDue(ctx: KmsContext, key: StoredKey): boolean {
  return (
    key.keyState === "Enabled" &&
    key.rotation.enabled &&
    key.rotation.nextRotationAt !== undefined &&
    ctx.clock.now() >= key.rotation.nextRotationAt
  );
}

/** Performs a due automatic rotation (on use), tolerating another writer doing it first. */
export async function rotateIfDue(ctx: KmsContext, key: StoredKey): Promise<StoredKey> {
  if (!isRotationDue(ctx, key)) return key;
  return updateKey(ctx, key.keyId, "describeKey", (latest) =>
    isRotationDue(ctx, latest) ? rotatedFields(ctx, latest, "AUTOMATIC") : {},
  );
}

export function currentVersion(key: StoredKey): StoredKeyVersion {
  const found = key.versions.find((v) => v.version === key.currentVersion);
  if (found === undefined) {
    throw new KmsInternalError(`key ${key.keyId} has no material for its current version`);
  }
  return found;
}

/** A random public identifier for a piece of key material (64 hex digits, as AWS's). */
export function newKeyMaterialId(): string {
  return Buffer.from(randomBytes(32)).toString("hex");
}

export function toKeyMetadata(ctx: KmsContext, key: StoredKey): KeyMetadata {
  const isSymmetric = key.keySpec === "SYMMETRIC_DEFAULT";
  return {
    awsAccountId: ctx.identity.account,
    keyId: key.keyId,
    arn: keyArn(ctx.identity, key.keyId),
    creationDate: new Date(key.createdAt),
    enabled: key.keyState === "Enabled",
    description: key.description,
    keyUsage: key.keyUsage,
    keyState: key.keyState,
    ...(key.deletionDate !== undefined ? { deletionDate: new Date(key.deletionDate) } : {}),
    origin: key.origin,
    keyManager: "CUSTOMER",
    customerMasterKeySpec: key.keySpec,
    keySpec: key.keySpec,
    ...algorithmLists(key.keySpec, key.keyUsage),
    multiRegion: key.multiRegion,
    ...(isSymmetric ? { currentKeyMaterialId: currentVersion(key).keyMaterialId } : {}),
  };
}
