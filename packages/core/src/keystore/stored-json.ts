/**
 * Parsing of the JSON columns a SQL key store keeps per key (tags, grants). The store is the
 * only writer of these columns, so junk there means someone else wrote them: it is refused as a
 * store failure naming the key, instead of surfacing as a bare SyntaxError or TypeError, or as a
 * record whose fields are not what StoredKey promises.
 */
import { KmsInternalError } from "../errors.ts";
import type { StoredGrant, StoredKey } from "./key-store.ts";

type StoredTag = StoredKey["tags"][number];

/** A key's stored tags column. @throws KMSInternalException when it is not valid tags JSON. */
export function parseStoredTags(keyId: string, text: string): StoredTag[] {
  return parseColumn(keyId, "tags", text, isTags);
}

/**
 * A key's stored grants column, deeply frozen (the seal check remembers verified records by
 * identity, which holds only for records nothing can change in place).
 * @throws KMSInternalException when it is not valid grants JSON.
 */
export function parseStoredGrants(keyId: string, text: string): StoredGrant[] {
  return deepFreeze(parseColumn(keyId, "grants", text, isGrants));
}

/** Freezes a JSON value and everything in it; returns it. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object") {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

function parseColumn<T>(
  keyId: string,
  column: "tags" | "grants",
  text: string,
  valid: (value: unknown) => value is T,
): T {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new KmsInternalError(`key ${keyId}: the stored ${column} are not valid JSON`, {
      cause: error,
    });
  }
  if (!valid(value)) {
    throw new KmsInternalError(`key ${keyId}: the stored ${column} do not have the expected shape`);
  }
  return value;
}

const isString = (value: unknown): value is string => typeof value === "string";
const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);
const isOptional = (value: unknown, check: (v: unknown) => boolean): boolean =>
  value === undefined || check(value);
const isStringRecord = (value: unknown): boolean =>
  isRecord(value) && Object.values(value).every(isString);

function isTags(value: unknown): value is StoredTag[] {
  return (
    Array.isArray(value) &&
    value.every((t) => isRecord(t) && isString(t.tagKey) && isString(t.tagValue))
  );
}

/** Whether `value` is a list of grants in the shape StoredGrant declares. */
export function isGrants(value: unknown): value is StoredGrant[] {
  return (
    Array.isArray(value) &&
    value.every(
      (g) =>
        isRecord(g) &&
        isString(g.grantId) &&
        isString(g.granteePrincipal) &&
        isString(g.issuingPrincipal) &&
        Array.isArray(g.operations) &&
        g.operations.every(isString) &&
        typeof g.createdAt === "number" &&
        isOptional(g.name, isString) &&
        isOptional(g.retiringPrincipal, isString) &&
        isOptional(
          g.constraints,
          (c) =>
            isRecord(c) &&
            isOptional(c.encryptionContextEquals, isStringRecord) &&
            isOptional(c.encryptionContextSubset, isStringRecord),
        ),
    )
  );
}
