import {
  type FieldEncryptionEngine,
  type FieldValue,
  type ReencryptRow,
  type ReencryptSource,
  type StoredFieldValue,
  ValidationError,
} from "@kms/core";
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
}

/**
 * A `ReencryptSource` over a Prisma model for `reencryptFields`: pages by `cursorField`, and
 * writes each row with `updateMany({ where: { id, …old values } })`, so a row the application
 * changed in between is left alone (reported as a conflict) instead of overwritten. Blind
 * indexes of re-encrypted fields are recomputed in the same write.
 * @throws ValidationException when the model binds values to the ambient scope (the job has
 *   no request to take it from) or has no encrypted fields.
 */
export function prismaReencryptSource(options: PrismaReencryptSourceOptions): ReencryptSource {
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
  const select: Record<string, true> = { [cursorField]: true };
  for (const f of [...model.context.fromRow, ...model.encryptedNames]) select[f] = true;
  return {
    async fetchBatch(cursor, limit) {
      const rows = await delegate.findMany({
        where: cursor === undefined ? {} : { [cursorField]: { gt: cursor } },
        orderBy: { [cursorField]: "asc" },
        take: limit,
        select,
      });
      return rows.map((row): ReencryptRow => {
        const context: Record<string, string> = {};
        for (const key of model.context.fromRow) context[key] = String(row[key]);
        const values: Record<string, StoredFieldValue> = {};
        for (const f of model.encryptedNames) values[f] = (row[f] ?? null) as StoredFieldValue;
        return { cursor: row[cursorField] as string | number | bigint, context, values };
      });
    },
    async compareAndSet(row, next, plaintexts: Readonly<Record<string, FieldValue>>) {
      const where: Record<string, unknown> = { [cursorField]: row.cursor };
      const data: Record<string, unknown> = {};
      for (const f of model.encryptedNames) {
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
                { model: model.name, field: column, context: row.context },
                index,
                plain,
              );
      }
      const { count } = await delegate.updateMany({ where, data });
      return count === 1;
    },
  };
}
