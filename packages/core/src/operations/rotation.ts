import { keyArn } from "../arn.ts";
import { DAY_MS } from "../clock.ts";
import { InvalidMarkerError, LimitExceededError, UnsupportedOperationError } from "../errors.ts";
import { assertInteger, assertObject } from "../internal/assert.ts";
import { type KmsContext, rotatedFields, updateKey } from "../internal/key-access.ts";
import { pageLimit, pageMarker, toPage } from "../internal/pagination.ts";
import type { StoredKey } from "../keystore/key-store.ts";
import { DEFAULT_ROTATION_PERIOD_IN_DAYS } from "../policy/request-defaults.ts";
import type {
  EnableKeyRotationRequest,
  GetKeyRotationStatusResponse,
  KeyIdRequest,
  ListKeyRotationsRequest,
  ListKeyRotationsResponse,
  RotateKeyOnDemandResponse,
} from "../types.ts";
import { directKeyId, loadDirectKey } from "./key-arguments.ts";

/** AWS's quota of on-demand rotations per key (not adjustable). */
export const MAX_ON_DEMAND_ROTATIONS = 25;

/** Automatic and on-demand rotation apply to symmetric encryption keys only, as in AWS. */
function assertRotatable(ctx: KmsContext, key: StoredKey, operation: string): void {
  if (key.keySpec !== "SYMMETRIC_DEFAULT") {
    throw new UnsupportedOperationError(
      `${operation} is not supported for ${keyArn(ctx.identity, key.keyId)}: only symmetric encryption keys rotate`,
    );
  }
}

export async function enableKeyRotation(
  ctx: KmsContext,
  request: EnableKeyRotationRequest,
): Promise<void> {
  assertObject("request", request);
  const period =
    request.rotationPeriodInDays === undefined
      ? DEFAULT_ROTATION_PERIOD_IN_DAYS
      : assertInteger("rotationPeriodInDays", request.rotationPeriodInDays, 90, 2560);
  const keyId = directKeyId(ctx, "enableKeyRotation", "keyId", request.keyId);
  await updateKey(ctx, keyId, "enableKeyRotation", (key) => {
    assertRotatable(ctx, key, "enableKeyRotation");
    // AWS counts the first period from when rotation is enabled (or the period changes).
    return {
      rotation: {
        ...key.rotation,
        enabled: true,
        periodInDays: period,
        nextRotationAt: ctx.clock.now() + period * DAY_MS,
      },
    };
  });
}

export async function disableKeyRotation(ctx: KmsContext, request: KeyIdRequest): Promise<void> {
  assertObject("request", request);
  const keyId = directKeyId(ctx, "disableKeyRotation", "keyId", request.keyId);
  await updateKey(ctx, keyId, "disableKeyRotation", (key) => {
    assertRotatable(ctx, key, "disableKeyRotation");
    const { nextRotationAt: _next, ...rest } = key.rotation;
    return { rotation: { ...rest, enabled: false } };
  });
}

export async function getKeyRotationStatus(
  ctx: KmsContext,
  request: KeyIdRequest,
): Promise<GetKeyRotationStatusResponse> {
  assertObject("request", request);
  const key = await loadDirectKey(ctx, "getKeyRotationStatus", "keyId", request.keyId);
  assertRotatable(ctx, key, "getKeyRotationStatus");
  const { rotation } = key;
  return {
    keyRotationEnabled: rotation.enabled,
    keyId: keyArn(ctx.identity, key.keyId),
    ...(rotation.enabled ? { rotationPeriodInDays: rotation.periodInDays } : {}),
    ...(rotation.enabled && rotation.nextRotationAt !== undefined
      ? { nextRotationDate: new Date(rotation.nextRotationAt) }
      : {}),
  };
}

export async function rotateKeyOnDemand(
  ctx: KmsContext,
  request: KeyIdRequest,
): Promise<RotateKeyOnDemandResponse> {
  assertObject("request", request);
  const keyId = directKeyId(ctx, "rotateKeyOnDemand", "keyId", request.keyId);
  await updateKey(ctx, keyId, "rotateKeyOnDemand", (key) => {
    assertRotatable(ctx, key, "rotateKeyOnDemand");
    if (key.rotation.onDemandRotations >= MAX_ON_DEMAND_ROTATIONS) {
      throw new LimitExceededError(
        `${keyArn(ctx.identity, key.keyId)} has reached the limit of ${MAX_ON_DEMAND_ROTATIONS} on-demand rotations`,
      );
    }
    const fields = rotatedFields(ctx, key, "ON_DEMAND");
    // On-demand rotation does not move the automatic schedule (AWS).
    return { ...fields, rotation: { ...fields.rotation!, ...pick(key.rotation) } };
  });
  return { keyId: keyArn(ctx.identity, keyId) };
}

function pick(rotation: StoredKey["rotation"]): Partial<StoredKey["rotation"]> {
  return rotation.nextRotationAt === undefined ? {} : { nextRotationAt: rotation.nextRotationAt };
}

export async function listKeyRotations(
  ctx: KmsContext,
  request: ListKeyRotationsRequest,
): Promise<ListKeyRotationsResponse> {
  assertObject("request", request);
  const limit = pageLimit(request);
  const key = await loadDirectKey(ctx, "listKeyRotations", "keyId", request.keyId);
  assertRotatable(ctx, key, "listKeyRotations");
  // The original material is not a rotation; the marker is the last version number returned.
  const scope = `listKeyRotations ${key.keyId}`;
  const after = pageMarker(request, scope);
  if (after !== undefined && !/^[1-9]\d{0,8}$/.test(after)) {
    throw new InvalidMarkerError(`"marker" is not a marker returned by this operation`);
  }
  const rotations = key.versions
    .filter((v) => v.rotationType !== undefined)
    .filter((v) => after === undefined || v.version > Number(after));
  const page = toPage(rotations.slice(0, limit + 1), limit, (v) => String(v.version), scope);
  const arn = keyArn(ctx.identity, key.keyId);
  return {
    rotations: page.items.map((v) => ({
      keyId: arn,
      keyMaterialId: v.keyMaterialId,
      rotationDate: new Date(v.createdAt),
      rotationType: v.rotationType!,
    })),
    truncated: page.truncated,
    ...(page.nextMarker !== undefined ? { nextMarker: page.nextMarker } : {}),
  };
}
