import {
  type FieldEncryptionEngine,
  type FieldValue,
  type ReencryptRow,
  type ReencryptSource,
  type StoredFieldValue,
  ValidationError,
} from "@kms/core";
import { isObject } from "./internal/codec.ts";
import type { ModelDescriptor } from "./schema-descriptor.ts";

/** The base (unextended) client's delegate of the model being re-encrypted. */
export interface ReencryptDelegate {
  findMany(args: Record<string, unknown>): Promise<Record<string, unknown>[]>;
  updateMany(args: Record<string, unknown>): Promise<{ count: number }>;
}

export interface PrismaReencryptSourceOptions {
  /** `base.patient` — the client you passed to `$extends`, so values are read as stored. */
  readonly delegate: ReencryptDelegate;
  readonly model: ModelDescriptor;
  /** The engine that recomputes blind indexes (share it with the extension via `engine`). */
  readonly engine: FieldEncryptionEngine;
  /** A unique, ordered column to page by; default "id". */
  readonly cursorField?: string;
  /**
   * The encrypted fields this source reads and writes; default all of the model's. A job binds
   * one context per row, so fields that add their own (`@kms.context(recordId)` on the field)
   * and fields that do not are re-encrypted by separate jobs, each given its fields here and
   * the same fields as `reencryptFields`' `fields`. Both jobs use the same data keys (those of
   * the model's context): a field's own pairs are bound into its values only.
   */
  readonly fields?: readonly string[];
}

/**
 * A row the job left as it was because its new values would break a unique constraint: another
 * row already holds them (see `PrismaReencryptSource.skipped`). Names the row, never a value.
 */
export interface ReencryptSkippedRow {
  /** The row's `cursorField` value (its id). */
  readonly cursor: string | number | bigint;
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

/**
 * A `ReencryptSource` over a Prisma model for `reencryptFields`: pages by `cursorField`, and
 * writes each row with `updateMany({ where: { id, …old values } })`, so a row the application
 * changed in between is left alone (reported as a conflict) instead of overwritten. A row whose
 * new values would break a unique constraint is left alone too, counted as a conflict and
 * listed in `skipped`, and the job goes on. Blind indexes of re-encrypted fields are recomputed
 * in the same write. Run it outside a transaction: on PostgreSQL the refused write would abort
 * the transaction around it.
 * @throws ValidationException when the model or a field binds values to the ambient scope (the
 *   job has no request to take it from), when it has no encrypted fields, or when `fields`
 *   names a field that is not encrypted or mixes fields of different contexts; from
 *   `fetchBatch`, when a row holds a value while a context column of it is null.
 */
export function prismaReencryptSource(
  options: PrismaReencryptSourceOptions,
): PrismaReencryptSource {
  const { delegate, model, engine } = options;
  const cursorField = options.cursorField ?? "id";
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
  const skipped: ReencryptSkippedRow[] = [];
  return {
    skipped,
    async fetchBatch(cursor, limit) {
      const rows = await delegate.findMany({
        where: cursor === undefined ? {} : { [cursorField]: { gt: cursor } },
        orderBy: { [cursorField]: "asc" },
        take: limit,
        select,
      });
      return rows.map((row): ReencryptRow => {
        const values: Record<string, StoredFieldValue> = {};
        for (const f of fields) values[f] = (row[f] ?? null) as StoredFieldValue;
        const cursor = row[cursorField] as string | number | bigint;
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
