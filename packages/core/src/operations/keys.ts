import { keyArn } from "../arn.ts";
import { DAY_MS } from "../clock.ts";
import { UnsupportedOperationError, ValidationError } from "../errors.ts";
import { asymmetricHsm } from "../hsm/asymmetric.ts";
import {
  assertBoolean,
  assertInteger,
  assertObject,
  assertOneOf,
  assertString,
} from "../internal/assert.ts";
import {
  destroyKey,
  getKey,
  isDeletionDue,
  type KmsContext,
  loadKey,
  newKeyMaterialId,
  toKeyMetadata,
  updateKey,
} from "../internal/key-access.ts";
import { pageRequest, toPage } from "../internal/pagination.ts";
import { assertKeySpecUsage, KEY_SPECS } from "../key-specs.ts";
import type { StoredKey } from "../keystore/key-store.ts";
import {
  DEFAULT_PENDING_WINDOW_IN_DAYS,
  DEFAULT_ROTATION_PERIOD_IN_DAYS,
} from "../policy/request-defaults.ts";
import type {
  CreateKeyRequest,
  CreateKeyResponse,
  DescribeKeyRequest,
  DescribeKeyResponse,
  KeyIdRequest,
  KeyUsage,
  ListKeysResponse,
  PageRequest,
  ScheduleKeyDeletionRequest,
  ScheduleKeyDeletionResponse,
  UpdateKeyDescriptionRequest,
} from "../types.ts";
import { directKeyId } from "./key-arguments.ts";
import { type CreateKeyPolicy, checkLockout } from "./policies.ts";
import { validateTags } from "./tags.ts";

const KEY_USAGES: readonly KeyUsage[] = [
  "ENCRYPT_DECRYPT",
  "SIGN_VERIFY",
  "GENERATE_VERIFY_MAC",
  "KEY_AGREEMENT",
];
export const MAX_DESCRIPTION_LENGTH = 8192;

/**
 * `policy`: the request's policy as validateCreateKeyPolicy read and parsed it; its lockout
 * check runs here, on the key it will govern.
 * @throws ValidationError, TagError, UnsupportedOperationError, MalformedPolicyDocumentError.
 */
export async function createKey(
  ctx: KmsContext,
  request: CreateKeyRequest,
  policy: CreateKeyPolicy | undefined,
): Promise<CreateKeyResponse> {
  assertObject("request", request);
  const description =
    request.description === undefined
      ? ""
      : assertString("description", request.description, 0, MAX_DESCRIPTION_LENGTH);
  if (
    request.keySpec !== undefined &&
    request.customerMasterKeySpec !== undefined &&
    request.keySpec !== request.customerMasterKeySpec
  ) {
    throw new ValidationError(`"keySpec" and "customerMasterKeySpec" must not disagree`);
  }
  const keySpec = assertOneOf(
    "keySpec",
    request.keySpec ?? request.customerMasterKeySpec ?? "SYMMETRIC_DEFAULT",
    KEY_SPECS,
  );
  const keyUsage = assertOneOf("keyUsage", request.keyUsage ?? "ENCRYPT_DECRYPT", KEY_USAGES);
  assertKeySpecUsage(keySpec, keyUsage);
  const origin = assertOneOf("origin", request.origin ?? "AWS_KMS", ["AWS_KMS", "EXTERNAL"]);
  if (origin !== "AWS_KMS") {
    throw new UnsupportedOperationError(
      `origin ${origin} (imported key material) is not supported`,
    );
  }
  const multiRegion =
    request.multiRegion === undefined ? false : assertBoolean("multiRegion", request.multiRegion);
  const tags = validateTags(request.tags ?? [], []);

  const keyId = globalThis.crypto.randomUUID();
  const now = ctx.clock.now();
  const fields: Omit<StoredKey, "versions"> = {
    keyId,
    revision: 1,
    createdAt: now,
    description,
    keySpec,
    keyUsage,
    origin,
    multiRegion,
    keyState: "Enabled",
    rotation: {
      enabled: false,
      periodInDays: DEFAULT_ROTATION_PERIOD_IN_DAYS,
      onDemandRotations: 0,
    },
    tags,
    ...(policy !== undefined ? { policy: policy.text } : {}),
    currentVersion: 1,
  };
  if (policy !== undefined) {
    // Before any key material is made for a key that may be refused. The check reads the key's
    // ARN, tags and properties, never its versions.
    checkLockout(ctx.call, policy.document, { ...fields, versions: [] }, policy.bypass);
  }
  const material =
    keySpec === "SYMMETRIC_DEFAULT"
      ? { wrappedMaterial: ctx.hsm.generateSymmetricMaterial(keyId, 1) }
      : await asymmetricHsm(ctx.hsm).generate(keyId, 1, keySpec);
  const key: StoredKey = {
    ...fields,
    versions: [{ version: 1, createdAt: now, keyMaterialId: newKeyMaterialId(), ...material }],
  };
  await ctx.store.createKey(key);
  return { keyMetadata: toKeyMetadata(ctx, key) };
}

export async function describeKey(
  ctx: KmsContext,
  request: DescribeKeyRequest,
): Promise<DescribeKeyResponse> {
  assertObject("request", request);
  const key = await loadKey(ctx, request.keyId, "describeKey");
  return { keyMetadata: toKeyMetadata(ctx, key) };
}

export async function listKeys(
  ctx: KmsContext,
  request: PageRequest = {},
): Promise<ListKeysResponse> {
  const { limit, after } = pageRequest(request, undefined, "listKeys");
  const query = () =>
    ctx.store.listKeys({ limit: limit + 1, ...(after !== undefined ? { after } : {}) });
  let found = await query();
  // A key past its deletion window is gone, as describeKey says: destroy it rather than list
  // it. Each pass destroys one or more keys, so this ends.
  while (await destroyExpired(ctx, found)) found = await query();
  const page = toPage(found, limit, (k) => k.keyId, "listKeys");
  return {
    keys: page.items.map((k) => ({ keyId: k.keyId, keyArn: keyArn(ctx.identity, k.keyId) })),
    truncated: page.truncated,
    ...(page.nextMarker !== undefined ? { nextMarker: page.nextMarker } : {}),
  };
}

/** Destroys the keys among `keys` whose deletion window has passed; true if any was. */
async function destroyExpired(ctx: KmsContext, keys: readonly StoredKey[]): Promise<boolean> {
  let destroyed = false;
  for (const key of keys) {
    if (isDeletionDue(ctx, key)) {
      await destroyKey(ctx, key);
      destroyed = true;
    }
  }
  return destroyed;
}

/**
 * @throws ValidationError, NotFoundError (also for an alias: see {@link directKeyId}),
 *   InvalidStateError.
 */
export async function updateKeyDescription(
  ctx: KmsContext,
  request: UpdateKeyDescriptionRequest,
): Promise<void> {
  assertObject("request", request);
  const description = assertString("description", request.description, 0, MAX_DESCRIPTION_LENGTH);
  const keyId = directKeyId(ctx, "updateKeyDescription", "keyId", request.keyId);
  await updateKey(ctx, keyId, "updateKeyDescription", () => ({ description }));
}

/** @throws NotFoundError (also for an alias: see {@link directKeyId}), InvalidStateError. */
export async function enableKey(ctx: KmsContext, request: KeyIdRequest): Promise<void> {
  assertObject("request", request);
  const keyId = directKeyId(ctx, "enableKey", "keyId", request.keyId);
  await updateKey(ctx, keyId, "enableKey", () => ({ keyState: "Enabled" }));
}

/** @throws NotFoundError (also for an alias: see {@link directKeyId}), InvalidStateError. */
export async function disableKey(ctx: KmsContext, request: KeyIdRequest): Promise<void> {
  assertObject("request", request);
  const keyId = directKeyId(ctx, "disableKey", "keyId", request.keyId);
  await updateKey(ctx, keyId, "disableKey", () => ({ keyState: "Disabled" }));
}

/** @throws ValidationError, NotFoundError (also for an alias), InvalidStateError. */
export async function scheduleKeyDeletion(
  ctx: KmsContext,
  request: ScheduleKeyDeletionRequest,
): Promise<ScheduleKeyDeletionResponse> {
  assertObject("request", request);
  const days =
    request.pendingWindowInDays === undefined
      ? DEFAULT_PENDING_WINDOW_IN_DAYS
      : assertInteger("pendingWindowInDays", request.pendingWindowInDays, 7, 30);
  const keyId = directKeyId(ctx, "scheduleKeyDeletion", "keyId", request.keyId);
  const deletionDate = ctx.clock.now() + days * DAY_MS;
  const key = await updateKey(ctx, keyId, "scheduleKeyDeletion", () => ({
    keyState: "PendingDeletion",
    deletionDate,
    pendingWindowInDays: days,
  }));
  return {
    keyId: keyArn(ctx.identity, key.keyId),
    deletionDate: new Date(deletionDate),
    keyState: key.keyState,
    pendingWindowInDays: days,
  };
}

/** @throws NotFoundError (also for an alias), InvalidStateError. */
export async function cancelKeyDeletion(
  ctx: KmsContext,
  request: KeyIdRequest,
): Promise<{ keyId: string }> {
  assertObject("request", request);
  const keyId = directKeyId(ctx, "cancelKeyDeletion", "keyId", request.keyId);
  // updateKey merges the change into the record; undefined removes the deletion fields.
  await updateKey(
    ctx,
    keyId,
    "cancelKeyDeletion",
    () =>
      ({
        keyState: "Disabled",
        deletionDate: undefined,
        pendingWindowInDays: undefined,
      }) as unknown as Partial<StoredKey>,
  );
  return { keyId: keyArn(ctx.identity, keyId) };
}

export { getKey };
