import {
  type FieldEncryptionEngine,
  type FieldValue,
  type ReencryptRow,
  type ReencryptSource,
  type StoredFieldValue,
  ValidationError,
} from "@kms/core";
import { isObject } from "./internal/codec.ts";
import { readSchemaText } from "./internal/schema-text.ts";
import type { AnnotatedField, ModelDescriptor } from "./schema-descriptor.ts";

/**
 * The model's delegate on a client with no query extensions (a dedicated `new PrismaClient({
 * adapter })`), connected as a database role that row-level security does not restrict: the job
 * moves only the rows it reads through it.
 */
export interface ReencryptDelegate {
  findMany(args: Record<string, unknown>): Promise<Record<string, unknown>[]>;
  updateMany(args: Record<string, unknown>): Promise<{ count: number }>;
}

/** A value of the source's `cursorField`. */
export type ReencryptCursor = string | number | bigint;

/**
 * Counts the rows of the model's table whose `cursorField` is greater than `after` and at most
 * `upTo` (a bound left out does not apply), reading past query extensions: a raw query.
 */
export type ReencryptRowCounter = (range: {
  readonly after?: ReencryptCursor;
  readonly upTo?: ReencryptCursor;
}) => Promise<number | bigint>;

export interface PrismaReencryptSourceOptions {
  /**
   * `jobClient.patient`, of a client with no query extensions: values are read as stored, and
   * every row is read. Not the application's client, nor the client it was extended from when
   * other extensions were applied to that one first (a soft-delete extension hides rows the job
   * would then leave as they are; `countRows` catches that).
   */
  readonly delegate: ReencryptDelegate;
  readonly model: ModelDescriptor;
  /** The engine that recomputes blind indexes (share it with the extension via `engine`). */
  readonly engine: FieldEncryptionEngine;
  /**
   * A required (not `?`), unique, ordered column to page by; default "id". A relation, a list or
   * an optional column is refused: the job pages by "greater than the last row's value", which no
   * null is.
   */
  readonly cursorField?: string;
  /**
   * The encrypted fields this source reads and writes; default all of the model's. A job binds
   * one context per row, so fields that add their own (`@kms.context(recordId)` on the field)
   * and fields that do not are re-encrypted by separate jobs, each given its fields here and
   * the same fields as `reencryptFields`' `fields`. Both jobs use the same data keys (those of
   * the model's context): a field's own pairs are bound into its values only.
   */
  readonly fields?: readonly string[];
  /**
   * The check that the delegate returns every row: after each batch the source counts the
   * table's rows in the batch's range of `cursorField` with this, and the job fails (a
   * ValidationException naming how many rows, never a value) when the delegate returned fewer,
   * rather than report success over rows it never saw. Default: `SELECT COUNT(*)` through the
   * delegate's client (`$queryRawUnsafe`, which no model query extension sees), on the table and
   * column names of the client's data model; give your own where a raw query does not find the
   * table by those names (PostgreSQL with the adapter's `schema` option and no `search_path`
   * set to it), or `false` to go without. A count runs under the same database role as the
   * delegate: row-level security hides rows from both, which this cannot detect.
   */
  readonly countRows?: ReencryptRowCounter | false;
}

/**
 * A row the job left as it was because its new values would break a unique constraint: another
 * row already holds them (see `PrismaReencryptSource.skipped`). Names the row, never a value.
 */
export interface ReencryptSkippedRow {
  /** The row's `cursorField` value (its id). */
  readonly cursor: ReencryptCursor;
  readonly reason: "unique-constraint";
  /** The constraint, as the database names it: its columns, or else the index name. */
  readonly constraint?: readonly string[] | string;
}

/** `prismaReencryptSource`'s source, with the rows it had to skip. */
export interface PrismaReencryptSource extends ReencryptSource {
  /**
   * Rows whose new values another row already holds under a unique constraint, in the order met
   * (each counts as a conflict in the job's checkpoint): during a move to a new KMS key, the
   * application can write a duplicate of a deterministic value in its new form while the old
   * row still holds the old form. Each needs a human to merge or remove one of the two rows;
   * the next run then moves it. Read it in `onProgress` or when the job ends.
   */
  readonly skipped: readonly ReencryptSkippedRow[];
}

/** How many times a batch's range is read and counted again while writes keep changing it. */
const RECOUNTS = 3;

/**
 * A `ReencryptSource` over a Prisma model for `reencryptFields`: pages by `cursorField`, and
 * writes each row with `updateMany({ where: { id, …old values } })`, so a row the application
 * changed in between is left alone (reported as a conflict) instead of overwritten. A row whose
 * new values would break a unique constraint is left alone too, counted as a conflict and
 * listed in `skipped`, and the job goes on. Blind indexes of re-encrypted fields are recomputed
 * in the same write. Run it outside a transaction: on PostgreSQL the refused write would abort
 * the transaction around it. Each batch is checked against a count of the table's rows in its
 * range (`countRows`): the job moves only what the delegate returns, and a success over rows a
 * query extension hid would leave them in plaintext or under the old key.
 * @throws ValidationException when `cursorField` is a relation, or (read from the schema the
 *   delegate's client was generated from, when it has one) is no field of the model, a list or
 *   optional; when the model or a field binds values to the ambient scope (the
 *   job has no request to take it from), when it has no encrypted fields, when `fields` names a
 *   field that is not encrypted or mixes fields of different contexts, or when no `countRows`
 *   is given and the delegate's client cannot count with a raw query; from `fetchBatch`, when a
 *   row's `cursorField` is null, when two rows hold one `cursorField` value, when a
 *   row holds a value while a context column of it is null, when the table holds rows in the
 *   batch's range that the delegate did not return, or when the default count fails.
 */
export function prismaReencryptSource(
  options: PrismaReencryptSourceOptions,
): PrismaReencryptSource {
  const { delegate, model, engine } = options;
  const cursorField = options.cursorField ?? "id";
  refuseUnpageableCursor(delegate, model, cursorField);
  if (model.context.fromScope.length > 0) {
    throw new ValidationError(
      `${model.name} binds values to the ambient context: re-encrypt it inside runWithEncryptionContext per tenant with your own source`,
    );
  }
  if (model.encryptedNames.length === 0) {
    throw new ValidationError(`${model.name} has no encrypted fields`);
  }
  const fields = options.fields ?? model.encryptedNames;
  const specs = fields.map((f) => {
    const spec = model.encrypted[f];
    if (spec === undefined) throw new ValidationError(`${model.name}.${f} is not encrypted`);
    if (spec.context.fromScope.length > 0) {
      throw new ValidationError(
        `${model.name}.${f} binds values to the ambient context: re-encrypt it inside runWithEncryptionContext with your own source`,
      );
    }
    return spec;
  });
  const own = specs[0]?.context;
  if (own === undefined) throw new ValidationError(`"fields" must name at least one field`);
  if (specs.some((spec) => spec.context !== own)) {
    const groups = new Map<unknown, string[]>();
    for (const f of fields) {
      const key = model.encrypted[f]?.context;
      groups.set(key, [...(groups.get(key) ?? []), f]);
    }
    throw new ValidationError(
      `${model.name}: its fields are bound to different row columns, so re-encrypt them in one job per group with "fields": ${[...groups.values()].map((g) => `[${g.join(", ")}]`).join(", ")}`,
    );
  }
  const contextColumns = [...model.context.fromRow, ...own.fromRow];
  // The model's pairs choose the data keys of fields that add their own (see the codec).
  const keyed = own.fromRow.length > 0;
  const select: Record<string, true> = { [cursorField]: true };
  for (const f of [...contextColumns, ...fields]) select[f] = true;
  const countRows =
    options.countRows === false
      ? undefined
      : (options.countRows ?? rawRowCounter(delegate, model.name, cursorField));
  const skipped: ReencryptSkippedRow[] = [];
  /** Fails when the table holds rows in the range of `rows` that the delegate did not return. */
  const checkEveryRowRead = async (
    count: ReencryptRowCounter,
    cursor: ReencryptCursor | undefined,
    rows: readonly Record<string, unknown>[],
    limit: number,
  ): Promise<void> => {
    // A short batch is the last: the range then runs to the end of the table.
    const upTo =
      rows.length === limit ? (rows.at(-1)?.[cursorField] as ReencryptCursor) : undefined;
    const range = {
      ...(cursor === undefined ? {} : { after: cursor }),
      ...(upTo === undefined ? {} : { upTo }),
    };
    let counted = Number(await count(range));
    if (counted <= rows.length) return;
    // Rows written since the batch was read are counted too (the application keeps writing), so
    // the range is read again, between two counts: without a snapshot, a row inserted or
    // deleted between a count and the read would hide a row the delegate does not return, or
    // fail a job whose delegate returns every row. Writes of one kind between the counts keep
    // the read between them: at least the lower count when every row is returned, below the
    // higher one when some are hidden.
    const bounds = {
      ...(cursor === undefined ? {} : { gt: cursor }),
      ...(upTo === undefined ? {} : { lte: upTo }),
    };
    let unseen = 0;
    for (let attempt = 0; ; attempt++) {
      const visible = (
        await delegate.findMany({
          where: Object.keys(bounds).length === 0 ? {} : { [cursorField]: bounds },
          select: { [cursorField]: true },
        })
      ).length;
      const recounted = Number(await count(range));
      if (visible >= Math.max(counted, recounted)) return;
      unseen = Math.min(counted, recounted) - visible;
      if (unseen > 0) break;
      if (attempt === RECOUNTS) {
        throw new ValidationError(
          `${model.name}: the rows with ${cursorField} in the batch's range kept changing while they were read and counted ${RECOUNTS + 1} times, so the job cannot tell whether the delegate returns every row; resume from the last checkpoint when fewer writes land there`,
        );
      }
      counted = recounted;
    }
    const span = [
      cursor === undefined ? undefined : `after ${String(cursor)}`,
      upTo === undefined ? undefined : `up to ${String(upTo)}`,
    ].filter((part) => part !== undefined);
    throw new ValidationError(
      `${model.name}: the table holds ${unseen} row${unseen === 1 ? "" : "s"} with ${cursorField} ${span.length === 0 ? "anywhere" : span.join(" and ")} that the delegate does not return (a query extension on its client filters its reads, as a soft delete does), whose values the job would leave as they are; give it the delegate of a client with no query extensions (new PrismaClient({ adapter })), then resume from the last checkpoint`,
    );
  };
  return {
    skipped,
    async fetchBatch(cursor, limit) {
      // One row more than the batch: a next row with the last row's cursor, which the next
      // batch (`gt` that cursor) would skip, shows the column is not unique.
      const read = await delegate.findMany({
        where: cursor === undefined ? {} : { [cursorField]: { gt: cursor } },
        orderBy: { [cursorField]: "asc" },
        take: limit + 1,
        select,
      });
      refuseNullCursors(model.name, cursorField, read);
      refuseSharedCursors(model.name, cursorField, read);
      const rows = read.slice(0, limit);
      if (countRows !== undefined) await checkEveryRowRead(countRows, cursor, rows, limit);
      return rows.map((row): ReencryptRow => {
        const values: Record<string, StoredFieldValue> = {};
        for (const f of fields) values[f] = (row[f] ?? null) as StoredFieldValue;
        const cursor = row[cursorField] as ReencryptCursor;
        const context: Record<string, string> = {};
        for (const key of contextColumns) {
          const value = row[key];
          // A null column binds no value (the extension never seals one there, nor reads one):
          // sealed under the text "null", a value would open in a row whose column holds it.
          if ((value === null || value === undefined) && fields.some((f) => values[f] !== null)) {
            throw new ValidationError(
              `${model.name} row ${String(cursor)}: ${key} is null, so its values of ${fields.join(", ")} cannot be bound to it; set ${key} or clear those values, then resume the job`,
            );
          }
          context[key] = String(value);
        }
        if (!keyed) return { cursor, context, values };
        const keyContext: Record<string, string> = {};
        for (const key of model.context.fromRow) keyContext[key] = context[key] as string;
        return { cursor, context, keyContext, values };
      });
    },
    async compareAndSet(row, next, plaintexts: Readonly<Record<string, FieldValue>>) {
      const where: Record<string, unknown> = { [cursorField]: row.cursor };
      const data: Record<string, unknown> = {};
      for (const f of fields) {
        where[f] = row.values[f] ?? null;
        if (next[f] !== undefined && next[f] !== row.values[f]) data[f] = next[f];
      }
      for (const [column, index] of Object.entries(model.blindIndexes)) {
        if (!(index.of in data)) continue;
        const plain = plaintexts[index.of];
        data[column] =
          plain === undefined || plain === null
            ? null
            : await engine.blindIndex(
                row.keyContext === undefined
                  ? { model: model.name, field: column, context: row.context }
                  : {
                      model: model.name,
                      field: column,
                      context: row.context,
                      keyContext: row.keyContext,
                    },
                index,
                plain,
              );
      }
      try {
        const { count } = await delegate.updateMany({ where, data });
        return count === 1;
      } catch (error) {
        const violation = uniqueViolation(error);
        if (violation === undefined) throw error;
        // Every rerun would fail here again: the job would never finish.
        skipped.push({ cursor: row.cursor, reason: "unique-constraint", ...violation });
        return false;
      }
    },
  };
}

const PAGE_BY_ID = `give "cursorField" a required unique column (the id)`;

/**
 * Refuses, when the source is made, a `cursorField` the job cannot reach every row by. A
 * relation is told by the descriptor. Whether the column exists, is a list or is optional, the
 * descriptor does not record (it names only the columns encryption uses), so it is read from the
 * schema text the delegate's client was generated from (Prisma keeps it on the client as
 * `_engineConfig.inlineSchema`, as it keeps the data model `rawRowCounter` reads; Prisma 7's
 * runtime data model no longer says which fields are required). A delegate without it is
 * checked row by row instead (`refuseNullCursors`), which catches nulls only where they sort
 * first (SQLite, MySQL), not where they sort last (PostgreSQL).
 * @throws ValidationException naming the model and the field, with the rule.
 */
function refuseUnpageableCursor(
  delegate: ReencryptDelegate,
  model: ModelDescriptor,
  cursorField: string,
): void {
  const refuse: (why: string) => never = (why) => {
    throw new ValidationError(
      `${model.name}.${cursorField} ${why}, so the job cannot page by it; ${PAGE_BY_ID}`,
    );
  };
  if (Object.hasOwn(model.relations, cursorField)) refuse(`is a relation, not a column`);
  const fields = schemaFieldsOf(delegate, model.name);
  if (fields === undefined) return;
  const field = fields.find((f) => f.name === cursorField);
  if (field === undefined) refuse(`is no field of the model`);
  if (field.relationName !== undefined) refuse(`is a relation, not a column`);
  if (field.list === true) refuse(`is a list (${field.type}[])`);
  if (field.optional) {
    // The job would report success over such rows, their values in plaintext or under the
    // retired key.
    refuse(
      `is optional (${field.type}?): a row whose ${cursorField} is null is never after the last row's, so the job would never read it and leave its values as they are`,
    );
  }
}

/**
 * The fields of `modelName` in the schema text the delegate's client was generated from;
 * undefined when the delegate has no such client, or its schema does not read.
 */
function schemaFieldsOf(
  delegate: ReencryptDelegate,
  modelName: string,
): readonly AnnotatedField[] | undefined {
  const client: unknown = (delegate as unknown as Record<string, unknown>).$parent;
  const config = isObject(client) && isObject(client._engineConfig) ? client._engineConfig : {};
  if (typeof config.inlineSchema !== "string") return undefined;
  try {
    return readSchemaText(config.inlineSchema).find((m) => m.name === modelName)?.fields;
  } catch {
    // Annotations the schema reader refuses are `parseSchema`'s to report, not this check's.
    return undefined;
  }
}

/**
 * Refuses a batch holding a row whose `cursorField` is null: paging by `gt` the last cursor
 * never comes back to it, and the compare-and-set by a null cursor matches no row. Where the
 * source cannot read the schema (`refuseUnpageableCursor`), this is the only check of an
 * optional column.
 * @throws ValidationException naming the model and the column, never a value.
 */
function refuseNullCursors(
  modelName: string,
  cursorField: string,
  rows: readonly Record<string, unknown>[],
): void {
  if (!rows.some((row) => row[cursorField] === null || row[cursorField] === undefined)) return;
  throw new ValidationError(
    `${modelName}: a row's ${cursorField} is null, so the job cannot page by it (it would never read the rows whose ${cursorField} is null, and leave their values as they are); ${PAGE_BY_ID}`,
  );
}

/**
 * Refuses a batch (read in `cursorField` order) in which two rows hold one `cursorField` value:
 * paging by `gt` the last cursor would skip the rows sharing it with the batch's last, and the
 * compare-and-set `updateMany({ where: { [cursorField], …old values } })` would write one row's
 * values, sealed under its context, into every row holding the same cursor and old values (two
 * tenants' equal legacy plaintexts), where they never decrypt.
 * @throws ValidationException naming the model and the column, never a value.
 */
function refuseSharedCursors(
  modelName: string,
  cursorField: string,
  rows: readonly Record<string, unknown>[],
): void {
  for (let i = 1; i < rows.length; i++) {
    if (!sameCursor(rows[i - 1]?.[cursorField], rows[i]?.[cursorField])) continue;
    throw new ValidationError(
      `${modelName}: two rows hold the same ${cursorField}, so the job cannot page by it (it would skip rows, and its compare-and-set would write one row's values into another row); give "cursorField" a unique column (the id)`,
    );
  }
}

/** Whether two `cursorField` values are one: a Date to the millisecond, bytes byte for byte. */
export function sameCursor(a: unknown, b: unknown): boolean {
  // String() of a Date drops its milliseconds.
  if (a instanceof Date && b instanceof Date) return a.getTime() === b.getTime();
  if (a instanceof Uint8Array && b instanceof Uint8Array) return Buffer.from(a).equals(b);
  // Numbers, bigints, strings, and Decimal, whose string form is exact.
  return String(a) === String(b);
}

/**
 * The default `countRows`: `SELECT COUNT(*)` through the delegate's client (`$parent`, which
 * Prisma gives every model delegate), whose raw queries no model query extension sees. The
 * table and column names come from the client's data model (`_runtimeDataModel`, which Prisma 7
 * keeps on the client and exposes through no public API), quoted for its provider
 * (`_activeProvider`). A delegate without them fails here, when the source is made, rather than
 * leave the check out; a raw query that fails names its cause when the job runs.
 * @throws ValidationException when the delegate's client offers no raw queries or data model.
 */
function rawRowCounter(
  delegate: ReencryptDelegate,
  modelName: string,
  cursorField: string,
): ReencryptRowCounter {
  const client: unknown = (delegate as unknown as Record<string, unknown>).$parent;
  const runtime =
    isObject(client) && isObject(client._runtimeDataModel) ? client._runtimeDataModel : {};
  const models = isObject(runtime.models) ? runtime.models : {};
  const dataModel = isObject(models[modelName]) ? models[modelName] : undefined;
  const provider = isObject(client) ? client._activeProvider : undefined;
  const dialect = typeof provider === "string" ? SQL_DIALECTS[provider] : undefined;
  const fields = Array.isArray(dataModel?.fields) ? dataModel.fields : [];
  const field = fields.find(
    (f): f is Record<string, unknown> => isObject(f) && f.name === cursorField,
  );
  if (
    !isObject(client) ||
    typeof client.$queryRawUnsafe !== "function" ||
    dataModel === undefined ||
    field === undefined ||
    dialect === undefined
  ) {
    throw new ValidationError(
      `${modelName}: the source cannot count the table's rows with a raw query through the delegate's client (a Prisma client of a SQL database, with ${modelName}.${cursorField} among its columns), which it needs to check that the delegate returns every row; give "countRows" (a raw COUNT of the rows in a range of ${cursorField}), or countRows: false to go without the check`,
    );
  }
  const queryRaw = client.$queryRawUnsafe as (
    sql: string,
    ...values: unknown[]
  ) => Promise<unknown>;
  const name = (value: unknown, fallback: string) => (typeof value === "string" ? value : fallback);
  const table = [
    ...(typeof dataModel.schema === "string" ? [dialect.quote(dataModel.schema)] : []),
    dialect.quote(name(dataModel.dbName, modelName)),
  ].join(".");
  const column = dialect.quote(name(field.dbName, cursorField));
  return async ({ after, upTo }) => {
    const conditions: string[] = [];
    const values: ReencryptCursor[] = [];
    if (after !== undefined) {
      values.push(after);
      conditions.push(`${column} > ${dialect.parameter(values.length)}`);
    }
    if (upTo !== undefined) {
      values.push(upTo);
      conditions.push(`${column} <= ${dialect.parameter(values.length)}`);
    }
    const where = conditions.length === 0 ? "" : ` WHERE ${conditions.join(" AND ")}`;
    let rows: unknown;
    try {
      rows = await queryRaw.call(client, `SELECT COUNT(*) AS n FROM ${table}${where}`, ...values);
    } catch (error) {
      throw new ValidationError(
        `${modelName}: counting the table's rows with a raw query through the delegate's client failed, so the source cannot check that the delegate returns every row; give "countRows" (a raw COUNT that finds the table, e.g. in its schema), or countRows: false to go without the check`,
        { cause: error },
      );
    }
    const first: unknown = Array.isArray(rows) ? rows[0] : undefined;
    const n = isObject(first) ? first.n : undefined;
    if (typeof n !== "number" && typeof n !== "bigint") {
      throw new ValidationError(`${modelName}: the raw row count returned no number`);
    }
    return n;
  };
}

interface SqlDialect {
  quote(identifier: string): string;
  /** The `n`th (1-based) parameter's placeholder. */
  parameter(n: number): string;
}

const DOUBLE_QUOTED: SqlDialect["quote"] = (id) => `"${id.replaceAll('"', '""')}"`;

/** By Prisma's provider name; MongoDB has no SQL. */
const SQL_DIALECTS: Readonly<Record<string, SqlDialect>> = {
  postgresql: { quote: DOUBLE_QUOTED, parameter: (n) => `$${n}` },
  cockroachdb: { quote: DOUBLE_QUOTED, parameter: (n) => `$${n}` },
  sqlite: { quote: DOUBLE_QUOTED, parameter: () => "?" },
  mysql: { quote: (id) => `\`${id.replaceAll("`", "``")}\``, parameter: () => "?" },
  sqlserver: { quote: (id) => `[${id.replaceAll("]", "]]")}]`, parameter: (n) => `@P${n}` },
};

/**
 * Prisma's unique-constraint error (P2002), with the constraint's columns or index name when the
 * database reports them; undefined for any other error. Only names are read: the database's
 * message may quote the duplicate value.
 */
function uniqueViolation(error: unknown): Pick<ReencryptSkippedRow, "constraint"> | undefined {
  if (!isObject(error) || error.code !== "P2002") return undefined;
  const meta = isObject(error.meta) ? error.meta : {};
  // Without a driver adapter Prisma gives `target`; with one, the adapter's `constraint`.
  const adapterError = isObject(meta.driverAdapterError) ? meta.driverAdapterError : {};
  const cause = isObject(adapterError.cause) ? adapterError.cause : {};
  const constraint = isObject(cause.constraint) ? cause.constraint : {};
  for (const names of [meta.target, constraint.fields]) {
    if (Array.isArray(names) && names.every((n) => typeof n === "string")) {
      return { constraint: names };
    }
  }
  for (const name of [meta.target, constraint.index]) {
    if (typeof name === "string") return { constraint: name };
  }
  return {};
}
