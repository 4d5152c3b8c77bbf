import {
  parseStoredGrants,
  parseStoredTags,
  type StoredAlias,
  type StoredKey,
  type StoredKeyVersion,
  ValidationError,
} from "@kms/core";
import pg from "pg";

/**
 * Epoch milliseconds and counters are bigint columns; pg returns int8 as a string by default.
 * Every value we store fits a double exactly (Number.MAX_SAFE_INTEGER ms is year 287396).
 */
export const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20 && format !== "binary"
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format as "text")) as pg.CustomTypesConfig["getTypeParser"],
};

/**
 * What PostgreSQL text cannot hold exactly: U+0000, which it rejects (22021), and lone
 * surrogates, which the driver's UTF-8 encoding silently turns into U+FFFD.
 */
const UNSTORABLE = /[\0\p{Cs}]/u;

/** Whether a text column holds `value` exactly, so no stored id or name can equal anything else. */
export function isStorableText(value: string): boolean {
  return !UNSTORABLE.test(value);
}

/**
 * Refuses text a column would reject or change, as the caller's error rather than
 * KMSInternalException, and so that no record is ever stored other than as given. The value
 * stays out of the message.
 * @throws ValidationError naming the field.
 */
export function assertStorableText(field: string, value: string | undefined): void {
  if (value !== undefined && UNSTORABLE.test(value)) {
    throw new ValidationError(
      `"${field}" cannot be stored in PostgreSQL text: it contains U+0000 or a lone surrogate`,
    );
  }
}

/**
 * Every text field of a key that goes to a text column as is (tags and grants go as JSON, which
 * escapes both).
 * @throws ValidationError naming the first field that cannot be stored.
 */
export function assertStorableKey(key: StoredKey): void {
  const fields: [string, string | undefined][] = [
    ["keyId", key.keyId],
    ["description", key.description],
    ["keySpec", key.keySpec],
    ["keyUsage", key.keyUsage],
    ["origin", key.origin],
    ["keyState", key.keyState],
    ["policy", key.policy],
    ["seal", key.seal],
  ];
  key.versions.forEach((v, i) => {
    fields.push([`versions[${i}].keyMaterialId`, v.keyMaterialId]);
    fields.push([`versions[${i}].rotationType`, v.rotationType]);
  });
  for (const [field, value] of fields) assertStorableText(field, value);
}

/**
 * A list's `after` bound as a text parameter. No stored id or name contains U+0000, so those
 * after "ab\0…" are exactly those after "ab" (a marker decoded from base64 can hold one).
 */
export function listBound(after: string | undefined): string | null {
  if (after === undefined) return null;
  const nul = after.indexOf("\0");
  return nul === -1 ? after : after.slice(0, nul);
}

/** A row of kms_keys joined with one of its versions (v_* columns; null when none). */
export interface KeyVersionRow {
  key_id: string;
  revision: number;
  created_at: number;
  description: string;
  key_spec: string;
  key_usage: string;
  origin: string;
  multi_region: boolean;
  key_state: string;
  deletion_date: number | null;
  pending_window_in_days: number | null;
  rotation_enabled: boolean;
  rotation_period_in_days: number;
  next_rotation_at: number | null;
  on_demand_rotations: number;
  tags: string;
  policy: string | null;
  grants: string | null;
  current_version: number;
  /** NULL when the key has no seal (and in rows from before migration 3). */
  seal: string | null;
  v_version: number | null;
  v_created_at: number | null;
  v_rotation_type: string | null;
  v_key_material_id: string | null;
  v_wrapped_material: Buffer | null;
  v_public_key: Buffer | null;
}

export interface AliasRow {
  alias_name: string;
  target_key_id: string;
  created_at: number;
  updated_at: number;
  /** NULL when the alias has no seal (and in rows from before migration 3). */
  seal: string | null;
}

/** Columns of kms_keys, in the order of {@link keyParams}. */
export const KEY_COLUMNS = [
  "key_id",
  "revision",
  "created_at",
  "description",
  "key_spec",
  "key_usage",
  "origin",
  "multi_region",
  "key_state",
  "deletion_date",
  "pending_window_in_days",
  "rotation_enabled",
  "rotation_period_in_days",
  "next_rotation_at",
  "on_demand_rotations",
  "tags",
  "policy",
  "grants",
  "current_version",
  "seal",
] as const;

/** The SELECT list that pairs each key row with its versions (see {@link keysFromRows}). */
export const KEY_VERSION_SELECT = `k.*, v.version AS v_version, v.created_at AS v_created_at,
  v.rotation_type AS v_rotation_type, v.key_material_id AS v_key_material_id,
  v.wrapped_material AS v_wrapped_material, v.public_key AS v_public_key`;

/** Binds bytes as bytea without copying; a view keeps a subarray's neighbours out. */
export function bytea(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function keyParams(key: StoredKey): unknown[] {
  return [
    key.keyId,
    key.revision,
    key.createdAt,
    key.description,
    key.keySpec,
    key.keyUsage,
    key.origin,
    key.multiRegion,
    key.keyState,
    key.deletionDate ?? null,
    key.pendingWindowInDays ?? null,
    key.rotation.enabled,
    key.rotation.periodInDays,
    key.rotation.nextRotationAt ?? null,
    key.rotation.onDemandRotations,
    JSON.stringify(key.tags.map((t) => ({ tagKey: t.tagKey, tagValue: t.tagValue }))),
    key.policy ?? null,
    key.grants === undefined ? null : JSON.stringify(key.grants),
    key.currentVersion,
    key.seal ?? null,
  ];
}

/** The versions of a key as parallel arrays, for one `unnest` insert. */
export function versionArrays(versions: readonly StoredKeyVersion[]): unknown[] {
  return [
    versions.map((v) => v.version),
    versions.map((v) => v.createdAt),
    versions.map((v) => v.rotationType ?? null),
    versions.map((v) => v.keyMaterialId),
    versions.map((v) => bytea(v.wrappedMaterial)),
    versions.map((v) => (v.publicKey === undefined ? null : bytea(v.publicKey))),
  ];
}

/**
 * pg returns bytea as a Buffer; hand out a plain Uint8Array copy so callers get the documented
 * type and cannot reach into a pooled allocation.
 */
function bytesOf(value: Buffer): Uint8Array {
  return new Uint8Array(value);
}

function versionFromRow(row: KeyVersionRow): StoredKeyVersion {
  return Object.freeze({
    version: row.v_version!,
    createdAt: row.v_created_at!,
    ...(row.v_rotation_type === null
      ? {}
      : { rotationType: row.v_rotation_type as NonNullable<StoredKeyVersion["rotationType"]> }),
    keyMaterialId: row.v_key_material_id!,
    wrappedMaterial: bytesOf(row.v_wrapped_material!),
    ...(row.v_public_key === null ? {} : { publicKey: bytesOf(row.v_public_key) }),
  });
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object") {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/**
 * Optional fields are left out rather than set to undefined, so a record read back is
 * indistinguishable from the one written (exactOptionalPropertyTypes, and the conformance suite).
 */
function keyFromRow(row: KeyVersionRow, versions: StoredKeyVersion[]): StoredKey {
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
    multiRegion: row.multi_region,
    keyState: row.key_state as StoredKey["keyState"],
    ...(row.deletion_date === null ? {} : { deletionDate: row.deletion_date }),
    ...(row.pending_window_in_days === null
      ? {}
      : { pendingWindowInDays: row.pending_window_in_days }),
    rotation: Object.freeze({
      enabled: row.rotation_enabled,
      periodInDays: row.rotation_period_in_days,
      ...(row.next_rotation_at === null ? {} : { nextRotationAt: row.next_rotation_at }),
      onDemandRotations: row.on_demand_rotations,
    }),
    tags: Object.freeze(tags),
    ...(row.policy === null ? {} : { policy: row.policy }),
    ...(row.grants === null
      ? {}
      : { grants: deepFreeze(parseStoredGrants(row.key_id, row.grants)) }),
    versions: Object.freeze(versions),
    currentVersion: row.current_version,
    ...(row.seal === null ? {} : { seal: row.seal }),
  });
}

/** Folds rows ordered by (key_id, version) into key records. */
export function keysFromRows(rows: readonly KeyVersionRow[]): StoredKey[] {
  const keys: StoredKey[] = [];
  let i = 0;
  while (i < rows.length) {
    const first = rows[i]!;
    const versions: StoredKeyVersion[] = [];
    for (; i < rows.length && rows[i]!.key_id === first.key_id; i++) {
      if (rows[i]!.v_version !== null) versions.push(versionFromRow(rows[i]!));
    }
    keys.push(keyFromRow(first, versions));
  }
  return keys;
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
