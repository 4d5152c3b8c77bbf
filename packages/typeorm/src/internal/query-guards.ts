import { ValidationError } from "@kms/core";
import {
  type DatabaseType,
  type EntityMetadata,
  FindOperator,
  InsertQueryBuilder,
  type InsertResult,
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
import { MYSQL_FAMILY } from "./drivers.ts";
import {
  describe,
  type EncryptedField,
  type EntityDescriptor,
  indexIn,
  rowKeysOf,
  valueIn,
} from "./entity-descriptor.ts";
import { sealedBindingOf } from "./sealed.ts";
import {
  type InsertInternals,
  refuseMovedContext,
  type UpdateInternals,
  writingRelation,
  writtenValueOf,
} from "./written-context-check.ts";

// Some TypeORM code paths decide what reaches the database before any subscriber hook runs, or
// after the last one, and no hook sees their inputs: a `Raw` find operator hands its parameters
// to the query without ever calling the column's transformer; every other operand becomes a
// query parameter, which TypeORM's logger prints before the beforeQuery hook can refuse it;
// `upsert` fixes its ON CONFLICT update list before beforeInsert computes blind indexes; an
// UPDATE's where is out of beforeUpdate's reach; an INSERT or UPDATE with listeners off sends SQL
// expressions no hook sees; and what a statement finally writes is known only once every hook of
// the write is done (an entity listener may change a context column after an `await`), when
// TypeORM builds its VALUES or SET list. The guards below wrap those methods. Each acts only when
// an encrypted column is involved and otherwise calls TypeORM's own method unchanged. Only the
// first copy of @kms/typeorm loaded against a TypeORM installs them, so they recognise columns,
// operands and sealed values by brand (see encrypted-column.ts, sealed.ts), and find every
// copy's specs.

const INSTALLED = Symbol.for("@kms/typeorm.queryGuards");

/**
 * Drivers whose default collations compare text without case and trailing spaces (and whose
 * upsert updates the row of any unique key, whatever the conflict target).
 */
const LOOSE_COLLATIONS = MYSQL_FAMILY;

/** Installs the guards once per TypeORM module instance (idempotent). */
export function installQueryGuards(): void {
  const marker = FindOperator as unknown as Record<symbol, boolean>;
  if (marker[INSTALLED] === true) return;
  const findOperator = FindOperator.prototype;
  const queryBuilder = QueryBuilder.prototype as unknown as ParameterFactory;
  const insertBuilder = InsertQueryBuilder.prototype as InsertQueryBuilder<ObjectLiteral> &
    InsertInternals;
  const updateBuilder = UpdateQueryBuilder.prototype as UpdateQueryBuilder<ObjectLiteral> &
    UpdateInternals;
  // A TypeORM release that renames these would otherwise switch a guard off in silence.
  for (const [owner, name] of [
    [findOperator, "transformValue"],
    [queryBuilder, "createParameter"],
    [insertBuilder, "orUpdate"],
    [insertBuilder, "execute"],
    [insertBuilder, "createValuesExpression"],
    [insertBuilder, "getInsertedColumns"],
    [updateBuilder, "execute"],
    [updateBuilder, "createUpdateExpression"],
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

  const insert = insertBuilder.execute;
  insertBuilder.execute = function guardedInsert(
    this: InsertQueryBuilder<ObjectLiteral>,
  ): Promise<InsertResult> {
    try {
      refuseExpressions(this);
    } catch (error) {
      return Promise.reject(error);
    }
    return insert.call(this);
  };

  const createValuesExpression = insertBuilder.createValuesExpression;
  insertBuilder.createValuesExpression = function guardedValues(
    this: InsertQueryBuilder<ObjectLiteral> & InsertInternals,
  ): string {
    refuseMovedContext(this, "insert");
    return createValuesExpression.call(this);
  };

  const execute = updateBuilder.execute;
  updateBuilder.execute = function guardedExecute(
    this: UpdateQueryBuilder<ObjectLiteral>,
  ): Promise<UpdateResult> {
    try {
      refuseExpressions(this);
    } catch (error) {
      return Promise.reject(error);
    }
    return executeWithContextGuard(this, () => execute.call(this));
  };

  const createUpdateExpression = updateBuilder.createUpdateExpression;
  updateBuilder.createUpdateExpression = function guardedSet(
    this: UpdateQueryBuilder<ObjectLiteral> & UpdateInternals,
  ): string {
    refuseMovedContext(this, "update");
    return createUpdateExpression.call(this);
  };
}

/** `QueryBuilder.createParameter`, protected in TypeORM's typings. */
interface ParameterFactory {
  createParameter(value: unknown): string;
}

// Not exported by TypeORM's entry point.
type ColumnMetadata = EntityMetadata["columns"][number];

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
      for (const key of rowKeysOf(f.spec)) {
        const keyColumn = metadata.findColumnWithPropertyPath(key);
        if (keyColumn === undefined || overwrite.includes(keyColumn.databaseName)) continue;
        if (!keptOnConflict(builder, metadata, d, keyColumn)) {
          throw keptContextError(d, f.path, key, keyColumn.isUpdate);
        }
      }
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
 * Whether every row an upsert can conflict with holds the upserted value of the context column
 * `key` already, so that values sealed under it may overwrite the row's without writing `key`.
 * On PostgreSQL and SQLite the conflict target decides the row, byte for byte: it pins `key`
 * when it has `key`'s column, or a deterministic column or blind index bound to `key` (equal
 * ciphertexts or indexes come from equal contexts). MariaDB and MySQL take the row of any unique
 * key, comparing without case: each unique key must have such an encrypted column (`key`'s own
 * column does not do, "T1" matching "t1"), or a generated column no upserted entity gives, which
 * makes a fresh value that conflicts with no row.
 */
function keptOnConflict(
  builder: InsertQueryBuilder<ObjectLiteral>,
  metadata: EntityMetadata,
  d: EntityDescriptor,
  key: ColumnMetadata,
): boolean {
  const pinning = new Set<string>();
  for (const f of d.columns) {
    if (!rowKeysOf(f.spec).includes(key.propertyPath)) continue;
    if (f.spec.mode === "deterministic") pinning.add(f.databaseName);
    if (f.index !== undefined) pinning.add(f.index.databaseName);
  }
  const onUpdate = builder.expressionMap.onUpdate;
  if (!LOOSE_COLLATIONS.has(builder.connection.driver.options.type)) {
    pinning.add(key.databaseName);
    const conflict = onUpdate?.conflict;
    return Array.isArray(conflict) && conflict.some((name) => pinning.has(name));
  }
  const values: unknown = builder.expressionMap.valuesSet;
  const sets = (Array.isArray(values) ? values : [values]).filter(
    (set): set is ObjectLiteral => set !== null && typeof set === "object",
  );
  const fresh = (c: ColumnMetadata) =>
    c.isGenerated && sets.every((set) => c.getEntityValue(set) === undefined);
  const uniqueKeys = [
    metadata.primaryColumns,
    ...metadata.uniques.map((u) => u.columns),
    ...metadata.indices.filter((i) => i.isUnique).map((i) => i.columns),
  ];
  return uniqueKeys.every(
    (columns) => columns.some(fresh) || columns.some((c) => pinning.has(c.databaseName)),
  );
}

/**
 * An upsert that overwrites `path` but not its context column `key`: on conflict the row keeps
 * the `key` it holds, while the value was sealed under the one upserted.
 */
function keptContextError(
  d: EntityDescriptor,
  path: string,
  key: string,
  updatable: boolean,
): ValidationError {
  const why = updatable ? "" : ` (${key} is update: false, which TypeORM's upsert leaves out)`;
  return new ValidationError(
    `${d.model}.${path} is bound to ${d.model}.${key}: an upsert that overwrites it must overwrite ${key} too${why}, unless its conflict target has ${key}, or a deterministic column or blind index bound to ${key} (on MariaDB/MySQL every unique key of the table must have such an encrypted column); on conflict the row keeps the ${key} it holds, and the value, encrypted under the one upserted, would not decrypt`,
  );
}

/**
 * `increment`, `decrement` and `set({ column: () => "…" })` splice SQL into the SET list:
 * arithmetic or string functions on a ciphertext destroy it, and SQL that writes a blind index
 * writes a value nobody computed. The subscriber refuses these too, but only when listeners run.
 * `values({ column: () => "…" })` splices SQL into an INSERT's VALUES list: with listeners off
 * nothing else sees it, and the column would store what the SQL gives, in the clear.
 */
function refuseExpressions(
  builder: InsertQueryBuilder<ObjectLiteral> | UpdateQueryBuilder<ObjectLiteral>,
): void {
  const found = descriptorOf(builder);
  const values: unknown = builder.expressionMap.valuesSet;
  if (found === undefined || values === null || typeof values !== "object") return;
  for (const set of Array.isArray(values) ? values : [values]) {
    if (set !== null && typeof set === "object") refuseExpressionsIn(found.d, set as Row);
  }
}

function refuseExpressionsIn(d: EntityDescriptor, set: Row): void {
  for (const f of d.columns) {
    if (typeof valueIn(f, set) === "function") throw expressionError(d, f.path);
  }
  for (const [column, f] of d.blindIndexes) {
    if (typeof indexIn(f, set) === "function") {
      throw new ValidationError(
        `${d.model}.${column} is a blind index: it is computed, not written (increment, decrement, set(() => …) and values(() => …) are refused)`,
      );
    }
  }
}

export function expressionError(d: EntityDescriptor, property: string): ValidationError {
  return new ValidationError(
    `${d.model}.${property} is encrypted: a SQL expression cannot run on ciphertext (increment, decrement, set(() => …) and values(() => …) are refused); write a value`,
  );
}

type Row = Record<string, unknown>;

/** The rows an UPDATE must not touch, as SQL on the update's table, with its parameters. */
interface StrandedCheck {
  /** Each kind of row refused, with the error that says why. */
  readonly parts: readonly GuardedRows[];
  readonly parameters: Readonly<Record<string, unknown>>;
}

interface GuardedRows {
  /** True for a row the update must not touch. */
  readonly condition: string;
  /** The refusal when a row matches before the update (`checked`) or after it (`concurrent`). */
  readonly error: (when: "checked" | "concurrent") => ValidationError;
}

/**
 * The rows an UPDATE that sets context columns must leave alone:
 * - one that sets a `fromRow` or `rowIdentity` column without the encrypted columns it binds:
 *   allowed only while no row it matches holds one of those columns under another value (the
 *   usual `update(id, { tenantId, email })`, where the tenant is there to seal the email);
 * - one that seals values under an `update: false` column, which TypeORM leaves out of the SET:
 *   the values are sealed under the value given, so every row it matches must hold that value.
 */
function strandedCheck(builder: UpdateQueryBuilder<ObjectLiteral>): StrandedCheck | undefined {
  const found = descriptorOf(builder);
  if (found === undefined) return undefined;
  const { metadata, d } = found;
  const values: unknown = builder.expressionMap.valuesSet;
  if (values === null || typeof values !== "object") return undefined;
  const set = values as Record<string, unknown>;
  // What the SET writes to each context column: its property, or the relation whose join column
  // it is (`update(id, { tenant: { id } })`, a cascade moving or orphaning a row).
  const written = new Map<string, unknown>();
  const relations = new Map<string, string>();
  const columns = new Map<string, ColumnMetadata | undefined>();
  for (const key of d.contextKeys) {
    const column = metadata.findColumnWithPropertyPath(key);
    columns.set(key, column);
    written.set(key, column === undefined ? set[key] : writtenValueOf(column, set));
    const relation = writingRelation(column, set);
    if (relation !== undefined) relations.set(key, relation);
  }
  const bound = new Map<string, EncryptedField[]>();
  const sealed = new Map<string, EncryptedField[]>();
  const add = (into: Map<string, EncryptedField[]>, key: string, f: EncryptedField) =>
    into.set(key, [...(into.get(key) ?? []), f]);
  for (const f of d.columns) {
    const value = valueIn(f, set);
    for (const key of rowKeysOf(f.spec)) {
      if (written.get(key) === undefined) continue;
      if (columns.get(key)?.isUpdate === false) {
        // TypeORM leaves the column out of the SET: it changes nothing, but a value sealed
        // under it must be sealed under what the row holds. save() of a loaded row sealed under
        // the stored row (refuseMovedContext checks that, once the SET is built).
        if (value !== undefined && value !== null && sealedBindingOf(value)?.stored === undefined) {
          add(sealed, key, f);
        }
      } else if (value === undefined) {
        add(bound, key, f);
      }
    }
  }
  if (bound.size === 0 && sealed.size === 0) return undefined;
  const parts: GuardedRows[] = [];
  const parameters: Record<string, unknown> = {};
  let n = 0;
  const differs = (key: string, value: unknown, fields: readonly EncryptedField[]) => {
    // A SQL expression (`() => "…"`) gives no value to compare before the update runs.
    if (typeof value === "function") {
      throw strandedError(d, new Map([[key, fields.map((f) => f.path)]]), "update");
    }
    const column = columns.get(key);
    const keyColumn = builder.escape(column?.databaseName ?? key);
    if (value === null) return `${keyColumn} IS NOT NULL`;
    const parameter = `kms_context_${n++}`;
    // Compared as the column stores it: through its value transformer, as TypeORM writes it.
    parameters[parameter] =
      column === undefined
        ? value
        : builder.connection.driver.preparePersistentValue(value, column);
    return `(${keyColumn} IS NULL OR ${exactlyDiffer(builder, keyColumn, `:${parameter}`)})`;
  };
  for (const [key, fields] of bound) {
    const held = fields.map((f) => `${builder.escape(f.databaseName)} IS NOT NULL`).join(" OR ");
    const stranded = new Map([[key, fields.map((f) => f.path)]]);
    parts.push({
      condition: `(${differs(key, written.get(key), fields)} AND (${held}))`,
      error: (when) =>
        strandedError(
          d,
          stranded,
          when === "checked" ? "update" : "concurrent",
          relations.get(key),
        ),
    });
  }
  for (const [key, fields] of sealed) {
    parts.push({
      condition: differs(key, written.get(key), fields),
      error: (when) => fixedContextError(d, key, fields, when),
    });
  }
  return { parts, parameters };
}

/** An UPDATE sealing values under an `update: false` column that a matched row holds otherwise. */
function fixedContextError(
  d: EntityDescriptor,
  key: string,
  fields: readonly EncryptedField[],
  when: "checked" | "concurrent",
): ValidationError {
  const bound = [...new Set(fields.map((f) => `${d.model}.${f.path}`))].join(", ");
  const outcome =
    when === "checked"
      ? "refused before any write"
      : "changed by a concurrent write after it was checked; the update did not change that row (and was rolled back if it opened its own transaction)";
  return new ValidationError(
    `${d.model}.${key} is update: false: an update leaves it as each row holds it, so ${bound} would be encrypted under the ${key} given while a matched row holds another (${outcome}); give the value the row holds, or load the entity and save() it`,
  );
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
    for (const part of check.parts) {
      if (await findsGuarded(builder, part.condition, check.parameters, false)) {
        throw part.error("checked");
      }
    }
    if (!runner.isTransactionActive) {
      await runner.startTransaction();
      opened = true;
    }
    const map = builder.expressionMap;
    const extra = map.extraAppendedAndWhereCondition;
    const any = `(${check.parts.map((part) => part.condition).join(" OR ")})`;
    map.extraAppendedAndWhereCondition = both(extra, `NOT ${any}`);
    builder.setParameters(check.parameters);
    let result: UpdateResult;
    try {
      result = await execute();
    } finally {
      map.extraAppendedAndWhereCondition = extra;
    }
    const locking = LOCKING_READS.has(builder.connection.driver.options.type);
    for (const part of check.parts) {
      if (await findsGuarded(builder, part.condition, check.parameters, locking)) {
        throw part.error("concurrent");
      }
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

/** Whether a row the update's where matches is one `condition` refuses. */
async function findsGuarded(
  builder: UpdateQueryBuilder<ObjectLiteral>,
  condition: string,
  parameters: Readonly<Record<string, unknown>>,
  lock: boolean,
): Promise<boolean> {
  const probe = selectWhere(builder).select("1", "kms_stranded").limit(1);
  const map = probe.expressionMap;
  // Appended after the where as a whole: `andWhere` would bind to its last `orWhere` only.
  map.extraAppendedAndWhereCondition = both(map.extraAppendedAndWhereCondition, condition);
  probe.setParameters(parameters);
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
  relation?: string,
): ValidationError {
  const [key, properties] = [...stranded][0] as [string, readonly string[]];
  const bound = [...new Set(properties)].map((p) => `${d.model}.${p}`).join(", ");
  // A cascade or an orphan removal from the other side of the relation, or an update that
  // reassigns it: the caller never named the context column.
  const through =
    relation === undefined
      ? ""
      : ` (here through the relation ${d.model}.${relation}, whose join column it is: an update or save that reassigns it, or a cascade or orphan removal from the other side that moves the row or sets it to null)`;
  if (operation === "concurrent") {
    return new ValidationError(
      `${d.model}.${key} is part of the encryption context of ${bound}: a concurrent write stored one of them in a row this update matched, after it was checked; the update did not change that row (and was rolled back if it opened its own transaction); retry it`,
    );
  }
  const remedy =
    operation === "upsert"
      ? `give them in every upserted entity, or make ${key} a conflict path`
      : relation === undefined
        ? `load the entity and save() it with the new value, or set them in the same update`
        : `load the entity and save() it with the new ${key} (and the relation), or set ${key} and them in the same update`;
  return new ValidationError(
    `${d.model}.${key} is part of the encryption context of ${bound}: an ${operation} that changes it${through} must write them too (${remedy}); their stored values would stop decrypting`,
  );
}
