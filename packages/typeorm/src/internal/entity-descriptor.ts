import {
  currentEncryptionContext,
  type EncryptionContext,
  type FieldBinding,
  ValidationError,
} from "@kms/core";
import type { EntityMetadata } from "typeorm";
import { type EncryptedColumnSpec, encryptedSpecsOf } from "../encrypted-column.ts";

/** The encryption-relevant shape of one entity, analysed once per EntityMetadata. */
export interface EntityDescriptor {
  /** The binding's model name: the entity name (the class name), as @kms/prisma's model name. */
  readonly model: string;
  readonly columns: readonly EncryptedColumnSpec[];
  readonly byProperty: ReadonlyMap<string, EncryptedColumnSpec>;
  /** Blind index property → the encrypted property it indexes. */
  readonly blindIndexes: ReadonlyMap<string, string>;
}

const descriptors = new WeakMap<EntityMetadata, EntityDescriptor | null>();

/** The descriptor of `metadata`, or undefined when the entity has no encrypted column. */
export function describe(metadata: EntityMetadata): EntityDescriptor | undefined {
  const hit = descriptors.get(metadata);
  if (hit !== undefined) return hit ?? undefined;
  const columns = encryptedSpecsOf(metadata.target);
  if (columns.length === 0) {
    descriptors.set(metadata, null);
    return undefined;
  }
  const byProperty = new Map(columns.map((c) => [c.property, c]));
  const blindIndexes = new Map<string, string>();
  for (const c of columns)
    if (c.blindIndex !== undefined) blindIndexes.set(c.blindIndex.column, c.property);
  for (const c of columns) checkContextColumns(metadata, c, byProperty, blindIndexes);
  const descriptor: EntityDescriptor = Object.freeze({
    model: metadata.name,
    columns,
    byProperty,
    blindIndexes,
  });
  descriptors.set(metadata, descriptor);
  return descriptor;
}

/**
 * Refuses a `fromRow`/`rowIdentity` name that cannot hold the context in the clear: without this
 * a typo reads `undefined` and only fails at the first write, far from the decorator. The same
 * rules as @kms/prisma's schema descriptor, so a binding means the same in both adapters.
 * @throws ValidationException naming the entity, the encrypted property and the column.
 */
function checkContextColumns(
  metadata: EntityMetadata,
  spec: EncryptedColumnSpec,
  encrypted: ReadonlyMap<string, EncryptedColumnSpec>,
  blindIndexes: ReadonlyMap<string, string>,
): void {
  const model = metadata.name;
  const allowed = `name a property declared with @Column (or @PrimaryColumn) on ${model}, not encrypted and not a blind index`;
  for (const list of ["fromRow", "rowIdentity"] as const) {
    for (const key of spec.context[list]) {
      const where = `${model}.${spec.property}: context.${list} names "${key}"`;
      const refuse = (why: string): never => {
        throw new ValidationError(`${where}, ${why}; ${allowed}`);
      };
      if (encrypted.has(key)) {
        refuse(`which is itself encrypted: values are bound to what the column holds in the clear`);
      }
      const indexed = blindIndexes.get(key);
      if (indexed !== undefined) {
        refuse(
          `which is the blind index of ${model}.${indexed}: it is computed while values are sealed, so it cannot bind them`,
        );
      }
      // Context values are read from the entity's own top-level properties: an embedded column
      // sits under its embed's property, and a relation's join column created by TypeORM
      // (virtual) has no property of its own.
      const column = metadata.columns.find(
        (c) => c.propertyPath === key && !c.isVirtual && !c.isVirtualProperty,
      );
      if (column !== undefined) continue;
      if (metadata.findRelationWithPropertyPath(key) !== undefined) {
        refuse(
          `which is a relation of ${model}, not a column: declare its join column as a @Column beside it and name that`,
        );
      }
      refuse(`which is not a column of ${model}`);
    }
  }
}

type Row = Readonly<Record<string, unknown>>;

/**
 * The binding context of `spec` for a row: `fromRow` and `rowIdentity` keys from the row (then
 * `fallback`, the stored row on updates), `fromScope` keys from the ambient scope; `override`
 * wins over both.
 * @throws ValidationException naming the missing key.
 */
export function contextFor(
  model: string,
  spec: EncryptedColumnSpec,
  row: Row | undefined,
  fallback?: Row,
  override?: EncryptionContext,
): EncryptionContext {
  const { fromRow, fromScope, rowIdentity } = spec.context;
  if (fromRow.length === 0 && fromScope.length === 0 && rowIdentity.length === 0) return EMPTY;
  const ctx: Record<string, string> = {};
  for (const keys of [fromRow, rowIdentity]) {
    for (const key of keys) {
      let value = override?.[key] ?? row?.[key];
      if (value === undefined || value === null) value = fallback?.[key];
      if (value === undefined || value === null) {
        throw new ValidationError(
          `${model}.${spec.property} is bound to ${model}.${key}: include it in the entity, the update or the lookup`,
        );
      }
      if (typeof value !== "string" && typeof value !== "number" && typeof value !== "bigint") {
        throw new ValidationError(
          `${model}.${key} must be a string or number to bind encrypted values`,
        );
      }
      ctx[key] = String(value);
    }
  }
  if (fromScope.length > 0) {
    const scope = currentEncryptionContext();
    for (const key of fromScope) {
      const value = override?.[key] ?? scope?.[key];
      if (value === undefined) {
        throw new ValidationError(
          `${model}.${spec.property} is bound to the ambient context key "${key}": run the operation inside runWithEncryptionContext`,
        );
      }
      ctx[key] = value;
    }
  }
  return ctx;
}

/** The row properties a context of `spec` is read from: `fromRow`, then `rowIdentity`. */
export function rowKeysOf(spec: EncryptedColumnSpec): readonly string[] {
  const { fromRow, rowIdentity } = spec.context;
  return rowIdentity.length === 0 ? fromRow : [...fromRow, ...rowIdentity];
}

/**
 * The binding of `property` under `context` (a `contextFor` of `spec`): without `rowIdentity`
 * the whole context chooses the data key; with it, the `keyContext` leaves the row identity out,
 * so it is bound into the value but the rows of one tenant share a data key.
 */
export function bindingFor(
  model: string,
  property: string,
  spec: EncryptedColumnSpec,
  context: EncryptionContext,
): FieldBinding {
  const { rowIdentity } = spec.context;
  if (rowIdentity.length === 0) return { model, field: property, context };
  return { model, field: property, context, keyContext: keyContextFor(spec, context) };
}

/** `context` without the `rowIdentity` pairs of `spec`: the context of its data key. */
export function keyContextFor(
  spec: EncryptedColumnSpec,
  context: EncryptionContext,
): EncryptionContext {
  const { rowIdentity } = spec.context;
  if (rowIdentity.length === 0) return context;
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(context)) {
    if (!rowIdentity.includes(key)) out[key] = value;
  }
  return out;
}

const EMPTY: EncryptionContext = Object.freeze({});
