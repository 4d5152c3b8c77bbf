import { ValidationError } from "@kms/core";
import type {
  EntityMetadata,
  InsertQueryBuilder,
  ObjectLiteral,
  UpdateQueryBuilder,
} from "typeorm";
import {
  type ColumnMetadata,
  describe,
  type EncryptedField,
  hasChildEntities,
  holderOf,
  literalDefault,
} from "./entity-descriptor.ts";
import { type SealedBinding, sealedBindingOf } from "./sealed.ts";

type Row = Record<string, unknown>;

/** Protected methods of InsertQueryBuilder: the VALUES list, the columns it writes. */
export interface InsertInternals {
  createValuesExpression(): string;
  getInsertedColumns(): ColumnMetadata[];
}

/** Protected method of UpdateQueryBuilder: the SET list. */
export interface UpdateInternals {
  createUpdateExpression(): string;
}

/** The value a statement writes is not known, or is checked elsewhere (executeWithContextGuard). */
const UNKNOWN: unique symbol = Symbol("unknown");
const UNCHECKED: unique symbol = Symbol("unchecked");

/**
 * Refuses an INSERT or UPDATE that would store a value the subscriber sealed under another
 * context than the row gets. Runs as TypeORM builds the VALUES or SET list: after every hook of
 * the write (an entity listener may have set a context column after an `await`, once the
 * values were sealed), with the columns the statement actually writes (TypeORM leaves out
 * `insert: false` and `update: false` columns, and those an insert's column list omits).
 * @throws ValidationException naming the encrypted property and the context column.
 */
export function refuseMovedContext(
  builder:
    | (InsertQueryBuilder<ObjectLiteral> & InsertInternals)
    | UpdateQueryBuilder<ObjectLiteral>,
  write: "insert" | "update",
): void {
  const alias = builder.expressionMap.mainAlias;
  if (alias === undefined || !alias.hasMetadata) return;
  const metadata = alias.metadata;
  const values: unknown = builder.expressionMap.valuesSet;
  if (values === null || typeof values !== "object") return;
  const fields = boundFieldsOf(metadata);
  if (fields.length === 0) return;
  const inserted =
    write === "insert"
      ? new Set(
          (builder as InsertQueryBuilder<ObjectLiteral> & InsertInternals).getInsertedColumns(),
        )
      : undefined;
  const columns = new Map<string, ColumnMetadata | undefined>();
  const columnOf = (key: string) => {
    if (!columns.has(key)) columns.set(key, contextColumnOf(metadata, key));
    return columns.get(key);
  };
  const written = (set: Row, key: string, binding: SealedBinding): unknown => {
    const column = columnOf(key);
    if (column === undefined) return UNKNOWN;
    if (inserted !== undefined) {
      const value = inserted.has(column) ? writtenValueOf(column, set) : undefined;
      if (value !== undefined) return value;
      // Left out of the VALUES: the row gets the column's default.
      return literalDefault(column) ?? UNKNOWN;
    }
    const value = column.isUpdate ? writtenValueOf(column, set) : undefined;
    if (value !== undefined) return value;
    // Left out of the SET: the row keeps what it holds, known for save() of a loaded row; for a
    // QueryBuilder update of an `update: false` column, executeWithContextGuard compared it.
    if (binding.stored !== undefined) return binding.stored[key];
    return column.isUpdate ? UNKNOWN : UNCHECKED;
  };
  const check = (set: Row, value: unknown): void => {
    const binding = sealedBindingOf(value);
    if (binding === undefined) return;
    for (const key of binding.column.keys) {
      const given = written(set, key, binding);
      if (given === UNCHECKED || bindsAs(binding, key, given)) continue;
      const { model, path } = binding.column;
      const relation = writingRelation(columnOf(key), set);
      if (relation !== undefined) {
        throw new ValidationError(
          `${model}.${path} was encrypted under ${model}.${key} as the entity holds it, while this ${write} stores in ${key} the key of the row the relation ${model}.${relation} names (${key} is its join column), or null: the relation was reassigned without ${key}, or a cascade from the other side moves or orphans the row; the ${write} is refused, as its values would not decrypt. Set ${key} to the new value as well (the values bound to it are then encrypted under it)`,
        );
      }
      throw new ValidationError(
        `${model}.${path} was encrypted under another ${model}.${key} than the one this ${write} stores: ${key} changed after the values were encrypted (an entity listener or subscriber that sets it after an await; set context columns before any await in @BeforeInsert/@BeforeUpdate), or the statement does not write it (insert: false, update: false, or an insert's column list without it); the ${write} is refused, as its values would not decrypt`,
      );
    }
  };
  for (const set of (Array.isArray(values) ? values : [values]) as unknown[]) {
    if (set === null || typeof set !== "object") continue;
    for (const f of fields) {
      const holder = holderOf(f, set as Row);
      if (holder === undefined) continue;
      check(set as Row, holder[f.spec.property]);
      if (f.index !== undefined) check(set as Row, holder[f.index.property]);
    }
  }
}

/**
 * The value an INSERT or UPDATE of `set` writes to `column`: its property, or, for the join
 * column of a relation declared beside it (`tenantId` beside `tenant`), what TypeORM takes from
 * the relation: the related object's key (`tenant: { id }` wins over `tenantId`), null for a
 * relation set to null or to a bare id (TypeORM writes NULL for both when the join column has a
 * property of its own). Undefined when `set` gives neither.
 */
export function writtenValueOf(column: ColumnMetadata, set: Row): unknown {
  const value = column.getEntityValue(set);
  if (value !== undefined) return value;
  const relation = column.relationMetadata;
  if (relation === undefined || relation === null) return undefined;
  return relation.getEntityValue(set) === undefined ? undefined : null;
}

/**
 * The relation property of `set` that writes the join column `column` (a relation reassigned on
 * a loaded entity, a cascade moving or orphaning a row from the other side: TypeORM's value set
 * then holds the relation, and the join column's property only as TypeORM copied it there);
 * undefined when `set` holds no such relation.
 */
export function writingRelation(column: ColumnMetadata | undefined, set: Row): string | undefined {
  const relation = column?.relationMetadata;
  if (relation === undefined || relation === null) return undefined;
  return relation.getEntityValue(set) === undefined ? undefined : relation.propertyPath;
}

/** Whether `value`, written to the context column `key`, reads back as the text bound. */
function bindsAs(binding: SealedBinding, key: string, value: unknown): boolean {
  if (typeof value !== "string" && typeof value !== "number" && typeof value !== "bigint") {
    return false;
  }
  try {
    return binding.column.formOf(key, value) === binding.context[key];
  } catch {
    return false;
  }
}

/**
 * The encrypted columns bound to row values of the entity `metadata` writes, and of its child
 * entities (single-table inheritance: a save through the parent writes a child's row).
 */
function boundFieldsOf(metadata: EntityMetadata): EncryptedField[] {
  const kinds = hasChildEntities(metadata)
    ? [metadata, ...metadata.childEntityMetadatas]
    : [metadata];
  const byPath = new Map<string, EncryptedField>();
  for (const kind of kinds) {
    for (const f of describe(kind)?.columns ?? []) {
      if (f.sealing !== undefined && !byPath.has(f.path)) byPath.set(f.path, f);
    }
  }
  return [...byPath.values()];
}

/** The column of a context property, on the entity or (single-table inheritance) a child. */
function contextColumnOf(metadata: EntityMetadata, key: string): ColumnMetadata | undefined {
  return (
    metadata.findColumnWithPropertyPath(key) ??
    metadata.childEntityMetadatas
      .map((child) => child.findColumnWithPropertyPath(key))
      .find((c) => c !== undefined)
  );
}
