import { ValidationError } from "@kms/core";
import {
  type DatabaseType,
  type EntityMetadata,
  FindOperator,
  InsertQueryBuilder,
  type ObjectLiteral,
  QueryBuilder,
  type QueryRunner,
  SelectQueryBuilder,
  UpdateQueryBuilder,
  type UpdateResult,
  type ValueTransformer,
} from "typeorm";
import {
  isBlindIndexTransformer,
  isEncryptedColumnTransformer,
  isUnsealedValue,
  unsealedError,
} from "../encrypted-column.ts";
import {
  describe,
  type EncryptedField,
  type EntityDescriptor,
  indexIn,
  rowKeysOf,
  valueIn,
} from "./entity-descriptor.ts";

// Four TypeORM code paths decide what reaches the database before any subscriber hook runs,
// and no hook sees their inputs: a `Raw` find operator hands its parameters to the query
// without ever calling the column's transformer; every other operand becomes a query
// parameter, which TypeORM's logger prints before the beforeQuery hook can refuse it; `upsert`
// fixes its ON CONFLICT update list before beforeInsert computes blind indexes; an UPDATE's
// where is out of beforeUpdate's reach. The guards below wrap those four methods. Each acts
// only when an encrypted column is involved and otherwise calls TypeORM's own method unchanged.
// Only the first copy of @kms/typeorm loaded against a TypeORM installs them, so they recognise
// columns and operands by brand (see encrypted-column.ts), and find every copy's specs.

const INSTALLED = Symbol.for("@kms/typeorm.queryGuards");

/**
 * Drivers whose default collations compare text without case and trailing spaces (and whose
 * upsert updates the row of any unique key, whatever the conflict target).
 */
const LOOSE_COLLATIONS = new Set<DatabaseType>(["mysql", "mariadb", "aurora-mysql"]);

/** Installs the guards once per TypeORM module instance (idempotent). */
export function installQueryGuards(): void {
  const marker = FindOperator as unknown as Record<symbol, boolean>;
  if (marker[INSTALLED] === true) return;
  const findOperator = FindOperator.prototype;
  const queryBuilder = QueryBuilder.prototype as unknown as ParameterFactory;
  const insertBuilder = InsertQueryBuilder.prototype;
  const updateBuilder = UpdateQueryBuilder.prototype;
  // A TypeORM release that renames these would otherwise switch a guard off in silence.
  for (const [owner, name] of [
    [findOperator, "transformValue"],
    [queryBuilder, "createParameter"],
    [insertBuilder, "orUpdate"],
    [updateBuilder, "execute"],
  ] as const) {
    if (typeof (owner as unknown as Record<string, unknown>)[name] !== "function") {
      throw new ValidationError(
        `@kms/typeorm cannot guard encrypted columns on this TypeORM version: ${name}() is missing (supported: typeorm ^1.1.1)`,
      );
    }
  }
  marker[INSTALLED] = true;

  const transformValue = findOperator.transformValue;
  findOperator.transformValue = function guardedTransformValue(
    this: FindOperator<unknown>,
    transformer: ValueTransformer | ValueTransformer[],
  ): void {
    if (this.type === "raw") refuseRaw(transformer);
    transformValue.call(this, transformer);
  };

  // The column transformers turn a plaintext operand into an UnsealedValue stand-in (they
  // cannot throw: TypeORM also runs them on loaded values to find changed columns). Refusing the
  // stand-in here, while the statement is built, comes before the logger's line and the
  // beforeQuery hook; beforeQuery still refuses one that arrives some other way.
  const createParameter = queryBuilder.createParameter;
  queryBuilder.createParameter = function guardedCreateParameter(
    this: ParameterFactory,
    value: unknown,
  ): string {
    if (isUnsealedValue(value)) throw unsealedError(value);
    return createParameter.call(this, value);
  };

  const orUpdate = insertBuilder.orUpdate;
  insertBuilder.orUpdate = function guardedOrUpdate(
    this: InsertQueryBuilder<ObjectLiteral>,
    ...args: Parameters<InsertQueryBuilder<ObjectLiteral>["orUpdate"]>
  ) {
    const out = orUpdate.apply(this, args);
    completeUpsert(this);
    return out;
  };

  const execute = updateBuilder.execute;
  updateBuilder.execute = function guardedExecute(
    this: UpdateQueryBuilder<ObjectLiteral>,
  ): Promise<UpdateResult> {
    refuseExpressions(this);
    return executeWithContextGuard(this, () => execute.call(this));
  };
}

/** `QueryBuilder.createParameter`, protected in TypeORM's typings. */
interface ParameterFactory {
  createParameter(value: unknown): string;
}

/**
 * `Raw` on an encrypted column: its SQL and parameters are the caller's, sent as given, and a
 * comparison with ciphertext cannot be written by hand anyway.
 */
function refuseRaw(transformer: ValueTransformer | ValueTransformer[]): void {
  const list = Array.isArray(transformer) ? transformer : [transformer];
  for (const t of list) {
    if (isBlindIndexTransformer(t)) {
      throw new ValidationError(
        `${t.model}.${t.property} is the blind index of ${t.model}.${t.indexOf}: Raw() would send its SQL and parameters as plaintext; look ${t.indexOf} up with encryptedWhere() (or compare encryptedParameter() in a QueryBuilder condition)`,
      );
    }
    if (isEncryptedColumnTransformer(t)) {
      throw new ValidationError(
        `${t.model}.${t.property} is encrypted: Raw() would send its SQL and parameters as plaintext; look values up with encryptedWhere() (or compare encryptedParameter() in a QueryBuilder condition)`,
      );
    }
  }
}

function databaseName(metadata: EntityMetadata, property: string): string | undefined {
  return metadata.findColumnWithPropertyPath(property)?.databaseName;
}

function descriptorOf(
  builder: InsertQueryBuilder<ObjectLiteral> | UpdateQueryBuilder<ObjectLiteral>,
): { metadata: EntityMetadata; d: EntityDescriptor } | undefined {
  const alias = builder.expressionMap.mainAlias;
  if (alias === undefined || !alias.hasMetadata) return undefined;
  const d = describe(alias.metadata);
  return d === undefined ? undefined : { metadata: alias.metadata, d };
}

/**
 * An upsert's `DO UPDATE SET` / `ON DUPLICATE KEY UPDATE` list: a blind index follows the
 * column it indexes (beforeInsert computes it later, for the insert and the update alike); a
 * context column the update may change without the columns it binds is refused, since their
 * stored values, sealed under the old context, would stop decrypting.
 */
function completeUpsert(builder: InsertQueryBuilder<ObjectLiteral>): void {
  const onUpdate = builder.expressionMap.onUpdate;
  if (onUpdate === undefined || !Array.isArray(onUpdate.overwrite)) return;
  const found = descriptorOf(builder);
  if (found === undefined) return;
  const { metadata, d } = found;
  const overwrite = [...onUpdate.overwrite];
  // A conflict column holds the same value in the old row and the new one, where the database
  // matches rows on the conflict target, byte for byte. MariaDB and MySQL do neither: ON
  // DUPLICATE KEY UPDATE fires on any unique key, under collations that take "T1" for "t1".
  const conflict =
    Array.isArray(onUpdate.conflict) &&
    !LOOSE_COLLATIONS.has(builder.connection.driver.options.type)
      ? onUpdate.conflict
      : [];
  const stranded = new Map<string, string[]>();
  for (const f of d.columns) {
    if (overwrite.includes(f.databaseName)) {
      const index = f.index?.databaseName;
      if (index !== undefined && !overwrite.includes(index)) overwrite.push(index);
      continue;
    }
    for (const key of rowKeysOf(f.spec)) {
      const keyColumn = databaseName(metadata, key);
      if (keyColumn === undefined || !overwrite.includes(keyColumn) || conflict.includes(keyColumn))
        continue;
      stranded.set(key, [...(stranded.get(key) ?? []), f.path]);
    }
  }
  if (stranded.size > 0) throw strandedError(d, stranded, "upsert");
  onUpdate.overwrite = overwrite;
}

/**
 * `increment`, `decrement` and `set({ column: () => "…" })` splice SQL into the SET list:
 * arithmetic or string functions on a ciphertext destroy it, and SQL that writes a blind index
 * writes a value nobody computed. The subscriber refuses these too, but only when listeners run.
 */
function refuseExpressions(builder: UpdateQueryBuilder<ObjectLiteral>): void {
  const found = descriptorOf(builder);
  const values: unknown = builder.expressionMap.valuesSet;
  if (found === undefined || values === null || typeof values !== "object") return;
  const { d } = found;
  const set = values as Record<string, unknown>;
  for (const f of d.columns) {
    if (typeof valueIn(f, set) === "function") throw expressionError(d, f.path);
  }
  for (const [column, f] of d.blindIndexes) {
    if (typeof indexIn(f, set) === "function") {
      throw new ValidationError(
        `${d.model}.${column} is a blind index: it is computed, not written (increment, decrement and set(() => …) are refused)`,
      );
    }
  }
}

export function expressionError(d: EntityDescriptor, property: string): ValidationError {
  return new ValidationError(
    `${d.model}.${property} is encrypted: a SQL expression cannot run on ciphertext (increment, decrement and set(() => …) are refused); write a value`,
  );
}

/** The rows an UPDATE must not touch, as SQL on the update's table, with its parameters. */
interface StrandedCheck {
  readonly d: EntityDescriptor;
  readonly stranded: ReadonlyMap<string, readonly string[]>;
  /** True for a row that holds a bound column and a context value other than the new one. */
  readonly condition: string;
  readonly parameters: Readonly<Record<string, unknown>>;
}

/**
 * An UPDATE that sets a `fromRow` or `rowIdentity` context column without the encrypted columns
 * it binds: allowed only while no row it matches holds one of those columns under another value
 * (the usual `update(id, { tenantId, email })`, where the tenant is there to seal the email).
 */
function strandedCheck(builder: UpdateQueryBuilder<ObjectLiteral>): StrandedCheck | undefined {
  const found = descriptorOf(builder);
  if (found === undefined) return undefined;
  const { metadata, d } = found;
  const values: unknown = builder.expressionMap.valuesSet;
  if (values === null || typeof values !== "object") return undefined;
  const set = values as Record<string, unknown>;
  const bound = new Map<string, EncryptedField[]>();
  for (const f of d.columns) {
    if (valueIn(f, set) !== undefined) continue;
    for (const key of rowKeysOf(f.spec)) {
      if (set[key] === undefined) continue;
      bound.set(key, [...(bound.get(key) ?? []), f]);
    }
  }
  if (bound.size === 0) return undefined;
  const changed: string[] = [];
  const parameters: Record<string, unknown> = {};
  let n = 0;
  for (const [key, fields] of bound) {
    const value = set[key];
    // A SQL expression (`() => "…"`) gives no value to compare before the update runs.
    if (typeof value === "function") {
      throw strandedError(d, new Map([[key, fields.map((f) => f.path)]]), "update");
    }
    const keyColumn = builder.escape(databaseName(metadata, key) ?? key);
    const held = fields.map((f) => `${builder.escape(f.databaseName)} IS NOT NULL`).join(" OR ");
    const parameter = `kms_context_${n++}`;
    const differs =
      value === null
        ? `${keyColumn} IS NOT NULL`
        : `(${keyColumn} IS NULL OR ${exactlyDiffer(builder, keyColumn, `:${parameter}`)})`;
    if (value !== null) parameters[parameter] = value;
    changed.push(`(${differs} AND (${held}))`);
  }
  const stranded = new Map([...bound].map(([key, fields]) => [key, fields.map((f) => f.path)]));
  return { d, stranded, condition: `(${changed.join(" OR ")})`, parameters };
}

/**
 * SQL that is true when `column` and `value` differ by a single byte. A context value is bound
 * into the values byte for byte, but MariaDB's and MySQL's default collations take "T1" and
 * "t1 " for "t1": compared there with `<>`, a change of case or of trailing spaces would pass
 * for no change and strand the values sealed under the old bytes.
 */
function exactlyDiffer(
  builder: UpdateQueryBuilder<ObjectLiteral>,
  column: string,
  value: string,
): string {
  return exactComparison(builder.connection.driver.options.type, column, "<>", value);
}

/**
 * SQL that is true when `column` holds `value` byte for byte, on a database of `type`: `=`
 * under MariaDB's and MySQL's default collations takes "Alice" for "ALICE" (see exactlyDiffer).
 */
export function exactlyEqual(type: DatabaseType, column: string, value: string): string {
  return exactComparison(type, column, "=", value);
}

function exactComparison(
  type: DatabaseType,
  column: string,
  operator: "=" | "<>",
  value: string,
): string {
  return LOOSE_COLLATIONS.has(type)
    ? `CAST(${column} AS BINARY) ${operator} CAST(${value} AS BINARY)`
    : `${column} ${operator} ${value}`;
}

/** Drivers whose SELECT … FOR UPDATE reads the newest committed row versions. */
const LOCKING_READS = new Set(["postgres", "cockroachdb", "mysql", "mariadb", "aurora-mysql"]);

/**
 * Runs an UPDATE under the context-column check, atomically:
 * 1. a SELECT with the update's where finds a row the update would strand: refused before any
 *    write (the usual case, and the clear error);
 * 2. the UPDATE itself carries `AND NOT (<stranded>)`: the database re-checks the condition on
 *    the row version it writes, under its own row lock, so a row that a concurrent writer bound
 *    after step 1 is never rewritten, on any isolation level;
 * 3. the same SELECT, after the UPDATE and in the same transaction (a locking read where the
 *    driver has one, which sees the newest versions even under REPEATABLE READ), finds any row
 *    step 2 left out: refused, and a transaction opened here is rolled back, so the update is
 *    all or nothing.
 * Steps 2–3 run in the caller's transaction, or in one opened here on the builder's runner.
 */
async function executeWithContextGuard(
  builder: UpdateQueryBuilder<ObjectLiteral>,
  execute: () => Promise<UpdateResult>,
): Promise<UpdateResult> {
  const check = strandedCheck(builder);
  if (check === undefined) return execute();
  const given = (builder as unknown as { queryRunner?: QueryRunner }).queryRunner;
  const runner = given ?? builder.connection.createQueryRunner();
  builder.setQueryRunner(runner);
  let opened = false;
  try {
    if (await findsStranded(builder, check, false)) {
      throw strandedError(check.d, check.stranded, "update");
    }
    if (!runner.isTransactionActive) {
      await runner.startTransaction();
      opened = true;
    }
    const map = builder.expressionMap;
    const extra = map.extraAppendedAndWhereCondition;
    map.extraAppendedAndWhereCondition = both(extra, `NOT ${check.condition}`);
    builder.setParameters(check.parameters);
    let result: UpdateResult;
    try {
      result = await execute();
    } finally {
      map.extraAppendedAndWhereCondition = extra;
    }
    const locking = LOCKING_READS.has(builder.connection.driver.options.type);
    if (await findsStranded(builder, check, locking)) {
      throw strandedError(check.d, check.stranded, "concurrent");
    }
    if (opened) await runner.commitTransaction();
    return result;
  } catch (error) {
    if (opened && runner.isTransactionActive) {
      await runner.rollbackTransaction().catch(() => undefined);
    }
    throw error;
  } finally {
    builder.setQueryRunner(given as QueryRunner);
    if (given === undefined) await runner.release();
  }
}

function both(first: string, second: string): string {
  return first === "" ? second : `(${first}) AND (${second})`;
}

/** Whether a row the update's where matches is one the update would strand. */
async function findsStranded(
  builder: UpdateQueryBuilder<ObjectLiteral>,
  check: StrandedCheck,
  lock: boolean,
): Promise<boolean> {
  const probe = selectWhere(builder).select("1", "kms_stranded").limit(1);
  const map = probe.expressionMap;
  // Appended after the where as a whole: `andWhere` would bind to its last `orWhere` only.
  map.extraAppendedAndWhereCondition = both(map.extraAppendedAndWhereCondition, check.condition);
  probe.setParameters(check.parameters);
  if (lock) probe.setLock("pessimistic_write");
  return (await probe.getRawOne()) !== undefined;
}

/** A SELECT from the update's table, with its where, parameters and query runner. */
function selectWhere(
  builder: UpdateQueryBuilder<ObjectLiteral>,
): SelectQueryBuilder<ObjectLiteral> {
  const select = new SelectQueryBuilder<ObjectLiteral>(builder).withDeleted();
  const map = select.expressionMap;
  // `repository.createQueryBuilder().update(…)` leaves the repository's own alias beside the
  // update's: selecting from both would be a cross join with ambiguous column names.
  const main = map.mainAlias?.name;
  map.aliases = map.aliases.filter((a) => a.type !== "from" || a.name === main);
  map.orderBys = {};
  return select;
}

function strandedError(
  d: EntityDescriptor,
  stranded: ReadonlyMap<string, readonly string[]>,
  operation: "update" | "upsert" | "concurrent",
): ValidationError {
  const [key, properties] = [...stranded][0] as [string, readonly string[]];
  const bound = [...new Set(properties)].map((p) => `${d.model}.${p}`).join(", ");
  if (operation === "concurrent") {
    return new ValidationError(
      `${d.model}.${key} is part of the encryption context of ${bound}: a concurrent write stored one of them in a row this update matched, after it was checked; the update did not change that row (and was rolled back if it opened its own transaction); retry it`,
    );
  }
  const remedy =
    operation === "upsert"
      ? `give them in every upserted entity, or make ${key} a conflict path`
      : `load the entity and save() it with the new value, or set them in the same update`;
  return new ValidationError(
    `${d.model}.${key} is part of the encryption context of ${bound}: an ${operation} that changes it must write them too (${remedy}); their stored values would stop decrypting`,
  );
}
