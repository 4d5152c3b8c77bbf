import { type EncryptionContext, ValidationError } from "@kms/core";
import {
  And,
  type EntityMetadata,
  Equal,
  FindOperator,
  type FindOptionsWhere,
  In,
  IsNull,
  Not,
  type ObjectLiteral,
  type Repository,
} from "typeorm";
import { encryptionOf, type TypeormFieldEncryption } from "./field-encryption.ts";
import {
  type BlindIndexField,
  contextFor,
  describe,
  type EncryptedField,
  type EntityDescriptor,
} from "./internal/entity-descriptor.ts";
import { Sealed } from "./internal/sealed.ts";

export interface EncryptedWhereOptions {
  /**
   * Context values for the lookup, when they are not equalities in the where itself (e.g. the
   * tenant of a `fromRow` binding) nor in the ambient scope. A `fromRow` (or `rowIdentity`) key
   * given here also limits the where to the rows holding its value (`tenantId = "t1"` is added):
   * the lookup is scoped to the context it was given, `Not` as much as equality.
   */
  readonly context?: EncryptionContext;
}

type Where = Record<string, unknown>;

/**
 * What a lookup admits of the legacy plaintext rows of a blind-indexed property (matched on the
 * property's own column, their index being null): an operator over the legacy forms, nothing
 * (no value looked up can be a legacy value), or every non-null value (`Not` of nothing).
 */
const NO_LEGACY: unique symbol = Symbol("no legacy row");
const ANY_LEGACY: unique symbol = Symbol("any legacy row");

/** A lookup rewritten: on the column itself (deterministic) or the index, and on legacy rows. */
interface Rewritten {
  readonly main: unknown;
  /** An operator or value over the legacy forms, NO_LEGACY or ANY_LEGACY. */
  readonly legacy: unknown;
  /** Whether some value looked up had a legacy form (only then do legacy rows need a branch). */
  readonly withLegacy: boolean;
}

function isPlainObject(value: unknown): value is Where {
  return (
    typeof value === "object" &&
    value !== null &&
    !(value instanceof FindOperator) &&
    !Array.isArray(value) &&
    !(value instanceof Uint8Array) &&
    !(value instanceof Date)
  );
}

/** The where's own equalities, as a row, to read `fromRow` and `rowIdentity` context keys from. */
function equalities(where: Where): Where {
  const out: Where = {};
  for (const [key, value] of Object.entries(where)) {
    if (value instanceof FindOperator) {
      if (value.type === "equal") out[key] = value.value;
    } else if (
      typeof value === "string" ||
      typeof value === "number" ||
      typeof value === "bigint"
    ) {
      out[key] = value;
    }
  }
  return out;
}

/**
 * `null`, `IsNull()`, `Equal(null)`, `In([null, …])`, or `Not` of one of them: a condition that
 * holds or fails by the column's nullness alone, whatever its values are sealed under.
 */
function checksNull(value: unknown): boolean {
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
 * both hold, or the where is refused when that can only match no row because of a null check or
 * comparison (silently empty otherwise), or when it holds SQL that could match other values'.
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
  if (judged.null && !judged.outcomes.has("true")) {
    if (checksNull(given) && given.type !== "not") throw nullBesideContext(key, value);
    throw new ValidationError(
      `"context" gives ${key} = ${JSON.stringify(value)} but the where has ${key}: ${show(given)}, which no row holding ${JSON.stringify(value)} matches (a value is not null, and SQL finds no comparison with null true: IsNull() and Not(IsNull()) check for null)`,
    );
  }
  return And(given, Equal(value));
}

class WhereRewriter {
  readonly #encryption: TypeormFieldEncryption;
  readonly #repository: Repository<ObjectLiteral>;
  readonly #context: EncryptionContext | undefined;
  /** The caller passed an array: the where may become several alternatives (OR). */
  readonly #alternatives: boolean;

  constructor(
    encryption: TypeormFieldEncryption,
    repository: Repository<ObjectLiteral>,
    context: EncryptionContext | undefined,
    alternatives: boolean,
  ) {
    this.#encryption = encryption;
    this.#repository = repository;
    this.#context = context;
    this.#alternatives = alternatives;
  }

  /**
   * The where rewritten, as alternatives (OR): one, unless a blind-indexed property is looked up
   * while legacy plaintext rows may hold it (its index there is null: those rows are matched on
   * the property's own column, in a second alternative).
   */
  async where(metadata: EntityMetadata, where: Where): Promise<Where[]> {
    const d = describe(metadata);
    const own = equalities(where);
    if (this.#context !== undefined) {
      // The option would win over the where's own equality: the rows of one tenant would be
      // looked up with another tenant's keys, and a contradiction would go unnoticed.
      for (const [key, value] of Object.entries(this.#context)) {
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
    // Judged before any lookup, so that a where refused here costs no KMS call.
    const pins: Where = {};
    for (const key of d?.contextKeys ?? []) {
      const value = this.#context?.[key];
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
    const outs = await this.#rewrite(metadata, d, where, own, "");
    return Object.keys(pins).length === 0 ? outs : outs.map((out) => ({ ...out, ...pins }));
  }

  /**
   * `where` at the property path `prefix` of the entity: the entity's where itself, or the
   * object given for one of its embeddeds (`{ address: { street } }`), whose encrypted columns
   * are bound to the entity's own context columns, the equalities in `row`. Alternatives, as
   * `where` returns them.
   */
  async #rewrite(
    metadata: EntityMetadata,
    d: EntityDescriptor | undefined,
    where: Where,
    row: Where,
    prefix: string,
  ): Promise<Where[]> {
    let outs: Where[] = [{}];
    // Each part is one or more alternatives for this key; several multiply the where's.
    const put = (parts: readonly Where[]) => {
      outs =
        parts.length === 1
          ? outs.map((out) => Object.assign(out, parts[0]))
          : outs.flatMap((out) => parts.map((part) => ({ ...out, ...part })));
    };
    for (const [key, value] of Object.entries(where)) {
      const path = `${prefix}${key}`;
      const indexed = d?.blindIndexes.get(path);
      if (d !== undefined && indexed !== undefined) {
        throw new ValidationError(
          `${d.model}.${path} is a blind index: look up ${indexed.path} instead`,
        );
      }
      const f = d?.byPath.get(path);
      if (d !== undefined && f !== undefined) {
        // Dropping the key would drop the condition: a lookup with a missing value would then
        // match every row (of every tenant).
        if (value === undefined) {
          throw new ValidationError(
            `${d.model}.${path} is undefined: pass a value, null or IsNull() to look it up`,
          );
        }
        // A null check compares no value: as in a plain find, it needs no lookup mode and no
        // context, and it stays on the column itself (null there exactly when the index is).
        if (checksNull(value)) {
          put([{ [key]: value }]);
          continue;
        }
        if (f.spec.mode !== "deterministic" && f.index === undefined) {
          throw new ValidationError(
            `${d.model}.${path} is randomized: equality lookups need deterministic: true or a blindIndex`,
          );
        }
        const context = contextFor(d.model, f, row, undefined, this.#context);
        const rewritten = await this.#value(d, f, context, value);
        if (f.spec.mode === "deterministic") {
          put([{ [key]: rewritten.main }]);
          continue;
        }
        const column = (f.index as BlindIndexField).property;
        if (!rewritten.withLegacy) {
          put([{ [column]: rewritten.main }]);
          continue;
        }
        // Legacy rows have no index yet: they are matched on the property, by the value in clear.
        const legacy = rewritten.legacy;
        if (legacy !== NO_LEGACY && !this.#alternatives) {
          throw new ValidationError(
            `${d.model}.${path} is blind-indexed and legacy plaintext rows (legacyPlaintext) have no index yet: matching them takes a second alternative on ${path} itself; pass the where in an array, encryptedWhere(repository, [where]), or migrate the rows first`,
          );
        }
        put(
          legacy === NO_LEGACY
            ? [{ [column]: rewritten.main }]
            : [
                { [column]: rewritten.main },
                { [column]: IsNull(), [key]: legacy === ANY_LEGACY ? Not(IsNull()) : legacy },
              ],
        );
        continue;
      }
      const relation = metadata.findRelationWithPropertyPath(path);
      if (relation !== undefined && isPlainObject(value)) {
        const inner = await this.where(relation.inverseEntityMetadata, value);
        put(inner.map((alternative) => ({ [key]: alternative })));
        continue;
      }
      if (isPlainObject(value) && metadata.hasEmbeddedWithPropertyPath(path)) {
        const inner = await this.#rewrite(metadata, d, value, row, `${path}.`);
        put(inner.map((alternative) => ({ [key]: alternative })));
        continue;
      }
      put([{ [key]: value }]);
    }
    return outs;
  }

  /**
   * A lookup of `f` (a value or an operator) as stored forms. Outside migrations a value has one
   * form and keeps its shape (`Equal(v)` → `Equal(sealed)`); while one is under way it may have
   * several (the current one, those under `previousKeyIds`, a legacy one), and becomes `In` of
   * them: `In` the union of its values' forms, `Not` of either excludes them all.
   */
  async #value(
    d: EntityDescriptor,
    f: EncryptedField,
    context: EncryptionContext,
    value: unknown,
  ): Promise<Rewritten> {
    if (value === null) return { main: null, legacy: NO_LEGACY, withLegacy: false };
    if (value instanceof FindOperator) {
      switch (value.type) {
        case "equal":
          return value.value === null
            ? { main: value, legacy: NO_LEGACY, withLegacy: false }
            : this.#leaf(d, f, context, value.value, Equal);
        case "in": {
          const values: unknown = value.value;
          if (!Array.isArray(values)) {
            throw new ValidationError(`${d.model}.${f.path}: In() expects an array`);
          }
          // SQL's IN never matches NULL; a sealed null would be some value's blind index.
          const forms = await Promise.all(
            values.map((v) =>
              v === null ? { sealed: [null], legacy: [] } : this.#forms(d, f, context, v),
            ),
          );
          const legacy = forms.flatMap((form) => form.legacy);
          return {
            main: In(forms.flatMap((form) => form.sealed)),
            legacy: legacy.length === 0 ? NO_LEGACY : In(legacy),
            withLegacy: legacy.length > 0,
          };
        }
        case "not": {
          const inner: unknown = value.child ?? value.value;
          const rewritten = await this.#value(d, f, context, inner);
          const legacy = rewritten.legacy;
          return {
            main: Not(rewritten.main),
            legacy:
              legacy === NO_LEGACY ? ANY_LEGACY : legacy === ANY_LEGACY ? NO_LEGACY : Not(legacy),
            withLegacy: rewritten.withLegacy,
          };
        }
        case "isNull":
          return { main: value, legacy: value, withLegacy: false };
        default:
          throw new ValidationError(
            `${d.model}.${f.path} is encrypted: the "${value.type}" operator cannot run on ciphertext (use a value, Equal, In, Not or IsNull)`,
          );
      }
    }
    // A decimal may be an object (decimal.js), which the engine reads by its type.
    if (isPlainObject(value) && f.spec.type !== "json" && f.spec.type !== "decimal") {
      throw new ValidationError(
        `${d.model}.${f.path} is encrypted: expected a value or an operator`,
      );
    }
    return this.#leaf(d, f, context, value, (sealed) => sealed);
  }

  /** One value: its one form as `wrap` gives it, or `In` of its forms. */
  async #leaf(
    d: EntityDescriptor,
    f: EncryptedField,
    context: EncryptionContext,
    value: unknown,
    wrap: (sealed: unknown) => unknown,
  ): Promise<Rewritten> {
    const { sealed, legacy } = await this.#forms(d, f, context, value);
    const match = (forms: readonly unknown[]) =>
      forms.length === 1 ? wrap(forms[0]) : In(forms as unknown[]);
    return {
      main: match(sealed),
      legacy: legacy.length === 0 ? NO_LEGACY : match(legacy),
      withLegacy: legacy.length > 0,
    };
  }

  #forms(
    d: EntityDescriptor,
    f: EncryptedField,
    context: EncryptionContext,
    value: unknown,
  ): Promise<{ readonly sealed: readonly unknown[]; readonly legacy: readonly unknown[] }> {
    const dataSource = this.#repository.manager.connection;
    const queryRunner = this.#repository.manager.queryRunner;
    // Sealed, as the columns' transformers accept nothing else (a bare string there could be
    // the plaintext it hides).
    return this.#encryption.run(dataSource, queryRunner, (options) =>
      this.#encryption.lookupForms(d.model, f, context, value, options),
    );
  }
}
/**
 * Rewrites equality lookups on encrypted columns into what the database holds: deterministic
 * ciphertext, or the blind index column's value. Accepts plain values, `Equal`, `In`, `Not`
 * and `IsNull` (also inside relations); pass the result to `find*`, `findOneBy`, `update`,
 * `delete`, `count*` or `QueryBuilder.where(object)`. A null check (`IsNull()`, `Not(IsNull())`…)
 * reads no value: it is left as it is, on any encrypted column, without a context.
 *
 * A `fromRow` key given in `options.context` (not by an equality in the where) limits the where
 * to the rows holding that value: `{ email: Not(v) }` with `context: { tenantId: "t1" }` becomes
 * `{ email: Not(sealed), tenantId: "t1" }`, as the rows of other tenants hold values sealed
 * under their own tenant, which `Not` would match whatever they hold. A condition of the where's
 * own on that column is kept beside the value (`And(condition, Equal("t1"))`).
 *
 * While a migration is under way (`previousKeyIds`, `legacyPlaintext`) a value may have several
 * stored forms: a value or `Equal` becomes `In` of them, `In` the union of its values' forms,
 * `Not` excludes them all. With `legacyPlaintext`, a lookup on a blind-indexed property must
 * also match legacy rows, which have no index yet, on the property's own column (by the value in
 * clear): that takes a second alternative (TypeORM's OR), so pass the where in an array
 * (`encryptedWhere(repo, [where])`); an object where is refused then rather than missing them.
 * @throws ValidationException when a column compared with a value is randomized without a blind
 *   index, when an operator cannot run on ciphertext (Like, LessThan, Between, Raw…), when a
 *   context value is missing, when `options.context` gives a key the where sets to another
 *   value or to null, or checks or compares with null so that no row holding the context's value
 *   could match (`IsNull()`, `In([null])`, `Not(Equal(null))`…), or compares with `Raw` SQL (which
 *   could reach other values' rows), when the repository's DataSource has no field encryption
 *   subscriber, or when an object where looks up a blind-indexed property whose legacy rows
 *   need an alternative of their own (see above).
 */
export async function encryptedWhere<T extends ObjectLiteral>(
  repository: Repository<T>,
  where: FindOptionsWhere<T>,
  options?: EncryptedWhereOptions,
): Promise<FindOptionsWhere<T>>;
export async function encryptedWhere<T extends ObjectLiteral>(
  repository: Repository<T>,
  where: FindOptionsWhere<T>[],
  options?: EncryptedWhereOptions,
): Promise<FindOptionsWhere<T>[]>;
export async function encryptedWhere<T extends ObjectLiteral>(
  repository: Repository<T>,
  where: FindOptionsWhere<T> | FindOptionsWhere<T>[],
  options: EncryptedWhereOptions = {},
): Promise<FindOptionsWhere<T> | FindOptionsWhere<T>[]> {
  const encryption = encryptionOf(repository.manager.connection);
  const rewriter = new WhereRewriter(
    encryption,
    repository as unknown as Repository<ObjectLiteral>,
    options.context,
    Array.isArray(where),
  );
  const metadata = repository.metadata;
  if (Array.isArray(where)) {
    if (!where.every(isPlainObject)) {
      throw new ValidationError(`"where" expected an object or an array of objects`);
    }
    const rewritten = await Promise.all(where.map((w) => rewriter.where(metadata, w as Where)));
    return rewritten.flat() as FindOptionsWhere<T>[];
  }
  if (!isPlainObject(where)) throw new ValidationError(`"where" expected an object or an array`);
  return (await rewriter.where(metadata, where))[0] as FindOptionsWhere<T>;
}

/**
 * The stored form of one lookup value, for hand-written QueryBuilder conditions:
 * `qb.where("u.emailIndex = :e", { e: await encryptedParameter(repo, "email", "a@b.c") })`.
 * Returns the deterministic ciphertext, or the blind index (compare it with the index column).
 * Only for condition strings: an object where (`findBy({ emailIndex: … })`) refuses a bare
 * string on a blind index column; give the property to `encryptedWhere` there. A column of an
 * embedded class is named by its property path (`"address.street"`). While a migration is under
 * way a value may have several stored forms, which one parameter cannot carry: use
 * `encryptedParameters` then (it works at any time).
 * @throws ValidationException as `encryptedWhere`, when `value` is null or an operator, and when
 *   the value has several stored forms (a migration under way).
 */
export async function encryptedParameter<T extends ObjectLiteral>(
  repository: Repository<T>,
  property: (keyof T & string) | `${keyof T & string}.${string}`,
  value: unknown,
  options: EncryptedWhereOptions = {},
): Promise<string | Uint8Array> {
  const { forms, name, legacy } = await parameterForms(repository, property, value, options);
  if (forms.length > 1 || legacy) {
    throw new ValidationError(
      `${name} has several stored forms while a migration is under way (previousKeyIds, legacyPlaintext): one parameter would miss the rows holding the others; compare all of them with encryptedParameters(), "… IN (:...values)"`,
    );
  }
  return forms[0] as string | Uint8Array;
}

/**
 * Every stored form of one lookup value, for hand-written QueryBuilder conditions that must find
 * rows during a migration too (`previousKeyIds`, `legacyPlaintext`): the current form first, then
 * the others, `qb.where("u.email IN (:...e)", { e: await encryptedParameters(repo, "email", v) })`.
 * One form outside migrations. For a blind-indexed property these are its indexes (compare them
 * with the index column): legacy plaintext rows have none yet and are not matched by them; look
 * such a property up with `encryptedWhere` (`qb.where(await encryptedWhere(…))`), which matches
 * them on the property's column.
 * @throws ValidationException as `encryptedParameter`, but not for several forms.
 */
export async function encryptedParameters<T extends ObjectLiteral>(
  repository: Repository<T>,
  property: (keyof T & string) | `${keyof T & string}.${string}`,
  value: unknown,
  options: EncryptedWhereOptions = {},
): Promise<(string | Uint8Array)[]> {
  return (await parameterForms(repository, property, value, options)).forms;
}

/**
 * The stored forms of `value` in the column `property` is compared on, through `encryptedWhere`
 * (which reads the context from the where, the option or the scope); `legacy` when a
 * blind-indexed value also has a legacy form (matched on another column).
 */
async function parameterForms<T extends ObjectLiteral>(
  repository: Repository<T>,
  property: string,
  value: unknown,
  options: EncryptedWhereOptions,
): Promise<{ forms: (string | Uint8Array)[]; name: string; legacy: boolean }> {
  const d = describe(repository.metadata);
  if (d === undefined || !d.byPath.has(property)) {
    throw new ValidationError(
      `"${property}" is not an encrypted property of ${repository.metadata.name}`,
    );
  }
  const name = `${d.model}.${property}`;
  const single = () =>
    new ValidationError(`"value" of ${name} must be a single value (not null or an operator)`);
  if (value === null || value instanceof FindOperator) throw single();
  // `{ address: { street: value } }` for "address.street".
  const where = property
    .split(".")
    .reduceRight<unknown>((inner, key) => ({ [key]: inner }), value) as FindOptionsWhere<T>;
  const rewritten: unknown = await encryptedWhere(repository, [where], options);
  // Two alternatives: the index, and legacy rows on the property's own column.
  const legacy = Array.isArray(rewritten) && rewritten.length > 1;
  let out: unknown = Array.isArray(rewritten) ? rewritten[0] : rewritten;
  while (isPlainObject(out) && !(out instanceof Sealed)) out = Object.values(out)[0];
  if (out instanceof Sealed) return { forms: [out.stored], name, legacy };
  if (out instanceof FindOperator && out.type === "in" && Array.isArray(out.value)) {
    const values: unknown[] = out.value;
    if (values.every((v) => v instanceof Sealed)) {
      return { forms: values.map((v) => (v as Sealed).stored), name, legacy };
    }
  }
  throw single();
}
