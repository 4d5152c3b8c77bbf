import { InvalidMarkerError } from "../errors.ts";
import type { Page, PageRequest } from "../types.ts";
import { assertInteger, assertObject } from "./assert.ts";

/** AWS's length limit for a pagination marker. */
const MAX_MARKER_LENGTH = 1024;

/** Separates a marker's scope from the id it resumes after; never part of a scope. */
const SCOPE_END = "\u0000";

/** What a marker of `scope` starts with, before the id it resumes after. */
const scopePrefix = (scope: string): string => (scope === "" ? "" : `${scope}${SCOPE_END}`);

export interface PageBounds {
  readonly max: number;
  readonly default: number;
}

/** AWS's usual bounds for `limit`: 1–1000, default 100. */
const DEFAULT_BOUNDS: PageBounds = { max: 1000, default: 100 };

/**
 * Resolves limit (AWS: 1–1000, default 100, unless the operation says otherwise) and the opaque
 * marker into a store page request. `scope` names what is being listed (see toPage).
 */
export function pageRequest(
  request: PageRequest | undefined,
  bounds: PageBounds = DEFAULT_BOUNDS,
  scope = "",
): { limit: number; after?: string } {
  const limit = pageLimit(request, bounds);
  const after = pageMarker(request, scope);
  return after === undefined ? { limit } : { limit, after };
}

/** The request's `limit` within `bounds`, or the operation's default. @throws ValidationError. */
export function pageLimit(
  request: PageRequest | undefined,
  bounds: PageBounds = DEFAULT_BOUNDS,
): number {
  if (request !== undefined) assertObject("request", request);
  return request?.limit === undefined
    ? bounds.default
    : assertInteger("limit", request.limit, 1, bounds.max);
}

/**
 * The id a request's marker resumes after, when the marker is one toPage made for the same
 * `scope`: a marker of another operation, or of the same operation on another key, is refused
 * rather than paging from wherever its id would fall.
 * @throws InvalidMarkerError.
 */
export function pageMarker(request: PageRequest | undefined, scope: string): string | undefined {
  if (request?.marker === undefined) return undefined;
  const refuse = () =>
    new InvalidMarkerError(`"marker" is not a marker returned by this operation`);
  if (
    typeof request.marker !== "string" ||
    request.marker.length > MAX_MARKER_LENGTH ||
    !/^[A-Za-z0-9_-]+$/.test(request.marker)
  ) {
    throw refuse();
  }
  const decoded = Buffer.from(request.marker, "base64url").toString("utf8");
  // Only the exact encoding toPage produces is a marker; anything else would page from an
  // arbitrary (or, for invalid UTF-8, mangled) position instead of failing.
  if (Buffer.from(decoded, "utf8").toString("base64url") !== request.marker) throw refuse();
  const prefix = scopePrefix(scope);
  if (!decoded.startsWith(prefix)) throw refuse();
  const after = decoded.slice(prefix.length);
  if (after.length === 0) throw refuse();
  return after;
}

/**
 * Builds a page from `limit + 1` fetched items: the extra item only says that more exist.
 * The marker is the last returned id with the listing's `scope` (the operation, and the key it
 * lists for), encoded so callers treat it as opaque.
 */
export function toPage<T>(
  items: readonly T[],
  limit: number,
  id: (item: T) => string,
  scope = "",
): { items: T[] } & Page {
  if (items.length <= limit) return { items: [...items], truncated: false };
  const kept = items.slice(0, limit);
  const last = kept[kept.length - 1]!;
  return {
    items: kept,
    truncated: true,
    nextMarker: Buffer.from(`${scopePrefix(scope)}${id(last)}`, "utf8").toString("base64url"),
  };
}
