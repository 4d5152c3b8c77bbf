import { InvalidMarkerError } from "../errors.ts";
import type { Page, PageRequest } from "../types.ts";
import { assertInteger, assertObject } from "./assert.ts";

/** AWS's length limit for a pagination marker. */
const MAX_MARKER_LENGTH = 1024;

/** Resolves limit (AWS: 1–1000, default 100, unless the operation says otherwise) and the opaque marker into a store page request. */
export function pageRequest(
  request: PageRequest | undefined,
  bounds: { readonly max: number; readonly default: number } = { max: 1000, default: 100 },
): { limit: number; after?: string } {
  if (request !== undefined) assertObject("request", request);
  const limit =
    request?.limit === undefined
      ? bounds.default
      : assertInteger("limit", request.limit, 1, bounds.max);
  if (request?.marker === undefined) return { limit };
  if (
    typeof request.marker !== "string" ||
    request.marker.length > MAX_MARKER_LENGTH ||
    !/^[A-Za-z0-9_-]+$/.test(request.marker)
  ) {
    throw new InvalidMarkerError(`"marker" is not a marker returned by this operation`);
  }
  const after = Buffer.from(request.marker, "base64url").toString("utf8");
  // Only the exact encoding toPage produces is a marker; anything else would page from an
  // arbitrary (or, for invalid UTF-8, mangled) position instead of failing.
  if (after.length === 0 || Buffer.from(after, "utf8").toString("base64url") !== request.marker) {
    throw new InvalidMarkerError(`"marker" is not a marker returned by this operation`);
  }
  return { limit, after };
}

/**
 * Builds a page from `limit + 1` fetched items: the extra item only says that more exist.
 * The marker is the last returned id, encoded so callers treat it as opaque.
 */
export function toPage<T>(
  items: readonly T[],
  limit: number,
  id: (item: T) => string,
): { items: T[] } & Page {
  if (items.length <= limit) return { items: [...items], truncated: false };
  const kept = items.slice(0, limit);
  const last = kept[kept.length - 1]!;
  return {
    items: kept,
    truncated: true,
    nextMarker: Buffer.from(id(last), "utf8").toString("base64url"),
  };
}
