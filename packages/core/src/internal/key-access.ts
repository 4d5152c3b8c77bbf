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
import { runWithRequestId } from "../request-id-scope.ts";
import type { KeyMetadata, RotationType } from "../types.ts";
import { retryOnConflict } from "./compare-and-set.ts";

/**
 * Work the KMS does on a key on its own rather than for a caller, whichever call or maintenance
 * run it happens in: destroying a key at the end of its deletion window (AWS's DeleteKey
 * service event) and an automatic rotation (AWS's RotateKey service event).
 */
export type InternalKeyOperation = "deleteKey" | "rotateKey";

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
   * AccessDenied before state errors). Throws AccessDeniedError, or returns a promise that
   * rejects with it; undefined when it decided at once (see authorizeKeyNow), so that callers
   * await only a decision that waits for the store.
   */
  readonly authorize?: (key: StoredKey) => Promise<void> | undefined;
  /** Most grants a key may hold (KmsOptions.maxGrantsPerKey); absent: the default. */
  readonly maxGrantsPerKey?: number;
  /**
   * Records internal work on `key` as an audit event of its own naming the key, under the
   * default principal (the Kms wires it to CallGuard.recordInternal). Rejects when a fail-closed
   * trail could not write the event; the work is done by then. Absent: nothing is recorded.
   */
  readonly recordInternal?: (
    operation: InternalKeyOperation,
    request: Readonly<Record<string, string>>,
    key: StoredKey,
  ) => Promise<void>;
}

/** Whether the call being served is a dry run, which must change nothing (docs/POLICY.md). */
export function isDryRun(ctx: KmsContext): boolean {
  const request = ctx.call?.request;
  return (
    typeof request === "object" &&
    request !== null &&
    (request as { readonly dryRun?: unknown }).dryRun === true
  );
}

/**
 * Records internal work (KmsContext.recordInternal). Inside a call, the event carries that
 * call's request id, so the trail tells which call a destruction or rotation happened in (its
 * caller need not have any right on the key: the KMS did the work, not the caller).
 */
async function recordInternal(
  ctx: KmsContext,
  operation: InternalKeyOperation,
  request: Readonly<Record<string, string>>,
  key: StoredKey,
): Promise<void> {
  const record = ctx.recordInternal;
  if (record === undefined) return;
  const requestId = ctx.call?.requestId;
  await (typeof requestId === "string"
    ? runWithRequestId(requestId, () => record(operation, request, key))
    : record(operation, request, key));
}

/** Resolves any accepted key reference form to a key id (aliases through the store). */
export async function resolveKeyId(
  ctx: KmsContext,
  input: unknown,
  argument = "keyId",
): Promise<string> {
  return keyIdOf(ctx, input, argument);
}

/**
 * resolveKeyId, at once for a key id or key ARN (no store read, so nothing to await: the hot
 * path's case), as a promise for an alias.
 */
function keyIdOf(ctx: KmsContext, input: unknown, argument: string): string | Promise<string> {
  if (lastBareKeyId !== undefined && input === lastBareKeyId) return lastBareKeyId;
  const ref = parseKeyReference(ctx.identity, input, argument);
  if (ref.kind === "alias") return aliasTarget(ctx, ref.aliasName);
  // A bare key id is one whatever the identity: the next call naming the same key skips the parse.
  if (ref.keyId === input) lastBareKeyId = ref.keyId;
  return ref.keyId;
}

/** The last bare key id keyIdOf parsed (not secret): nearly every call names the key before's. */
let lastBareKeyId: string | undefined;

/** The key id alias `aliasName` points to. @throws NotFoundError when there is no such alias. */
async function aliasTarget(ctx: KmsContext, aliasName: string): Promise<string> {
  const alias = await ctx.store.getAlias(aliasName);
  if (alias === undefined) throw new NotFoundError(`alias ${aliasName} does not exist`);
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
 * gone on first use even if `runMaintenance` never ran). A dry run answers the same without
 * destroying it: it changes nothing, and the next real use or maintenance run destroys it.
 * @throws NotFoundError when the key does not exist or was destroyed.
 */
export async function getKey(ctx: KmsContext, keyId: string): Promise<StoredKey> {
  return admitKey(ctx, keyId, await ctx.store.getKey(keyId));
}

/**
 * getKey on the record the store answered for `keyId`: NotFoundError for no record, the
 * destruction of a key whose deletion window has passed (then NotFoundError), the call's
 * authorization. The key itself when all of it was decided at once (the hot path: nothing to
 * await), else the promise of it, rejecting as getKey would throw. Callers on a hot path read
 * the store themselves and await this only when it is a promise, one await less than getKey.
 */
export function admitKey(
  ctx: KmsContext,
  keyId: string,
  key: StoredKey | undefined,
): StoredKey | Promise<StoredKey> {
  if (key === undefined) {
    throw new NotFoundError(`key ${keyArn(ctx.identity, keyId)} does not exist`);
  }
  if (isDeletionDue(ctx, key)) return destroyDue(ctx, keyId, key);
  const authorizing = ctx.authorize?.(key);
  return authorizing === undefined ? key : authorizing.then(() => key);
}

/** getKey on a key whose deletion is due: destroyed (unless a dry run), then NotFoundError. */
async function destroyDue(ctx: KmsContext, keyId: string, key: StoredKey): Promise<never> {
  if (!isDryRun(ctx)) await destroyKey(ctx, key);
  throw new NotFoundError(`key ${keyArn(ctx.identity, keyId)} does not exist`);
}

/**
 * Resolves, reads and checks the state for `operation`. One await for a key id or key ARN (the
 * store read) rather than one per layer: this runs on every cryptographic call.
 */
export async function loadKey(
  ctx: KmsContext,
  input: unknown,
  operation: KeyStateOperation,
  argument = "keyId",
): Promise<StoredKey> {
  const reference = keyIdOf(ctx, input, argument);
  const keyId = typeof reference === "string" ? reference : await reference;
  const admitted = admitKey(ctx, keyId, await ctx.store.getKey(keyId));
  const key = admitted instanceof Promise ? await admitted : admitted;
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

/**
 * Destroys a key whose deletion window has passed, and records a `DeleteKey` event naming it
 * when this writer is the one that destroyed it (one event per destroyed key).
 * @throws what the store and a fail-closed trail throw; the key may be destroyed by then.
 */
export async function destroyKey(ctx: KmsContext, key: StoredKey): Promise<void> {
  let destroyed = true;
  try {
    await ctx.store.deleteKey(key.keyId, key.revision);
  } catch (error) {
    // Another writer destroyed it or cancelled the deletion first: either outcome is final.
    if (!(error instanceof NotFoundError) && !(error instanceof KeyStoreConflictError)) throw error;
    destroyed = false;
  }
  ctx.hsm.forget(key.keyId);
  asymmetricHsm(ctx.hsm).forget(key.keyId);
  if (!destroyed) return;
  await recordInternal(
    ctx,
    "deleteKey",
    {
      keyId: key.keyId,
      ...(key.deletionDate !== undefined
        ? { deletionDate: new Date(key.deletionDate).toISOString() }
        : {}),
    },
    key,
  );
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

/**
 * Performs a due automatic rotation (on use), tolerating another writer doing it first, and
 * records a `RotateKey` event naming the key and its new key material when this writer rotated.
 * A dry run does not rotate: it answers as the real call would (which would then use the new
 * material) but changes nothing, so it uses the current material.
 * @throws as updateKey, and what a fail-closed trail throws; the rotation is written by then.
 */
export async function rotateIfDue(ctx: KmsContext, key: StoredKey): Promise<StoredKey> {
  return needsRotation(ctx, key) ? rotateDue(ctx, key) : key;
}

/** Whether a use of `key` in this call rotates it first (rotateIfDue). */
export function needsRotation(ctx: KmsContext, key: StoredKey): boolean {
  return isRotationDue(ctx, key) && !isDryRun(ctx);
}

/**
 * rotateIfDue once needsRotation said so: callers on a hot path test that themselves, so that
 * a key not due (nearly every call) costs them no promise.
 */
export async function rotateDue(ctx: KmsContext, key: StoredKey): Promise<StoredKey> {
  // Set by every attempt, so it tells whether the attempt the store accepted rotated.
  let rotated = false;
  const next = await updateKey(ctx, key.keyId, "describeKey", (latest) => {
    rotated = isRotationDue(ctx, latest);
    return rotated ? rotatedFields(ctx, latest, "AUTOMATIC") : {};
  });
  if (rotated) {
    await recordInternal(
      ctx,
      "rotateKey",
      { keyId: next.keyId, keyMaterialId: currentVersion(next).keyMaterialId },
      next,
    );
  }
  return next;
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
