import {
  type EncryptionContext,
  type FieldValue,
  type ReencryptCheckpoint,
  type ReencryptOptions,
  type ReencryptRow,
  reencryptFields,
  type StoredFieldValue,
  ValidationError,
} from "@kms/core";
import type { DataSource, EntityTarget, ObjectLiteral } from "typeorm";
import { encryptionOf } from "./field-encryption.ts";
import {
  contextFor,
  describe,
  type EncryptedField,
  keyContextFor,
  rowKeysOf,
} from "./internal/entity-descriptor.ts";
import { Sealed } from "./internal/sealed.ts";

export type ReencryptEntitiesOptions = Pick<
  ReencryptOptions,
  "shouldReencrypt" | "batchSize" | "resumeFrom" | "onProgress" | "signal"
> & {
  /** Context values not stored in the row (`fromScope` keys), e.g. one tenant per run. */
  readonly context?: EncryptionContext;
};

type Cursor = string | number | bigint | undefined;

/**
 * Re-encrypts an entity's encrypted columns with core's rotation/migration job: legacy
 * plaintext (with `legacyPlaintext: true`), values under an old KMS key, deterministic values
 * under an old stable data key — recomputing blind indexes. Rows are written with a
 * compare-and-set on the old values, so the application may keep writing; the checkpoint lets
 * an interrupted run resume. Columns bound to the ambient scope need `options.context` (one
 * run per tenant).
 * @throws ValidationException when the entity has no encrypted column or a composite primary
 *   key; InvalidCiphertextException / KMS errors from the engine.
 */
export async function reencryptEntities<T extends ObjectLiteral>(
  dataSource: DataSource,
  entity: EntityTarget<T>,
  options: ReencryptEntitiesOptions = {},
): Promise<ReencryptCheckpoint> {
  const encryption = encryptionOf(dataSource);
  const metadata = dataSource.getMetadata(entity);
  const d = describe(metadata);
  if (d === undefined) throw new ValidationError(`${metadata.name} has no encrypted column`);
  const [pk, ...rest] = metadata.primaryColumns;
  if (pk === undefined || rest.length > 0) {
    throw new ValidationError(
      `${metadata.name}: reencryptEntities needs a single-column primary key`,
    );
  }
  // One job per distinct context configuration: a row's context is per job.
  const groups = new Map<string, EncryptedField[]>();
  for (const f of d.columns) {
    const key = JSON.stringify(f.spec.context);
    groups.set(key, [...(groups.get(key) ?? []), f]);
  }
  let total: ReencryptCheckpoint | undefined;
  for (const group of groups.values()) {
    const first = group[0] as EncryptedField;
    const spec = first.spec;
    const contextKeys = rowKeysOf(spec);
    // Keyed by binding field: the property, or an embedded column's database name.
    const fields: ReencryptOptions["fields"] = Object.fromEntries(
      group.map((s) => [
        s.field,
        { type: s.spec.type, mode: s.spec.mode, storage: s.spec.storage },
      ]),
    );
    const pkPath = `t.${pk.propertyPath}`;
    const esc = (name: string) => dataSource.driver.escape(name);
    const source: ReencryptOptions["source"] = {
      fetchBatch: async (cursor: Cursor, limit: number) => {
        let qb = dataSource.createQueryBuilder().from(metadata.target, "t").select(pkPath, "pk");
        group.forEach((s, i) => {
          qb = qb.addSelect(`t.${s.path}`, `v${i}`);
        });
        contextKeys.forEach((k, i) => {
          qb = qb.addSelect(`t.${k}`, `c${i}`);
        });
        if (cursor !== undefined) qb = qb.where(`${pkPath} > :cursor`, { cursor });
        const raw = await qb
          .orderBy(pkPath, "ASC")
          .limit(limit)
          .getRawMany<Record<string, unknown>>();
        return raw.map((r): ReencryptRow => {
          const row: Record<string, unknown> = {};
          contextKeys.forEach((k, i) => {
            row[k] = r[`c${i}`];
          });
          const values: Record<string, StoredFieldValue> = {};
          group.forEach((s, i) => {
            values[s.field] = (r[`v${i}`] ?? null) as StoredFieldValue;
          });
          const context = contextFor(d.model, first, row, undefined, options.context);
          return {
            cursor: r.pk as string | number | bigint,
            context,
            ...(spec.context.rowIdentity.length === 0
              ? {}
              : { keyContext: keyContextFor(spec, context) }),
            values,
          };
        });
      },
      compareAndSet: async (
        row: ReencryptRow,
        next: Readonly<Record<string, StoredFieldValue>>,
        plaintexts: Readonly<Record<string, FieldValue>>,
      ) => {
        const set: Record<string, unknown> = {};
        for (const f of group) {
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
        group.forEach((s, i) => {
          const old = row.values[s.field];
          const column = esc(s.databaseName);
          qb =
            old === null || old === undefined
              ? qb.andWhere(`${column} IS NULL`)
              : qb.andWhere(`${column} = :old${i}`, { [`old${i}`]: old });
        });
        const result = await qb.callListeners(false).updateEntity(false).execute();
        return result.affected === 1;
      },
    };
    const checkpoint = await encryption.run(dataSource, undefined, () =>
      reencryptFields({
        engine: encryption.engine,
        source,
        model: d.model,
        fields,
        ...(options.shouldReencrypt === undefined
          ? {}
          : { shouldReencrypt: options.shouldReencrypt }),
        ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
        ...(options.resumeFrom === undefined ? {} : { resumeFrom: options.resumeFrom }),
        ...(options.onProgress === undefined ? {} : { onProgress: options.onProgress }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
      }),
    );
    total =
      total === undefined
        ? checkpoint
        : {
            cursor: checkpoint.cursor,
            scanned: Math.max(total.scanned, checkpoint.scanned),
            reencrypted: total.reencrypted + checkpoint.reencrypted,
            conflicts: total.conflicts + checkpoint.conflicts,
          };
  }
  return total as ReencryptCheckpoint;
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
