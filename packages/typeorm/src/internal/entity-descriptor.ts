import {
  currentEncryptionContext,
  type EncryptionContext,
  type FieldBinding,
  ValidationError,
} from "@kms/core";
import type { EntityMetadata } from "typeorm";
import { type EncryptedColumnSpec, encryptedSpecsOf } from "../encrypted-column.ts";

// Not exported by TypeORM's entry point.
type ColumnMetadata = EntityMetadata["columns"][number];
type EmbeddedMetadata = EntityMetadata["embeddeds"][number];

/**
 * One encrypted column of an entity: its declaration, and where the entity holds its value. A
 * column declared in an embedded class (`@Column(() => Address) address`) is held by the
 * embedded object (`person.address.street`), once per embedding.
 */
export interface EncryptedField {
  readonly spec: EncryptedColumnSpec;
  /** Property path from the entity: `email`, or `address.street` in an embedded. */
  readonly path: string;
  /** Property names of the embeddeds holding the value, outermost first; empty at the top. */
  readonly embedded: readonly string[];
  /**
   * The binding's field name: the property of the entity's own columns (@kms/prisma's field
   * name), the database column name of an embedded one (`addressStreet`, as Prisma would name
   * the flattened column), which also tells apart two embeddings of one class.
   */
  readonly field: string;
  readonly databaseName: string;
  readonly index: BlindIndexField | undefined;
  /**
   * The binding of every value of a column without context (no `fromRow`, `fromScope` or
   * `rowIdentity`), built once; undefined when the binding depends on the row or the scope.
   */
  readonly binding: FieldBinding | undefined;
}

/** The blind index column of an encrypted field, in the same holder. */
export interface BlindIndexField {
  /** Its property on the holder (`spec.blindIndex.column`). */
  readonly property: string;
  readonly path: string;
  /** The binding's field name, by the same rule as the value's. */
  readonly field: string;
  readonly databaseName: string;
}

/** The encryption-relevant shape of one entity, analysed once per EntityMetadata. */
export interface EntityDescriptor {
  /** The binding's model name: the entity name (the class name), as @kms/prisma's model name. */
  readonly model: string;
  readonly columns: readonly EncryptedField[];
  /** Encrypted fields by property path (`email`, `address.street`). */
  readonly byPath: ReadonlyMap<string, EncryptedField>;
  /** Blind index property path → the field it indexes. */
  readonly blindIndexes: ReadonlyMap<string, EncryptedField>;
}

const descriptors = new WeakMap<EntityMetadata, EntityDescriptor | null>();

/**
 * The descriptor of `metadata`, or undefined when the entity has no encrypted column.
 * @throws ValidationException when a context name is refused (see checkContextColumns).
 */
export function describe(metadata: EntityMetadata): EntityDescriptor | undefined {
  const hit = descriptors.get(metadata);
  if (hit !== undefined) return hit ?? undefined;
  const columns = fieldsOf(metadata);
  if (columns.length === 0) {
    descriptors.set(metadata, null);
    return undefined;
  }
  const byPath = new Map(columns.map((f) => [f.path, f]));
  const blindIndexes = new Map<string, EncryptedField>();
  for (const f of columns) if (f.index !== undefined) blindIndexes.set(f.index.path, f);
  for (const f of columns) checkContextColumns(metadata, f, byPath, blindIndexes);
  const descriptor: EntityDescriptor = Object.freeze({
    model: metadata.name,
    columns,
    byPath,
    blindIndexes,
  });
  descriptors.set(metadata, descriptor);
  return descriptor;
}

/** The entity's own encrypted columns, then those of its embeddeds, nested ones included. */
function fieldsOf(metadata: EntityMetadata): EncryptedField[] {
  const out: EncryptedField[] = [];
  for (const spec of encryptedSpecsOf(metadata.target)) {
    const column = metadata.findColumnWithPropertyPath(spec.property);
    const indexProperty = spec.blindIndex?.column;
    const index =
      indexProperty === undefined ? undefined : metadata.findColumnWithPropertyPath(indexProperty);
    out.push(
      Object.freeze({
        spec,
        path: spec.property,
        embedded: NONE,
        field: spec.property,
        databaseName: column?.databaseName ?? spec.property,
        binding: staticBinding(metadata.name, spec.property, spec),
        index:
          indexProperty === undefined
            ? undefined
            : Object.freeze({
                property: indexProperty,
                path: indexProperty,
                field: indexProperty,
                databaseName: index?.databaseName ?? indexProperty,
              }),
      }),
    );
  }
  const visit = (embeddeds: readonly EmbeddedMetadata[]): void => {
    for (const embedded of embeddeds) {
      const specs = typeof embedded.type === "function" ? encryptedSpecsOf(embedded.type) : [];
      for (const spec of specs) out.push(embeddedField(metadata, embedded, spec));
      visit(embedded.embeddeds);
    }
  };
  visit(metadata.embeddeds);
  return out;
}

function embeddedField(
  metadata: EntityMetadata,
  embedded: EmbeddedMetadata,
  spec: EncryptedColumnSpec,
): EncryptedField {
  const where = `${metadata.name}.${embedded.propertyPath}.${spec.property}`;
  if (embedded.isArray) {
    throw new ValidationError(
      `${where} is encrypted inside an embedded array, which @kms/typeorm does not support`,
    );
  }
  const column = (property: string): ColumnMetadata => {
    const found = embedded.columns.find((c) => c.propertyName === property);
    if (found === undefined) {
      throw new ValidationError(`${where}: TypeORM has no column ${property} in the embedded`);
    }
    return found;
  };
  const value = column(spec.property);
  const index = spec.blindIndex === undefined ? undefined : column(spec.blindIndex.column);
  return Object.freeze({
    spec,
    path: value.propertyPath,
    embedded: Object.freeze([...embedded.parentPropertyNames]),
    field: value.databaseName,
    databaseName: value.databaseName,
    binding: staticBinding(metadata.name, value.databaseName, spec),
    index:
      index === undefined
        ? undefined
        : Object.freeze({
            property: index.propertyName,
            path: index.propertyPath,
            field: index.databaseName,
            databaseName: index.databaseName,
          }),
  });
}

const NONE: readonly string[] = Object.freeze([]);

function staticBinding(
  model: string,
  field: string,
  spec: EncryptedColumnSpec,
): FieldBinding | undefined {
  const { fromRow, fromScope, rowIdentity } = spec.context;
  if (fromRow.length > 0 || fromScope.length > 0 || rowIdentity.length > 0) return undefined;
  return Object.freeze({ model, field, context: EMPTY });
}

type Holder = Record<string, unknown>;

/**
 * The object holding `f`'s value in `row` (an entity, a loaded row, an update's value set): the
 * row itself, or its embedded object; undefined when an embedded object on the way is absent.
 */
export function holderOf(f: EncryptedField, row: Holder): Holder | undefined {
  return holderAt(row, f.embedded);
}

/** The object at the embedded property path `names` of `row`; undefined when one is absent. */
export function holderAt(row: Holder, names: readonly string[]): Holder | undefined {
  let holder = row;
  for (const name of names) {
    const next = holder[name];
    if (next === null || typeof next !== "object") return undefined;
    holder = next as Holder;
  }
  return holder;
}

/** One encrypted column of a row as read by `readFields`. */
export interface FieldRead {
  readonly f: EncryptedField;
  /** The object holding the value; undefined when an embedded object on the way is absent. */
  readonly holder: Holder | undefined;
  readonly value: unknown;
  /** The blind index; undefined when `f` has none. */
  readonly index: unknown;
}

/**
 * Every encrypted column of `row` (and its blind index), each property read once: a getter or
 * proxy could return another value on a second read, and a write must check, seal and
 * remember one and the same value.
 */
export function readFields(d: EntityDescriptor, row: Holder): FieldRead[] {
  const out: FieldRead[] = [];
  for (const f of d.columns) {
    const holder = holderOf(f, row);
    out.push({
      f,
      holder,
      value: holder?.[f.spec.property],
      index: f.index === undefined ? undefined : holder?.[f.index.property],
    });
  }
  return out;
}

/** `f`'s value in `row`; undefined when it or its embedded object is absent. */
export function valueIn(f: EncryptedField, row: Holder): unknown {
  return holderOf(f, row)?.[f.spec.property];
}

/** `f`'s blind index in `row`; undefined when it or its embedded object is absent. */
export function indexIn(f: EncryptedField, row: Holder): unknown {
  return f.index === undefined ? undefined : holderOf(f, row)?.[f.index.property];
}

/**
 * Refuses a `fromRow`/`rowIdentity` name that cannot hold the context in the clear: without this
 * a typo reads `undefined` and only fails at the first write, far from the decorator. The same
 * rules as @kms/prisma's schema descriptor, so a binding means the same in both adapters. The
 * names of a column in an embedded class are read from the entity too (the row), not from the
 * embedded object.
 * @throws ValidationException naming the entity, the encrypted property and the column.
 */
function checkContextColumns(
  metadata: EntityMetadata,
  f: EncryptedField,
  encrypted: ReadonlyMap<string, EncryptedField>,
  blindIndexes: ReadonlyMap<string, EncryptedField>,
): void {
  const model = metadata.name;
  const allowed = `name a property declared with @Column (or @PrimaryColumn) on ${model}, not encrypted and not a blind index`;
  for (const list of ["fromRow", "rowIdentity"] as const) {
    for (const key of f.spec.context[list]) {
      const where = `${model}.${f.path}: context.${list} names "${key}"`;
      const refuse = (why: string): never => {
        throw new ValidationError(`${where}, ${why}; ${allowed}`);
      };
      if (encrypted.has(key)) {
        refuse(`which is itself encrypted: values are bound to what the column holds in the clear`);
      }
      const indexed = blindIndexes.get(key);
      if (indexed !== undefined) {
        refuse(
          `which is the blind index of ${model}.${indexed.path}: it is computed while values are sealed, so it cannot bind them`,
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
      if (f.embedded.length > 0) {
        refuse(
          `which is not a column of ${model} (the context of a column in an embedded class is read from the entity's own columns, not from the embedded object)`,
        );
      }
      refuse(`which is not a column of ${model}`);
    }
  }
}

type Row = Readonly<Record<string, unknown>>;

/**
 * The binding context of `f` for a row: `fromRow` and `rowIdentity` keys from the row (then
 * `fallback`, the stored row on updates), `fromScope` keys from the ambient scope; `override`
 * wins over both.
 * @throws ValidationException naming the missing key.
 */
export function contextFor(
  model: string,
  f: EncryptedField,
  row: Row | undefined,
  fallback?: Row,
  override?: EncryptionContext,
): EncryptionContext {
  const { fromRow, fromScope, rowIdentity } = f.spec.context;
  if (fromRow.length === 0 && fromScope.length === 0 && rowIdentity.length === 0) return EMPTY;
  const ctx: Record<string, string> = {};
  for (const keys of [fromRow, rowIdentity]) {
    for (const key of keys) {
      let value = override?.[key] ?? row?.[key];
      if (value === undefined || value === null) value = fallback?.[key];
      if (value === undefined || value === null) {
        throw new ValidationError(
          `${model}.${f.path} is bound to ${model}.${key}: include it in the entity, the update or the lookup`,
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
          `${model}.${f.path} is bound to the ambient context key "${key}": run the operation inside runWithEncryptionContext`,
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
 * The binding of `field` (an EncryptedField's `field`, or its index's) under `context` (a
 * `contextFor` of `spec`): without `rowIdentity` the whole context chooses the data key; with
 * it, the `keyContext` leaves the row identity out, so it is bound into the value but the rows
 * of one tenant share a data key.
 */
export function bindingFor(
  model: string,
  field: string,
  spec: EncryptedColumnSpec,
  context: EncryptionContext,
): FieldBinding {
  const { rowIdentity } = spec.context;
  if (rowIdentity.length === 0) return { model, field, context };
  return { model, field, context, keyContext: keyContextFor(spec, context) };
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
