import {
  parseStoredGrants,
  parseStoredTags,
  type StoredAlias,
  type StoredKey,
  type StoredKeyVersion,
} from "@kms/core";

/** A row of kms_keys as better-sqlite3 returns it. */
export interface KeyRow {
  key_id: string;
  revision: number;
  created_at: number;
  description: string;
  key_spec: string;
  key_usage: string;
  origin: string;
  multi_region: number;
  key_state: string;
  deletion_date: number | null;
  pending_window_in_days: number | null;
  rotation_enabled: number;
  rotation_period_in_days: number;
  next_rotation_at: number | null;
  on_demand_rotations: number;
  tags: string;
  policy: string | null;
  current_version: number;
  /** JSON array of grants; NULL when the key has none (and in rows from before migration 2). */
  grants: string | null;
  /** NULL when the key has no seal (and in rows from before migration 3). */
  seal: string | null;
}

export interface VersionRow {
  key_id: string;
  version: number;
  created_at: number;
  rotation_type: string | null;
  key_material_id: string;
  wrapped_material: Uint8Array;
  public_key: Uint8Array | null;
}

/** The wrapped material of one stored version, for comparing with a record being written. */
export type MaterialRow = Pick<VersionRow, "version" | "wrapped_material">;

export interface AliasRow {
  alias_name: string;
  target_key_id: string;
  created_at: number;
  updated_at: number;
  /** NULL when the alias has no seal (and in rows from before migration 3). */
  seal: string | null;
}

/**
 * Binds a Uint8Array as a BLOB without copying. A Buffer view with the same offset and length
 * keeps a subarray from dragging its whole backing ArrayBuffer into the file.
 */
export function blob(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * better-sqlite3 returns a Buffer; hand out a plain Uint8Array copy so callers get the documented
 * type (Buffer's toString/toJSON differ) and cannot reach into a pooled allocation.
 */
function bytesOf(value: Uint8Array): Uint8Array {
  return new Uint8Array(value);
}

export function keyParams(key: StoredKey): Record<string, string | number | null> {
  return {
    key_id: key.keyId,
    revision: key.revision,
    created_at: key.createdAt,
    description: key.description,
    key_spec: key.keySpec,
    key_usage: key.keyUsage,
    origin: key.origin,
    multi_region: key.multiRegion ? 1 : 0,
    key_state: key.keyState,
    deletion_date: key.deletionDate ?? null,
    pending_window_in_days: key.pendingWindowInDays ?? null,
    rotation_enabled: key.rotation.enabled ? 1 : 0,
    rotation_period_in_days: key.rotation.periodInDays,
    next_rotation_at: key.rotation.nextRotationAt ?? null,
    on_demand_rotations: key.rotation.onDemandRotations,
    tags: JSON.stringify(key.tags.map((t) => ({ tagKey: t.tagKey, tagValue: t.tagValue }))),
    policy: key.policy ?? null,
    current_version: key.currentVersion,
    grants: key.grants === undefined ? null : JSON.stringify(key.grants),
    seal: key.seal ?? null,
  };
}

export function versionParams(
  keyId: string,
  v: StoredKeyVersion,
): Record<string, string | number | Buffer | null> {
  return {
    key_id: keyId,
    version: v.version,
    created_at: v.createdAt,
    rotation_type: v.rotationType ?? null,
    key_material_id: v.keyMaterialId,
    wrapped_material: blob(v.wrappedMaterial),
    public_key: v.publicKey === undefined ? null : blob(v.publicKey),
  };
}

/**
 * Optional fields are left out rather than set to undefined, so a record read back is
 * indistinguishable from the one written (exactOptionalPropertyTypes, and the conformance suite).
 */
export function versionFromRow(row: VersionRow): StoredKeyVersion {
  return Object.freeze({
    version: row.version,
    createdAt: row.created_at,
    ...(row.rotation_type === null
      ? {}
      : { rotationType: row.rotation_type as NonNullable<StoredKeyVersion["rotationType"]> }),
    keyMaterialId: row.key_material_id,
    wrappedMaterial: bytesOf(row.wrapped_material),
    ...(row.public_key === null ? {} : { publicKey: bytesOf(row.public_key) }),
  });
}

export function keyFromRows(row: KeyRow, versions: readonly VersionRow[]): StoredKey {
  const tags = parseStoredTags(row.key_id, row.tags).map((t) =>
    Object.freeze({ tagKey: t.tagKey, tagValue: t.tagValue }),
  );
  return Object.freeze({
    keyId: row.key_id,
    revision: row.revision,
    createdAt: row.created_at,
    description: row.description,
    keySpec: row.key_spec as StoredKey["keySpec"],
    keyUsage: row.key_usage as StoredKey["keyUsage"],
    origin: row.origin as StoredKey["origin"],
    multiRegion: row.multi_region === 1,
    keyState: row.key_state as StoredKey["keyState"],
    ...(row.deletion_date === null ? {} : { deletionDate: row.deletion_date }),
    ...(row.pending_window_in_days === null
      ? {}
      : { pendingWindowInDays: row.pending_window_in_days }),
    rotation: Object.freeze({
      enabled: row.rotation_enabled === 1,
      periodInDays: row.rotation_period_in_days,
      ...(row.next_rotation_at === null ? {} : { nextRotationAt: row.next_rotation_at }),
      onDemandRotations: row.on_demand_rotations,
    }),
    tags: Object.freeze(tags),
    ...(row.policy === null ? {} : { policy: row.policy }),
    ...(row.grants === null || row.grants === undefined
      ? {}
      : { grants: Object.freeze(parseStoredGrants(row.key_id, row.grants)) }),
    versions: Object.freeze(versions.map(versionFromRow)),
    currentVersion: row.current_version,
    ...(row.seal === null ? {} : { seal: row.seal }),
  });
}

export function aliasFromRow(row: AliasRow): StoredAlias {
  return Object.freeze({
    aliasName: row.alias_name,
    targetKeyId: row.target_key_id,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    ...(row.seal === null ? {} : { seal: row.seal }),
  });
}
