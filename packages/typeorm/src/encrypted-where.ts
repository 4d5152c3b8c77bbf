import { type EncryptionContext, ValidationError } from "@kms/core";
import {
  type EntityMetadata,
  Equal,
  FindOperator,
  type FindOptionsWhere,
  In,
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
   * tenant of a `fromRow` binding) nor in the ambient scope.
   */
  readonly context?: EncryptionContext;
}

type Where = Record<string, unknown>;

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

class WhereRewriter {
  readonly #encryption: TypeormFieldEncryption;
  readonly #repository: Repository<ObjectLiteral>;
  readonly #context: EncryptionContext | undefined;

  constructor(
    encryption: TypeormFieldEncryption,
    repository: Repository<ObjectLiteral>,
    context: EncryptionContext | undefined,
  ) {
    this.#encryption = encryption;
    this.#repository = repository;
    this.#context = context;
  }

  async where(metadata: EntityMetadata, where: Where): Promise<Where> {
    const d = describe(metadata);
    const own = equalities(where);
    if (this.#context !== undefined) {
      // The option would win over the where's own equality: the rows of one tenant would be
      // looked up with another tenant's keys, and a contradiction would go unnoticed.
      for (const [key, value] of Object.entries(this.#context)) {
        if (own[key] !== undefined && String(own[key]) !== value) {
          throw new ValidationError(
            `"context" gives ${key} = ${JSON.stringify(value)} but the where has ${key} = ${JSON.stringify(String(own[key]))}`,
          );
        }
      }
    }
    return this.#rewrite(metadata, d, where, own, "");
  }

  /**
   * `where` at the property path `prefix` of the entity: the entity's where itself, or the
   * object given for one of its embeddeds (`{ address: { street } }`), whose encrypted columns
   * are bound to the entity's own context columns, the equalities in `row`.
   */
  async #rewrite(
    metadata: EntityMetadata,
    d: EntityDescriptor | undefined,
    where: Where,
    row: Where,
    prefix: string,
  ): Promise<Where> {
    const out: Where = {};
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
          out[key] = value;
          continue;
        }
        if (f.spec.mode !== "deterministic" && f.index === undefined) {
          throw new ValidationError(
            `${d.model}.${path} is randomized: equality lookups need deterministic: true or a blindIndex`,
          );
        }
        const context = contextFor(d.model, f, row, undefined, this.#context);
        const rewritten = await this.#value(d, f, context, value);
        if (f.spec.mode === "deterministic") out[key] = rewritten;
        else out[(f.index as BlindIndexField).property] = rewritten;
        continue;
      }
      const relation = metadata.findRelationWithPropertyPath(path);
      if (relation !== undefined && isPlainObject(value)) {
        out[key] = await this.where(relation.inverseEntityMetadata, value);
        continue;
      }
      if (isPlainObject(value) && metadata.hasEmbeddedWithPropertyPath(path)) {
        out[key] = await this.#rewrite(metadata, d, value, row, `${path}.`);
        continue;
      }
      out[key] = value;
    }
    return out;
  }

  async #value(
    d: EntityDescriptor,
    f: EncryptedField,
    context: EncryptionContext,
    value: unknown,
  ): Promise<unknown> {
    if (value === null) return null;
    if (value instanceof FindOperator) {
      switch (value.type) {
        case "equal":
          return value.value === null ? value : Equal(await this.#seal(d, f, context, value.value));
        case "in": {
          const values: unknown = value.value;
          if (!Array.isArray(values)) {
            throw new ValidationError(`${d.model}.${f.path}: In() expects an array`);
          }
          // SQL's IN never matches NULL; a sealed null would be some value's blind index.
          return In(
            await Promise.all(
              values.map((v) => (v === null ? null : this.#seal(d, f, context, v))),
            ),
          );
        }
        case "not": {
          const inner: unknown = value.child ?? value.value;
          return Not(await this.#value(d, f, context, inner));
        }
        case "isNull":
          return value;
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
    return this.#seal(d, f, context, value);
  }

  #seal(
    d: EntityDescriptor,
    f: EncryptedField,
    context: EncryptionContext,
    value: unknown,
  ): Promise<unknown> {
    const dataSource = this.#repository.manager.connection;
    const queryRunner = this.#repository.manager.queryRunner;
    // Sealed, as the index column's transformer accepts nothing else (a bare string there could
    // be the plaintext it hides).
    return this.#encryption.run<unknown>(dataSource, queryRunner, async (options) =>
      f.spec.mode === "deterministic"
        ? this.#encryption.seal(d.model, f, context, value, options)
        : new Sealed(await this.#encryption.blindIndex(d.model, f, context, value, options)),
    );
  }
}

/**
 * Rewrites equality lookups on encrypted columns into what the database holds: deterministic
 * ciphertext, or the blind index column's value. Accepts plain values, `Equal`, `In`, `Not`
 * and `IsNull` (also inside relations); pass the result to `find*`, `findOneBy`, `update`,
 * `delete`, `count*` or `QueryBuilder.where(object)`. A null check (`IsNull()`, `Not(IsNull())`…)
 * reads no value: it is left as it is, on any encrypted column, without a context.
 * @throws ValidationException when a column compared with a value is randomized without a blind
 *   index, when an operator cannot run on ciphertext (Like, LessThan, Between, Raw…), when a
 *   context value is missing, or when the repository's DataSource has no field encryption
 *   subscriber.
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
  );
  const metadata = repository.metadata;
  if (Array.isArray(where)) {
    if (!where.every(isPlainObject)) {
      throw new ValidationError(`"where" expected an object or an array of objects`);
    }
    return (await Promise.all(
      where.map((w) => rewriter.where(metadata, w as Where)),
    )) as FindOptionsWhere<T>[];
  }
  if (!isPlainObject(where)) throw new ValidationError(`"where" expected an object or an array`);
  return (await rewriter.where(metadata, where)) as FindOptionsWhere<T>;
}

/**
 * The stored form of one lookup value, for hand-written QueryBuilder conditions:
 * `qb.where("u.emailIndex = :e", { e: await encryptedParameter(repo, "email", "a@b.c") })`.
 * Returns the deterministic ciphertext, or the blind index (compare it with the index column).
 * Only for condition strings: an object where (`findBy({ emailIndex: … })`) refuses a bare
 * string on a blind index column; give the property to `encryptedWhere` there. A column of an
 * embedded class is named by its property path (`"address.street"`).
 * @throws ValidationException as `encryptedWhere`, and when `value` is null or an operator.
 */
export async function encryptedParameter<T extends ObjectLiteral>(
  repository: Repository<T>,
  property: (keyof T & string) | `${keyof T & string}.${string}`,
  value: unknown,
  options: EncryptedWhereOptions = {},
): Promise<string | Uint8Array> {
  const d = describe(repository.metadata);
  if (d === undefined || !d.byPath.has(property)) {
    throw new ValidationError(
      `"${property}" is not an encrypted property of ${repository.metadata.name}`,
    );
  }
  // `{ address: { street: value } }` for "address.street".
  const where = property
    .split(".")
    .reduceRight<unknown>((inner, name) => ({ [name]: inner }), value) as FindOptionsWhere<T>;
  let out: unknown = await encryptedWhere(repository, where, options);
  while (isPlainObject(out) && !(out instanceof Sealed)) out = Object.values(out)[0];
  if (out instanceof Sealed) return out.stored;
  throw new ValidationError(
    `"value" of ${d.model}.${property} must be a single value (not null or an operator)`,
  );
}
