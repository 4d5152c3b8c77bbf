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
import type { EncryptedColumnSpec } from "./encrypted-column.ts";
import { encryptionOf, type TypeormFieldEncryption } from "./field-encryption.ts";
import { contextFor, describe, type EntityDescriptor } from "./internal/entity-descriptor.ts";
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
    if (this.#context !== undefined) {
      // The option would win over the where's own equality: the rows of one tenant would be
      // looked up with another tenant's keys, and a contradiction would go unnoticed.
      const own = equalities(where);
      for (const [key, value] of Object.entries(this.#context)) {
        if (own[key] !== undefined && String(own[key]) !== value) {
          throw new ValidationError(
            `"context" gives ${key} = ${JSON.stringify(value)} but the where has ${key} = ${JSON.stringify(String(own[key]))}`,
          );
        }
      }
    }
    const out: Where = {};
    for (const [key, value] of Object.entries(where)) {
      if (d?.blindIndexes.has(key)) {
        throw new ValidationError(
          `${d.model}.${key} is a blind index: look up ${d.blindIndexes.get(key)} instead`,
        );
      }
      const spec = d?.byProperty.get(key);
      if (d !== undefined && spec !== undefined) {
        // Dropping the key would drop the condition: a lookup with a missing value would then
        // match every row (of every tenant).
        if (value === undefined) {
          throw new ValidationError(
            `${d.model}.${key} is undefined: pass a value, null or IsNull() to look it up`,
          );
        }
        if (spec.mode !== "deterministic" && spec.blindIndex === undefined) {
          throw new ValidationError(
            `${d.model}.${key} is randomized: equality lookups need deterministic: true or a blindIndex`,
          );
        }
        const context = contextFor(d.model, spec, equalities(where), undefined, this.#context);
        const rewritten = await this.#value(d, spec, context, value);
        if (spec.mode === "deterministic") out[key] = rewritten;
        else out[(spec.blindIndex as { column: string }).column] = rewritten;
        continue;
      }
      const relation = metadata.findRelationWithPropertyPath(key);
      if (relation !== undefined && isPlainObject(value)) {
        out[key] = await this.where(relation.inverseEntityMetadata, value);
        continue;
      }
      out[key] = value;
    }
    return out;
  }

  async #value(
    d: EntityDescriptor,
    spec: EncryptedColumnSpec,
    context: EncryptionContext,
    value: unknown,
  ): Promise<unknown> {
    if (value === null) return null;
    if (value instanceof FindOperator) {
      switch (value.type) {
        case "equal":
          return value.value === null
            ? value
            : Equal(await this.#seal(d, spec, context, value.value));
        case "in": {
          const values: unknown = value.value;
          if (!Array.isArray(values)) {
            throw new ValidationError(`${d.model}.${spec.property}: In() expects an array`);
          }
          // SQL's IN never matches NULL; a sealed null would be some value's blind index.
          return In(
            await Promise.all(
              values.map((v) => (v === null ? null : this.#seal(d, spec, context, v))),
            ),
          );
        }
        case "not": {
          const inner: unknown = value.child ?? value.value;
          return Not(await this.#value(d, spec, context, inner));
        }
        case "isNull":
          return value;
        default:
          throw new ValidationError(
            `${d.model}.${spec.property} is encrypted: the "${value.type}" operator cannot run on ciphertext (use a value, Equal, In, Not or IsNull)`,
          );
      }
    }
    if (isPlainObject(value) && spec.type !== "json") {
      throw new ValidationError(
        `${d.model}.${spec.property} is encrypted: expected a value or an operator`,
      );
    }
    return this.#seal(d, spec, context, value);
  }

  #seal(
    d: EntityDescriptor,
    spec: EncryptedColumnSpec,
    context: EncryptionContext,
    value: unknown,
  ): Promise<unknown> {
    const dataSource = this.#repository.manager.connection;
    const queryRunner = this.#repository.manager.queryRunner;
    // Sealed, as the index column's transformer accepts nothing else (a bare string there could
    // be the plaintext it hides).
    return this.#encryption.run<unknown>(dataSource, queryRunner, async (options) =>
      spec.mode === "deterministic"
        ? this.#encryption.seal(d.model, spec, context, value, options)
        : new Sealed(await this.#encryption.blindIndex(d.model, spec, context, value, options)),
    );
  }
}

/**
 * Rewrites equality lookups on encrypted columns into what the database holds: deterministic
 * ciphertext, or the blind index column's value. Accepts plain values, `Equal`, `In`, `Not`
 * and `IsNull` (also inside relations); pass the result to `find*`, `findOneBy`, `update`,
 * `delete`, `count*` or `QueryBuilder.where(object)`.
 * @throws ValidationException when a column is randomized without a blind index, when an
 *   operator cannot run on ciphertext (Like, LessThan, Between, Raw…), when a context value is
 *   missing, or when the repository's DataSource has no field encryption subscriber.
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
 * string on a blind index column; give the property to `encryptedWhere` there.
 * @throws ValidationException as `encryptedWhere`, and when `value` is null or an operator.
 */
export async function encryptedParameter<T extends ObjectLiteral>(
  repository: Repository<T>,
  property: keyof T & string,
  value: unknown,
  options: EncryptedWhereOptions = {},
): Promise<string | Uint8Array> {
  const d = describe(repository.metadata);
  const spec = d?.byProperty.get(property);
  if (d === undefined || spec === undefined) {
    throw new ValidationError(
      `"${property}" is not an encrypted property of ${repository.metadata.name}`,
    );
  }
  const where = await encryptedWhere(
    repository,
    { [property]: value } as FindOptionsWhere<T>,
    options,
  );
  const out = Object.values(where)[0] as unknown;
  if (out instanceof Sealed) return out.stored;
  throw new ValidationError(
    `"value" of ${d.model}.${property} must be a single value (not null or an operator)`,
  );
}
