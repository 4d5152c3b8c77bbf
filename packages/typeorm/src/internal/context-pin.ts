import { type EncryptionContext, ValidationError } from "@kms/core";
import { And, type EntityMetadata, Equal, FindOperator } from "typeorm";
import type { Where } from "./object-where.ts";
import { rawColumnIn } from "./raw-conditions.ts";

// `encryptedWhere`'s `context` option against the where it is given: a value the where's own
// equalities contradict is refused, and a `fromRow`/`rowIdentity` key the where does not set by
// equality becomes a pin, the condition that limits the lookup to the rows holding the value
// (`Not` would otherwise match every other tenant's rows, whose values are sealed under their own).

/**
 * `null`, `IsNull()`, `Equal(null)`, `In([null, …])`, or `Not` of one of them: a condition that
 * holds or fails by the column's nullness alone, whatever its values are sealed under.
 */
export function checksNull(value: unknown): boolean {
  if (value === null) return true;
  if (!(value instanceof FindOperator)) return false;
  switch (value.type) {
    case "isNull":
      return true;
    case "equal":
      return value.value === null;
    case "in":
      return (
        Array.isArray(value.value) && value.value.length > 0 && value.value.every((v) => v === null)
      );
    case "not":
      return checksNull(value.child ?? value.value);
    default:
      return false;
  }
}

/** Null beside the context's value matches no row: a contradiction, as two values are. */
function nullBesideContext(key: string, value: string): ValidationError {
  return new ValidationError(
    `"context" gives ${key} = ${JSON.stringify(value)} but the where has ${key} = null`,
  );
}

/**
 * What a condition can evaluate to on a row holding a known non-null value, in SQL's three-valued
 * logic ("unknown": a comparison with null, which no row matches). A set: several outcomes when
 * the condition cannot be judged here (Like, LessThan…: the database judges them).
 */
type Truth = "true" | "false" | "unknown";
type Outcomes = ReadonlySet<Truth>;

const ANY: Outcomes = new Set<Truth>(["true", "false", "unknown"]);

interface Judged {
  readonly outcomes: Outcomes;
  /** The condition compares with null or checks for it somewhere. */
  readonly null: boolean;
  /** The condition holds SQL of the caller's own (Raw), which no operator around it contains. */
  readonly raw: boolean;
}

const not3 = (a: Truth): Truth => (a === "true" ? "false" : a === "false" ? "true" : "unknown");
const and3 = (a: Truth, b: Truth): Truth =>
  a === "false" || b === "false"
    ? "false"
    : a === "unknown" || b === "unknown"
      ? "unknown"
      : "true";
const or3 = (a: Truth, b: Truth): Truth =>
  a === "true" || b === "true" ? "true" : a === "unknown" || b === "unknown" ? "unknown" : "false";

/** `parts` folded with `op` from `first`, every combination of their outcomes. */
function fold(parts: readonly Judged[], first: Truth, op: (a: Truth, b: Truth) => Truth): Judged {
  let outcomes: Outcomes = new Set([first]);
  for (const part of parts) {
    const next = new Set<Truth>();
    for (const a of outcomes) for (const b of part.outcomes) next.add(op(a, b));
    outcomes = next;
  }
  return {
    outcomes,
    null: parts.some((part) => part.null),
    raw: parts.some((part) => part.raw),
  };
}

/** `condition` (a value or an operator, as TypeORM compares a column with it) on `value`. */
function judge(condition: unknown, value: string): Judged {
  if (condition === null) return { outcomes: new Set(["unknown"]), null: true, raw: false };
  if (!(condition instanceof FindOperator)) {
    // A value is compared as the top of `where` compares the where's own equalities.
    const comparable =
      typeof condition === "string" ||
      typeof condition === "number" ||
      typeof condition === "bigint";
    return {
      outcomes: comparable ? new Set([String(condition) === value ? "true" : "false"]) : ANY,
      null: false,
      raw: false,
    };
  }
  const op: FindOperator<unknown> = condition;
  const inner: unknown = op.value;
  switch (op.type) {
    case "raw":
      return { outcomes: ANY, null: false, raw: true };
    case "isNull":
      return { outcomes: new Set(["false"]), null: true, raw: false };
    case "not": {
      const judged = judge(op.child ?? inner, value);
      return { ...judged, outcomes: new Set([...judged.outcomes].map(not3)) };
    }
    case "and":
    case "or": {
      if (!Array.isArray(inner) || inner.length === 0) break;
      const parts = inner.map((v) => judge(v, value));
      return op.type === "and" ? fold(parts, "true", and3) : fold(parts, "false", or3);
    }
    case "in":
      // In() of nothing is "0=1" to TypeORM: false.
      if (op.child !== undefined || !Array.isArray(inner)) break;
      return fold(
        inner.map((v) => judge(v, value)),
        "false",
        or3,
      );
    case "equal":
      if (op.child !== undefined) break;
      return judge(inner, value);
  }
  // An operator over another (Equal(Raw(…))) runs the inner one's SQL or parameters.
  const child = op.child === undefined ? undefined : judge(op.child, value);
  return { outcomes: ANY, null: false, raw: child?.raw ?? false };
}

/** A condition as the caller wrote it, for messages: `Not(In([null, "t2"]))`. */
function show(condition: unknown): string {
  if (condition === null || typeof condition === "string" || typeof condition === "number") {
    return JSON.stringify(condition);
  }
  if (!(condition instanceof FindOperator)) return "…";
  const op: FindOperator<unknown> = condition;
  const name =
    op.type === "ilike" ? "ILike" : `${op.type.charAt(0).toUpperCase()}${op.type.slice(1)}`;
  const inner: unknown = op.child ?? op.value;
  if (op.type === "isNull") return "IsNull()";
  if (op.type === "raw") return "Raw(…)";
  if (op.type === "in" && Array.isArray(inner)) return `In([${inner.map(show).join(", ")}])`;
  if (Array.isArray(inner)) return `${name}(${inner.map(show).join(", ")})`;
  return `${name}(${show(inner)})`;
}

/**
 * `given`, the where's own condition on the context column `key`, beside the context's `value`:
 * both hold, or the where is refused when that can match no row (`In(["t2"])`, `Not("t1")`, a
 * null check or comparison: silently empty otherwise), or when it holds SQL that could match
 * other values'.
 */
function pinned(key: string, value: string, given: FindOperator<unknown>): FindOperator<unknown> {
  const judged = judge(given, value);
  if (judged.raw) {
    // TypeORM joins an And's parts without brackets around Raw SQL: "a OR b AND tenantId = ?"
    // would match every tenant's rows.
    throw new ValidationError(
      `"context" gives ${key} = ${JSON.stringify(value)}, which the lookup is limited to, but the where compares ${key} with Raw SQL, which cannot be kept within the rows holding it: compare ${key} with values or operators (Equal, In, Not, IsNull, And, Or, Like…)`,
    );
  }
  if (!judged.outcomes.has("true")) {
    // A contradiction, as a where's own `key: "t2"` beside `context` t1 is: refused alike,
    // rather than silently matching nothing.
    if (judged.null && checksNull(given) && given.type !== "not") {
      throw nullBesideContext(key, value);
    }
    const why = judged.null
      ? " (a value is not null, and SQL finds no comparison with null true: IsNull() and Not(IsNull()) check for null)"
      : "";
    throw new ValidationError(
      `"context" gives ${key} = ${JSON.stringify(value)} but the where has ${key}: ${show(given)}, which no row holding ${JSON.stringify(value)} matches${why}`,
    );
  }
  return And(given, Equal(value));
}

/**
 * The context option checked against the where's own equalities (`own`), and the pins that
 * limit `where` to the rows holding the option's values, by context column of the entity
 * (`contextKeys`): the value, or the where's own condition on the column beside it. Judged before
 * any lookup, so that a where refused here costs no KMS call.
 * @throws ValidationException when the where sets a key of the option to another value or to
 *   null, or compares a pinned column with a null check no row holding the value matches, with
 *   `Raw` SQL, or with something else than a value or an operator.
 */
export function contextPins(
  contextKeys: readonly string[],
  context: EncryptionContext | undefined,
  where: Where,
  own: Where,
): Where {
  if (context !== undefined) {
    // The option would win over the where's own equality: the rows of one tenant would be
    // looked up with another tenant's keys, and a contradiction would go unnoticed.
    for (const [key, value] of Object.entries(context)) {
      const equal = own[key];
      if (equal === undefined) continue;
      if (equal === null) throw nullBesideContext(key, value);
      if (String(equal) !== value) {
        throw new ValidationError(
          `"context" gives ${key} = ${JSON.stringify(value)} but the where has ${key} = ${JSON.stringify(String(equal))}`,
        );
      }
    }
  }
  // Equality would match only the rows sealed under the context given, but Not would match
  // every other row, other tenants' included: the where is limited to the context's rows.
  const pins: Where = {};
  for (const key of contextKeys) {
    const value = context?.[key];
    if (value === undefined || own[key] !== undefined) continue;
    const given: unknown = where[key];
    if (given === undefined) pins[key] = value;
    else if (given === null) throw nullBesideContext(key, value);
    else if (given instanceof FindOperator) pins[key] = pinned(key, value, given);
    else {
      throw new ValidationError(
        `"context" gives ${key} = ${JSON.stringify(value)}, which the lookup is limited to, but the where compares ${key} with something else than a value or an operator`,
      );
    }
  }
  return pins;
}

/**
 * Refuses Raw SQL anywhere in `where` (the where as the caller gave it, of `metadata`'s entity:
 * its embeddeds' and relations' wheres included) when `pins` limit some part of it to the
 * context's rows: update/delete criteria and QueryBuilder.where(object) join Raw's SQL to the pin
 * with a bare AND, where an OR in it reaches rows holding other values. Refused in a find too,
 * which brackets it: the same where is taken by both.
 * @throws ValidationException naming the first column compared with Raw and the pinned key.
 */
export function refuseRawBesidePins(
  pins: Where,
  context: EncryptionContext | undefined,
  metadata: EntityMetadata,
  where: Where,
): void {
  const key = Object.keys(pins)[0];
  if (key === undefined) return;
  const path = rawColumnIn(metadata, where);
  if (path === undefined) return;
  const value = JSON.stringify(context?.[key]);
  throw new ValidationError(
    `"context" gives ${key} = ${value}, which the lookup is limited to, but the where compares ${path} with Raw SQL, which TypeORM joins to that limit without brackets in update and delete criteria and QueryBuilder.where(object), where an OR in it would reach rows not holding ${value}: compare ${path} with operators (Equal, In, Not, Like, LessThan…), or add the Raw condition to a QueryBuilder in its own Brackets`,
  );
}
