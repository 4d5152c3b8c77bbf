import {
  currentEncryptionContext,
  type EncryptionContext,
  type FieldValue,
  type ReencryptCheckpoint,
  type ReencryptOptions,
  type ReencryptRow,
  type ReencryptSource,
  reencryptFields,
  type StoredFieldValue,
  ValidationError,
} from "@kms/core";
import type {
  DataSource,
  EntityMetadata,
  EntityTarget,
  FindOptionsWhere,
  ObjectLiteral,
} from "typeorm";
import { encryptionOf, type TypeormFieldEncryption } from "./field-encryption.ts";
import {
  contextFor,
  describe,
  type EncryptedField,
  type EntityDescriptor,
  hasChildEntities,
  keyContextFor,
  rowKeysOf,
} from "./internal/entity-descriptor.ts";
import { exactlyEqual } from "./internal/query-guards.ts";
import { rawColumnIn } from "./internal/raw-conditions.ts";
import { Sealed } from "./internal/sealed.ts";

export type ReencryptEntitiesOptions<T extends ObjectLiteral = ObjectLiteral> = Pick<
  ReencryptOptions,
  "shouldReencrypt" | "batchSize" | "resumeFrom" | "onProgress" | "signal"
> & {
  /**
   * The values of `fromScope` keys, which the rows do not hold (the ambient scope's otherwise).
   * Every row the run reads is sealed and opened under them: give `where` to read only the rows
   * of that scope.
   */
  readonly context?: EncryptionContext;
  /**
   * Only the rows this where matches (TypeORM's find syntax, on plain columns, without `Raw`),
   * e.g. one tenant's rows. Required when a column is bound to `fromScope` keys; `{}` says that
   * every row belongs to the run's scope.
   */
  readonly where?: FindOptionsWhere<T> | FindOptionsWhere<T>[];
};

/** A checkpoint of `reencryptEntities`. */
export interface ReencryptEntitiesCheckpoint extends ReencryptCheckpoint {
  /**
   * Every encrypted column of every row up to `cursor` was processed. Checkpoints of versions
   * that ran one pass per context configuration lack it: resumed from one of those, an entity
   * with several configurations (or child entities) starts over.
   */
  readonly allColumns: true;
}

type Cursor = string | number | bigint | undefined;

/** The encrypted columns of one entity that share a context configuration: one binding per row. */
interface ColumnGroup {
  readonly fields: readonly EncryptedField[];
  /** The columns as core's job takes them, by binding field. */
  readonly specs: ReencryptOptions["fields"];
  /** The row properties the context is read from (`fromRow`, then `rowIdentity`). */
  readonly contextKeys: readonly string[];
}

/** What a row of one entity (the entity migrated, or one of its child entities) is made of. */
interface EntityPlan {
  readonly metadata: EntityMetadata;
  readonly d: EntityDescriptor;
  readonly groups: readonly ColumnGroup[];
}

/**
 * Re-encrypts an entity's encrypted columns with core's rotation/migration job: legacy
 * plaintext (with `legacyPlaintext: true`), values under an old KMS key, deterministic values
 * under an old stable data key — recomputing blind indexes. One pass reads the rows in primary
 * key order and rewrites every encrypted column of each row, each as the entity the row is
 * stored as (single-table inheritance: by its discriminator). Soft-deleted rows
 * (`@DeleteDateColumn`) are read and rewritten too, and stay soft-deleted. Rows are written with
 * a compare-and-set on the old values (byte for byte), so the application may keep writing; the
 * checkpoint lets an interrupted run resume. Columns bound to the ambient scope need one run
 * per scope: `options.context` gives the scope, `options.where` its rows. Values under an old
 * KMS key are read only while the encryption lists that key in `previousKeyIds` (otherwise they
 * fail with InvalidCiphertextException).
 * @throws ValidationException when the entity has no encrypted column, or a composite or
 *   nullable primary key, when a column is bound to `fromScope` keys and `where` or a scope value
 *   is missing, when `context` names a row column, when `where` compares a column with `Raw` SQL,
 *   or when a row holding a value has a null context column; when the table does not keep the
 *   primary key as the entity declares it: a row (of `where`) holds a null key, two rows in a
 *   batch's range of keys share one (whichever `where` matches), or a write changed two rows;
 *   InvalidCiphertextException / KMS errors from the engine.
 */
export async function reencryptEntities<T extends ObjectLiteral>(
  dataSource: DataSource,
  entity: EntityTarget<T>,
  options: ReencryptEntitiesOptions<T> = {},
): Promise<ReencryptEntitiesCheckpoint> {
  const encryption = encryptionOf(dataSource);
  const metadata = dataSource.getMetadata(entity);
  const batchSize = options.batchSize ?? 100;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000) {
    throw new ValidationError(`"batchSize" must be an integer 1–10000, got ${batchSize}`);
  }
  const pk = pagedKeyOf(metadata);
  const plans = plansOf(metadata);
  if (plans.size === 0) throw new ValidationError(`${metadata.name} has no encrypted column`);
  checkScope(plans, options);
  refuseRawWhere(metadata, options.where);

  const esc = (name: string) => dataSource.driver.escape(name);
  const column = (databaseName: string) => `${esc("t")}.${esc(databaseName)}`;
  const pkColumn = column(pk.databaseName);
  // Each database column once, whichever entities of the table read it.
  const aliases = new Map<string, string>();
  const aliasOf = (databaseName: string) => {
    let alias = aliases.get(databaseName);
    if (alias === undefined) {
      alias = `c${aliases.size}`;
      aliases.set(databaseName, alias);
    }
    return alias;
  };
  for (const plan of plans.values()) {
    for (const group of plan.groups) {
      for (const f of group.fields) aliasOf(f.databaseName);
      for (const key of group.contextKeys) aliasOf(databaseNameOf(plan.metadata, key));
    }
  }
  const discriminator = hasChildEntities(metadata) ? metadata.discriminatorColumn : undefined;
  const where = options.where as FindOptionsWhere<ObjectLiteral> | undefined;

  const fetchBatch = async (cursor: Cursor, limit: number) => {
    // withDeleted: a soft-deleted row still holds its values (restore() brings it back, and a
    // plaintext or old-key value must not outlive the migration or the rotation).
    let qb = dataSource
      .createQueryBuilder()
      .from(metadata.target, "t")
      .withDeleted()
      .select(pkColumn, "pk");
    if (discriminator !== undefined) qb = qb.addSelect(column(discriminator.databaseName), "kind");
    for (const [databaseName, alias] of aliases) qb = qb.addSelect(column(databaseName), alias);
    // TypeORM brackets a where of several properties (an array's branches too) before the
    // cursor is added, not one of a single property: that is one comparison, Raw being refused.
    if (where !== undefined) qb = qb.where(where);
    if (cursor !== undefined) qb = qb.andWhere(`${pkColumn} > :cursor`, { cursor });
    const rows = await qb
      .orderBy(pkColumn, "ASC")
      .limit(limit)
      .getRawMany<Record<string, unknown>>();
    const last = rows.at(-1);
    if (last !== undefined) await refuseSharedKeys(cursor, last.pk);
    return rows;
  };

  /**
   * Refuses a batch whose range of primary keys holds a value twice. The entity's metadata says
   * the key is unique, but the table may not keep it so (`synchronize: false` against a schema
   * made elsewhere, e.g. keyed by (tenant, id)). Counted without `where`, over every row a write
   * by key reaches (`where` hides another tenant's row from the batch, not from the write), and
   * in the database's own equality (collations, timestamp precision), which the paging and the
   * writes use.
   */
  const refuseSharedKeys = async (after: Cursor, upTo: unknown) => {
    let qb = dataSource
      .createQueryBuilder()
      .from(metadata.target, "t")
      .withDeleted()
      .select("COUNT(*)", "n")
      .addSelect(`COUNT(DISTINCT ${pkColumn})`, "d")
      .where(`${pkColumn} <= :upTo`, { upTo });
    if (after !== undefined) qb = qb.andWhere(`${pkColumn} > :after`, { after });
    const counted = await qb.getRawOne<{ n: unknown; d: unknown }>();
    if (Number(counted?.n) === Number(counted?.d)) return;
    throw new ValidationError(
      `${metadata.name}: two rows of ${metadata.tableName} hold the same ${pk.propertyName} (its primary key on the entity, which the database does not keep unique), so the job cannot page by it: it would skip rows, and its write by ${pk.propertyName} would put one row's values, sealed under its context, into the other row; declare the table's real primary key on the entity, or make ${pk.databaseName} the table's primary key`,
    );
  };

  // Nor can metadata rule out a null key: such a row is never after the last row's key, nor does
  // a write by key reach it, so the job would report success over values it never read.
  let nulls = dataSource
    .createQueryBuilder()
    .from(metadata.target, "t")
    .withDeleted()
    .select(pkColumn, "pk");
  if (where !== undefined) nulls = nulls.where(where);
  if ((await nulls.andWhere(`${pkColumn} IS NULL`).limit(1).getRawOne()) !== undefined) {
    throw new ValidationError(
      `${metadata.name}: a row of ${metadata.tableName} holds a null ${pk.propertyName} (its primary key on the entity, which the database lets be null), so the job cannot page by it: it would never read that row, and leave its values as they are; give the row its ${pk.propertyName}, and make ${pk.databaseName} NOT NULL`,
    );
  }

  // A checkpoint of a version that ran one pass per context configuration says nothing of the
  // rows below its cursor in the other passes: those rows are read again (values already
  // rewritten are left as they are).
  const resumeFrom = options.resumeFrom;
  const earlier =
    resumeFrom !== undefined &&
    (resumeFrom as Partial<ReencryptEntitiesCheckpoint>).allColumns !== true &&
    (plans.size > 1 || (plans.get(metadata)?.groups.length ?? 0) > 1);
  let state: ReencryptEntitiesCheckpoint =
    resumeFrom === undefined || earlier
      ? { cursor: undefined, scanned: 0, reencrypted: 0, conflicts: 0, allColumns: true }
      : { ...resumeFrom, allColumns: true };

  // Unscoped: core's job gives the engine no transaction scope, so on SQLite a data key it makes
  // is written only while no transaction is open on the one connection.
  return encryption.run(
    dataSource,
    undefined,
    async () => {
      for (;;) {
        options.signal?.throwIfAborted();
        const raw = await fetchBatch(state.cursor, batchSize);
        if (raw.length === 0) break;
        // One job of core's per entity and context configuration, over the rows of this batch.
        const jobs = new Map<ColumnGroup, { plan: EntityPlan; rows: ReencryptRow[] }>();
        for (const r of raw) {
          const plan = planOf(plans, metadata, discriminator?.propertyName, r);
          for (const group of plan.groups) {
            const row = jobRow(dataSource, plan, group, r, aliasOf, options.context);
            if (row === undefined) continue;
            const job = jobs.get(group) ?? { plan, rows: [] };
            job.rows.push(row);
            jobs.set(group, job);
          }
        }
        const written = new Set<unknown>();
        const conflicted = new Set<unknown>();
        for (const [group, { plan, rows }] of jobs) {
          const compareAndSet = compareAndSetOf(dataSource, encryption, plan, group);
          await reencryptFields({
            engine: encryption.engine,
            source: {
              fetchBatch: async (cursor) => (cursor === undefined ? rows : []),
              compareAndSet: async (row, next, plaintexts) => {
                const done = await compareAndSet(row, next, plaintexts);
                (done ? written : conflicted).add(row.cursor);
                return done;
              },
            },
            model: plan.d.model,
            fields: group.specs,
            batchSize: rows.length,
            ...(options.shouldReencrypt === undefined
              ? {}
              : { shouldReencrypt: options.shouldReencrypt }),
            ...(options.signal === undefined ? {} : { signal: options.signal }),
          });
        }
        const last = raw[raw.length - 1] as Record<string, unknown>;
        state = {
          cursor: last.pk as string | number | bigint,
          scanned: state.scanned + raw.length,
          reencrypted: state.reencrypted + written.size,
          conflicts: state.conflicts + conflicted.size,
          allColumns: true,
        };
        await options.onProgress?.(state);
        if (raw.length < batchSize) break;
      }
      return state;
    },
    false,
  );
}

/**
 * The entities whose rows the table of `metadata` holds, with encrypted columns: the entity, and
 * with single-table inheritance its child entities (each row is sealed as the one it is stored as).
 */
function plansOf(metadata: EntityMetadata): Map<EntityMetadata, EntityPlan> {
  const plans = new Map<EntityMetadata, EntityPlan>();
  const kinds = hasChildEntities(metadata)
    ? [metadata, ...metadata.childEntityMetadatas]
    : [metadata];
  for (const kind of kinds) {
    const d = describe(kind);
    if (d === undefined) continue;
    // One binding per row and context configuration.
    const byContext = new Map<string, EncryptedField[]>();
    for (const f of d.columns) {
      const key = JSON.stringify(f.spec.context);
      byContext.set(key, [...(byContext.get(key) ?? []), f]);
    }
    const groups = [...byContext.values()].map(
      (fields): ColumnGroup => ({
        fields,
        specs: Object.fromEntries(
          fields.map((f) => [
            f.field,
            { type: f.spec.type, mode: f.spec.mode, storage: f.spec.storage },
          ]),
        ),
        contextKeys: rowKeysOf((fields[0] as EncryptedField).spec),
      }),
    );
    plans.set(kind, { metadata: kind, d, groups });
  }
  return plans;
}

/** The entity a fetched row is stored as, by its discriminator, as the subscriber reads it. */
function planOf(
  plans: ReadonlyMap<EntityMetadata, EntityPlan>,
  metadata: EntityMetadata,
  discriminator: string | undefined,
  r: Readonly<Record<string, unknown>>,
): EntityPlan {
  const kind =
    discriminator === undefined
      ? metadata
      : metadata.findInheritanceMetadata({ [discriminator]: r.kind });
  // A child entity without encrypted columns of its own still has its parent's.
  return (plans.get(kind) ?? plans.get(metadata)) as EntityPlan;
}

function databaseNameOf(metadata: EntityMetadata, property: string): string {
  return metadata.findColumnWithPropertyPath(property)?.databaseName ?? property;
}

/**
 * Refuses a run that would seal the rows of several scopes under one: a column bound to
 * `fromScope` keys takes them from `options.context` (or the ambient scope) for every row read.
 * @throws ValidationException naming the column and the key.
 */
function checkScope(
  plans: ReadonlyMap<EntityMetadata, EntityPlan>,
  options: ReencryptEntitiesOptions<ObjectLiteral>,
): void {
  const scope = currentEncryptionContext();
  for (const { d } of plans.values()) {
    for (const f of d.columns) {
      for (const key of rowKeysOf(f.spec)) {
        if (options.context?.[key] !== undefined) {
          throw new ValidationError(
            `"context" gives ${key}, which ${d.model}.${f.path} reads from each row (${d.model}.${key}): "context" is for fromScope keys only`,
          );
        }
      }
      for (const key of f.spec.context.fromScope) {
        if (options.context?.[key] === undefined && scope?.[key] === undefined) {
          throw new ValidationError(
            `${d.model}.${f.path} is bound to the ambient context key "${key}": give its value in "context" (one run per scope)`,
          );
        }
        if (options.where === undefined) {
          throw new ValidationError(
            `${d.model}.${f.path} is bound to the ambient context key "${key}": every row the run reads is sealed under one ${key}, so give "where" selecting that scope's rows (one run per scope), or where: {} when every row belongs to it`,
          );
        }
      }
    }
  }
}

/**
 * Refuses a `where` that compares a column with Raw SQL: the batches' QueryBuilder joins its SQL
 * to the primary key cursor, and to the where's other properties, with a bare AND (a find would
 * bracket it), where an OR in it would read the rows of another scope, to be sealed under this
 * one, or read the rows below the cursor again and again.
 * @throws ValidationException naming the column.
 */
function refuseRawWhere(
  metadata: EntityMetadata,
  where: ReencryptEntitiesOptions<ObjectLiteral>["where"],
): void {
  for (const branch of Array.isArray(where) ? where : where === undefined ? [] : [where]) {
    const path = rawColumnIn(metadata, branch as Record<string, unknown>);
    if (path === undefined) continue;
    throw new ValidationError(
      `${metadata.name}.${path} is compared with Raw SQL in "where", which TypeORM joins to the run's primary key cursor and to the where's other properties without brackets, where an OR in it would read rows of another scope or the same rows again: compare ${path} with operators (Equal, In, Not, Like, LessThan…)`,
    );
  }
}

/**
 * The row of one column group for core's job: undefined when the row holds none of its values,
 * which then need no context (a row whose context column is null too is left alone). Context
 * values are read as a load gives them to the subscriber: hydrated by the driver, through the
 * column's value transformer.
 * @throws ValidationException when a row holding a value has a null context column.
 */
function jobRow(
  dataSource: DataSource,
  plan: EntityPlan,
  group: ColumnGroup,
  r: Readonly<Record<string, unknown>>,
  aliasOf: (databaseName: string) => string,
  scope: EncryptionContext | undefined,
): ReencryptRow | undefined {
  const values: Record<string, StoredFieldValue> = {};
  let held = false;
  for (const f of group.fields) {
    const value = (r[aliasOf(f.databaseName)] ?? null) as StoredFieldValue;
    values[f.field] = value;
    if (value !== null) held = true;
  }
  if (!held) return undefined;
  const { d, metadata } = plan;
  const first = group.fields[0] as EncryptedField;
  const row: Record<string, unknown> = {};
  for (const key of group.contextKeys) {
    const column = metadata.findColumnWithPropertyPath(key);
    const raw = r[aliasOf(column?.databaseName ?? key)];
    const value =
      column === undefined || raw === undefined
        ? raw
        : dataSource.driver.prepareHydratedValue(raw, column);
    if (value === null || value === undefined) {
      throw new ValidationError(
        `${d.model}.${first.path} is bound to ${d.model}.${key}, which is null in the row ${String(r.pk)} while it holds a value: give the row its ${key} (or clear the value) and run again`,
      );
    }
    row[key] = value;
  }
  const context = contextFor(d.model, first, row, undefined, scope);
  return {
    cursor: r.pk as string | number | bigint,
    context,
    ...(first.spec.context.rowIdentity.length === 0
      ? {}
      : { keyContext: keyContextFor(first.spec, context) }),
    values,
  };
}

/**
 * Writes a group's new values (and blind indexes) where the row still holds the old ones, byte
 * for byte: under MariaDB's and MySQL's collations `=` would take a concurrent write of "ALICE"
 * for the "Alice" read, and the job would overwrite it.
 */
function compareAndSetOf(
  dataSource: DataSource,
  encryption: TypeormFieldEncryption,
  plan: EntityPlan,
  group: ColumnGroup,
): ReencryptSource["compareAndSet"] {
  const { d, metadata } = plan;
  const esc = (name: string) => dataSource.driver.escape(name);
  const type = dataSource.options.type;
  const pk = metadata.primaryColumns[0] as EntityMetadata["primaryColumns"][number];
  return async (
    row: ReencryptRow,
    next: Readonly<Record<string, StoredFieldValue>>,
    plaintexts: Readonly<Record<string, FieldValue>>,
  ) => {
    const set: Record<string, unknown> = {};
    for (const f of group.fields) {
      const value = next[f.field];
      if (value === undefined || value === null) continue;
      // An embedded column is set as UpdateQueryBuilder takes it: `{ address: { street } }`.
      const holder = holderIn(set, f.embedded);
      holder[f.spec.property] = new Sealed(value);
      if (f.index !== undefined && plaintexts[f.field] !== undefined) {
        holder[f.index.property] = new Sealed(
          await encryption.blindIndex(d.model, f, row.context, plaintexts[f.field], {}),
        );
      }
    }
    let qb = dataSource
      .createQueryBuilder()
      .update(metadata.target)
      .set(set)
      .where(`${esc(pk.databaseName)} = :pk`, { pk: row.cursor });
    group.fields.forEach((f, i) => {
      const old = row.values[f.field];
      const column = esc(f.databaseName);
      qb =
        old === null || old === undefined
          ? qb.andWhere(`${column} IS NULL`)
          : qb.andWhere(exactlyEqual(type, column, `:old${i}`), { [`old${i}`]: old });
    });
    const result = await qb.callListeners(false).updateEntity(false).execute();
    // Only a table that does not keep the key unique (a duplicate inserted since the batch was
    // checked): the other row already holds this row's values, which every later run would
    // meet there as undecryptable, rather than a conflict.
    if ((result.affected ?? 0) > 1) {
      throw new ValidationError(
        `${metadata.name}: the write of the row with ${pk.propertyName} ${String(row.cursor)} changed ${result.affected} rows of ${metadata.tableName}, whose ${pk.databaseName} the database does not keep unique; the others now hold that row's values, sealed under its context: restore them, and declare the table's real primary key on the entity or make ${pk.databaseName} its primary key`,
      );
    }
    return result.affected === 1;
  };
}

/**
 * The column the job pages by and writes by: the entity's primary key, which must be one column,
 * not null. Any other column would need its uniqueness and nulls checked against the database
 * anyway, so none is offered.
 * @throws ValidationException naming the entity and the columns.
 */
function pagedKeyOf(metadata: EntityMetadata): EntityMetadata["primaryColumns"][number] {
  const [pk, ...rest] = metadata.primaryColumns;
  if (pk === undefined || rest.length > 0) {
    const columns = metadata.primaryColumns.map((c) => c.propertyPath).join(", ");
    throw new ValidationError(
      `${metadata.name}: reencryptEntities pages and writes rows by a single-column primary key, and ${pk === undefined ? "the entity has none" : `this one is composite (${columns})`}; migrate it with core's reencryptFields and a source of your own`,
    );
  }
  if (pk.isNullable) {
    throw new ValidationError(
      `${metadata.name}.${pk.propertyPath} is the primary key but nullable: the job pages by it, and would never read a row whose ${pk.propertyPath} is null; declare it NOT NULL`,
    );
  }
  return pk;
}

/** The object at `names` in `set`, created as plain objects on the way. */
function holderIn(set: Record<string, unknown>, names: readonly string[]): Record<string, unknown> {
  let holder = set;
  for (const name of names) {
    holder[name] ??= {};
    holder = holder[name] as Record<string, unknown>;
  }
  return holder;
}
