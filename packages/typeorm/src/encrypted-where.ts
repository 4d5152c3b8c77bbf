import { type EncryptionContext, ValidationError } from "@kms/core";
import {
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
import { checksNull, contextPins, refuseRawBesidePins } from "./internal/context-pin.ts";
import {
  type BlindIndexField,
  contextFor,
  describe,
  type EncryptedField,
  type EntityDescriptor,
} from "./internal/entity-descriptor.ts";
import { isObjectWhere, type Where } from "./internal/object-where.ts";

export interface EncryptedWhereOptions {
  /**
   * Context values for the lookup, when they are not equalities in the where itself (e.g. the
   * tenant of a `fromRow` binding) nor in the ambient scope. A `fromRow` (or `rowIdentity`) key
   * given here also limits the where to the rows holding its value (`tenantId = "t1"` is added):
   * the lookup is scoped to the context it was given, `Not` as much as equality.
   */
  readonly context?: EncryptionContext;
}

/** An alternative of the where as the caller gave it, with its entity. */
interface WhereOf {
  readonly metadata: EntityMetadata;
  readonly where: Where;
}

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
  async where(
    metadata: EntityMetadata,
    where: Where,
    root: WhereOf = { metadata, where },
  ): Promise<Where[]> {
    const d = describe(metadata);
    const own = equalities(where);
    const pins = contextPins(d?.contextKeys ?? [], this.#context, where, own);
    // A relation's pin is joined to the columns of the whole where, the outer entity's included.
    refuseRawBesidePins(pins, this.#context, root.metadata, root.where);
    const outs = await this.#rewrite(metadata, d, where, own, "", root);
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
    root: WhereOf,
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
      if (relation !== undefined && isObjectWhere(value)) {
        const inner = await this.where(relation.inverseEntityMetadata, value, root);
        put(inner.map((alternative) => ({ [key]: alternative })));
        continue;
      }
      if (isObjectWhere(value) && metadata.hasEmbeddedWithPropertyPath(path)) {
        const inner = await this.#rewrite(metadata, d, value, row, `${path}.`, root);
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
    if (isObjectWhere(value) && f.spec.type !== "json" && f.spec.type !== "decimal") {
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
 *   could reach other values' rows) or compares any other column of the where with it (update and
 *   delete criteria join Raw's SQL to that limit without brackets), when the repository's
 *   DataSource has no field encryption
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
    if (!where.every(isObjectWhere)) {
      throw new ValidationError(`"where" expected an object or an array of objects`);
    }
    const rewritten = await Promise.all(where.map((w) => rewriter.where(metadata, w as Where)));
    return rewritten.flat() as FindOptionsWhere<T>[];
  }
  if (!isObjectWhere(where)) throw new ValidationError(`"where" expected an object or an array`);
  return (await rewriter.where(metadata, where))[0] as FindOptionsWhere<T>;
}
