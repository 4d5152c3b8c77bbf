import { ValidationError } from "@kms/core";
import {
  type EntityMetadata,
  FindOperator,
  InsertQueryBuilder,
  type ObjectLiteral,
  SelectQueryBuilder,
  UpdateQueryBuilder,
  type UpdateResult,
  type ValueTransformer,
} from "typeorm";
import { EncryptedColumnTransformer } from "../encrypted-column.ts";
import { describe, type EntityDescriptor } from "./entity-descriptor.ts";

// Three TypeORM code paths decide what reaches the database before any subscriber hook runs,
// and no hook sees their inputs: a `Raw` find operator hands its parameters to the query
// without ever calling the column's transformer; `upsert` fixes its ON CONFLICT update list
// before beforeInsert computes blind indexes; an UPDATE's where is out of beforeUpdate's
// reach. The guards below wrap those three methods. Each acts only when an encrypted column
// is involved and otherwise calls TypeORM's own method unchanged.

const INSTALLED = Symbol.for("@kms/typeorm.queryGuards");

/** Installs the guards once per TypeORM module instance (idempotent). */
export function installQueryGuards(): void {
  const marker = FindOperator as unknown as Record<symbol, boolean>;
  if (marker[INSTALLED] === true) return;
  const findOperator = FindOperator.prototype;
  const insertBuilder = InsertQueryBuilder.prototype;
  const updateBuilder = UpdateQueryBuilder.prototype;
  // A TypeORM release that renames these would otherwise switch a guard off in silence.
  for (const [owner, name] of [
    [findOperator, "transformValue"],
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
  updateBuilder.execute = async function guardedExecute(
    this: UpdateQueryBuilder<ObjectLiteral>,
  ): Promise<UpdateResult> {
    await refuseStrandedContext(this);
    return execute.call(this);
  };
}

/**
 * `Raw` on an encrypted column: its SQL and parameters are the caller's, sent as given, and a
 * comparison with ciphertext cannot be written by hand anyway.
 */
function refuseRaw(transformer: ValueTransformer | ValueTransformer[]): void {
  const list = Array.isArray(transformer) ? transformer : [transformer];
  for (const t of list) {
    if (t instanceof EncryptedColumnTransformer) {
      throw new ValidationError(
        `${t.model}.${t.property} is encrypted: Raw() would send its SQL and parameters as plaintext; look values up with encryptedWhere() (or compare encryptedParameter() in a QueryBuilder condition)`,
      );
    }
  }
}

function databaseName(metadata: EntityMetadata, property: string): string | undefined {
  return metadata.findColumnWithPropertyName(property)?.databaseName;
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
  // A conflict column holds the same value in the old row and the new one.
  const conflict = Array.isArray(onUpdate.conflict) ? onUpdate.conflict : [];
  const stranded = new Map<string, string[]>();
  for (const spec of d.columns) {
    const column = databaseName(metadata, spec.property);
    if (column !== undefined && overwrite.includes(column)) {
      const index =
        spec.blindIndex === undefined ? undefined : databaseName(metadata, spec.blindIndex.column);
      if (index !== undefined && !overwrite.includes(index)) overwrite.push(index);
      continue;
    }
    for (const key of spec.context.fromRow) {
      const keyColumn = databaseName(metadata, key);
      if (keyColumn === undefined || !overwrite.includes(keyColumn) || conflict.includes(keyColumn))
        continue;
      stranded.set(key, [...(stranded.get(key) ?? []), spec.property]);
    }
  }
  if (stranded.size > 0) throw strandedError(d, stranded, "upsert");
  onUpdate.overwrite = overwrite;
}

/**
 * An UPDATE that sets a `fromRow` context column without the encrypted columns it binds:
 * allowed only while no row it matches holds one of those columns under another value (the
 * usual `update(id, { tenantId, email })`, where the tenant is there to seal the email). One
 * SELECT with the update's own where tells; it runs on the update's query runner, inside its
 * transaction when there is one.
 */
async function refuseStrandedContext(builder: UpdateQueryBuilder<ObjectLiteral>): Promise<void> {
  const found = descriptorOf(builder);
  if (found === undefined) return;
  const { metadata, d } = found;
  const values: unknown = builder.expressionMap.valuesSet;
  if (values === null || typeof values !== "object") return;
  const set = values as Record<string, unknown>;
  const stranded = new Map<string, string[]>();
  for (const spec of d.columns) {
    if (set[spec.property] !== undefined) continue;
    for (const key of spec.context.fromRow) {
      if (set[key] === undefined) continue;
      stranded.set(key, [...(stranded.get(key) ?? []), spec.property]);
    }
  }
  if (stranded.size === 0) return;
  const probe = selectWhere(builder).select("1", "kms_stranded").limit(1);
  const changed: string[] = [];
  let n = 0;
  for (const [key, properties] of stranded) {
    const value = set[key];
    // A SQL expression (`() => "…"`) gives no value to compare before the update runs.
    if (typeof value === "function") throw strandedError(d, new Map([[key, properties]]), "update");
    const keyColumn = builder.escape(databaseName(metadata, key) ?? key);
    const held = properties
      .map((p) => `${builder.escape(databaseName(metadata, p) ?? p)} IS NOT NULL`)
      .join(" OR ");
    const parameter = `kms_context_${n++}`;
    const differs =
      value === null
        ? `${keyColumn} IS NOT NULL`
        : `(${keyColumn} IS NULL OR ${keyColumn} <> :${parameter})`;
    if (value !== null) probe.setParameter(parameter, value);
    changed.push(`(${differs} AND (${held}))`);
  }
  probe.andWhere(`(${changed.join(" OR ")})`);
  if ((await probe.getRawOne()) !== undefined) throw strandedError(d, stranded, "update");
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
  operation: "update" | "upsert",
): ValidationError {
  const [key, properties] = [...stranded][0] as [string, readonly string[]];
  const bound = [...new Set(properties)].map((p) => `${d.model}.${p}`).join(", ");
  const remedy =
    operation === "upsert"
      ? `give them in every upserted entity, or make ${key} a conflict path`
      : `load the entity and save() it with the new value, or set them in the same update`;
  return new ValidationError(
    `${d.model}.${key} is part of the encryption context of ${bound}: an ${operation} that changes it must write them too (${remedy}); their stored values would stop decrypting`,
  );
}
