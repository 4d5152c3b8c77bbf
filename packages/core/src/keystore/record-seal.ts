/**
 * Record seals (docs/FORMAT.md §4.1): the text format of a seal and the canonical bytes its MAC
 * covers. The MAC itself is computed inside the HSM (SoftwareHsm.recordSealMac), which holds
 * the root keys; this file only decides which bytes are authenticated.
 */
import type { StoredAlias, StoredGrant, StoredKey, StoredKeyVersion } from "./key-store.ts";

/** A seal taken apart; `mac` is the raw 32-byte HMAC. */
export interface ParsedSeal {
  readonly rootKeyId: string;
  readonly counter: number;
  readonly mac: Uint8Array;
}

export type SealedRecordKind = "key" | "alias";

const SEAL = /^s1\.([0-9a-f]{16})\.([1-9][0-9]{0,15})\.([A-Za-z0-9_-]{43})$/;
const encoder = new TextEncoder();

/** `s1.<root key id>.<counter>.<MAC, base64url without padding>`. */
export function formatSeal(rootKeyId: string, counter: number, mac: Uint8Array): string {
  return `s1.${rootKeyId}.${counter}.${Buffer.from(mac).toString("base64url")}`;
}

/**
 * Parses a seal strictly: one spelling per seal (lowercase hex id, counter without leading
 * zeros, canonical base64url), so a seal cannot be re-spelled into another valid string.
 * Undefined when malformed.
 */
export function parseSeal(seal: string): ParsedSeal | undefined {
  const match = SEAL.exec(seal);
  if (match === null) return undefined;
  const counter = Number(match[2]);
  if (!Number.isSafeInteger(counter)) return undefined;
  const mac = Buffer.from(match[3]!, "base64url");
  if (mac.length !== 32 || mac.toString("base64url") !== match[3]) return undefined;
  return { rootKeyId: match[1]!, counter, mac: new Uint8Array(mac) };
}

/** The root key id a seal names, if it is well formed. */
export function sealRootKeyId(seal: string | undefined): string | undefined {
  return seal === undefined ? undefined : parseSeal(seal)?.rootKeyId;
}

/** The counter of a seal, if it is well formed. */
export function sealCounter(seal: string | undefined): number | undefined {
  return seal === undefined ? undefined : parseSeal(seal)?.counter;
}

/**
 * JSON with object keys sorted by UTF-16 code units and undefined-valued properties left out,
 * which for the strings, integers, booleans, arrays and objects of a record is RFC 8785 (JCS).
 */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>;
    const parts: string[] = [];
    for (const name of Object.keys(record).sort()) {
      const field = record[name];
      if (field !== undefined) parts.push(`${JSON.stringify(name)}:${canonicalJson(field)}`);
    }
    return `{${parts.join(",")}}`;
  }
  // A record read back from a store holds no undefined here (absent fields are not listed),
  // nor functions or symbols; NaN and Infinity would encode as null and fail verification.
  return JSON.stringify(value) ?? "null";
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

function versionFields(v: StoredKeyVersion): Record<string, unknown> {
  return {
    version: v.version,
    createdAt: v.createdAt,
    rotationType: v.rotationType,
    keyMaterialId: v.keyMaterialId,
    wrappedMaterial: base64(v.wrappedMaterial),
    publicKey: v.publicKey === undefined ? undefined : base64(v.publicKey),
  };
}

function grantFields(g: StoredGrant): Record<string, unknown> {
  return {
    grantId: g.grantId,
    name: g.name,
    granteePrincipal: g.granteePrincipal,
    retiringPrincipal: g.retiringPrincipal,
    issuingPrincipal: g.issuingPrincipal,
    operations: g.operations,
    constraints:
      g.constraints === undefined
        ? undefined
        : {
            encryptionContextEquals: g.constraints.encryptionContextEquals,
            encryptionContextSubset: g.constraints.encryptionContextSubset,
          },
    createdAt: g.createdAt,
  };
}

/**
 * The canonical encoding of a key record (FORMAT §4.1): every StoredKey field but `revision`
 * and `seal`, projected field by field so that only what the KMS reads is covered and a store
 * that drops properties StoredKey does not declare cannot break a seal. Normalized: `grants`
 * absent or empty are the same (stores keep "no grants" as either).
 */
export function canonicalKeyRecord(key: StoredKey): string {
  return canonicalJson({
    keyId: key.keyId,
    createdAt: key.createdAt,
    description: key.description,
    keySpec: key.keySpec,
    keyUsage: key.keyUsage,
    origin: key.origin,
    multiRegion: key.multiRegion,
    keyState: key.keyState,
    deletionDate: key.deletionDate,
    pendingWindowInDays: key.pendingWindowInDays,
    rotation: {
      enabled: key.rotation.enabled,
      periodInDays: key.rotation.periodInDays,
      nextRotationAt: key.rotation.nextRotationAt,
      onDemandRotations: key.rotation.onDemandRotations,
    },
    tags: key.tags.map((t) => ({ tagKey: t.tagKey, tagValue: t.tagValue })),
    policy: key.policy,
    grants:
      key.grants === undefined || key.grants.length === 0 ? undefined : key.grants.map(grantFields),
    versions: key.versions.map(versionFields),
    currentVersion: key.currentVersion,
  });
}

/** The canonical encoding of an alias record: every field but `seal` (FORMAT §4.1). */
export function canonicalAliasRecord(alias: StoredAlias): string {
  return canonicalJson({
    aliasName: alias.aliasName,
    targetKeyId: alias.targetKeyId,
    createdAt: alias.createdAt,
    updatedAt: alias.updatedAt,
  });
}

/** What the MAC covers: `kms/record-seal/v1|<kind>|<counter>|<canonical record>`, UTF-8. */
export function sealInput(kind: SealedRecordKind, counter: number, canonical: string): Uint8Array {
  return encoder.encode(`kms/record-seal/v1|${kind}|${counter}|${canonical}`);
}
