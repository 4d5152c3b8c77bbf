import {
  currentEncryptionContext,
  type EncryptionContext,
  type FieldBinding,
  ValidationError,
} from "@kms/core";
import type { EntityMetadata } from "typeorm";
import { type EncryptedColumnSpec, encryptedSpecsOf } from "../encrypted-column.ts";
import { type ContextForm, contextFormOf } from "./context-forms.ts";
import { type RowBindings, rowBindingsFor } from "./row-bindings.ts";
import type { SealedColumn } from "./sealed.ts";

/** TypeORM's column metadata: the class is not exported by its entry point. */
export type ColumnMetadata = EntityMetadata["columns"][number];
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
  /**
   * What a value sealed for this column records of its binding, with the stored form of each
   * `fromRow`/`rowIdentity` value (`formOf`); undefined without row keys.
   */
  readonly sealing: SealedColumn | undefined;
  /**
   * The bindings of loaded values, shared by value, when the context is one `fromRow` column and
   * nothing else; undefined otherwise (see RowBindings).
   */
  readonly rowBindings: RowBindings | undefined;
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
  /** Every `fromRow`/`rowIdentity` property of the entity's encrypted columns. */
  readonly contextKeys: readonly string[];
  /** The context columns TypeORM leaves out of an INSERT or an UPDATE, by property. */
  readonly fixedContext: ReadonlyMap<string, FixedContextColumn>;
}

/**
 * A `fromRow`/`rowIdentity` column declared `insert: false` or `update: false`: TypeORM leaves it
 * out of the INSERT (the row gets the column's default) or of the UPDATE (the row keeps its
 * value), whatever the entity holds, so values are bound to what the row gets, not to the entity.
 */
export interface FixedContextColumn {
  readonly insert: boolean;
  readonly update: boolean;
  /** The column's default when it is a literal the row gets on INSERT; undefined otherwise. */
  readonly default: string | number | bigint | undefined;
}

const descriptors = new WeakMap<EntityMetadata, EntityDescriptor | null>();

/**
 * The descriptor of `metadata`, or undefined when the entity has no encrypted column.
 * @throws ValidationException when a context name is refused (see checkContextColumns), or the
 *   type of its column (see contextFormOf).
 */
export function describe(metadata: EntityMetadata): EntityDescriptor | undefined {
  const hit = descriptors.get(metadata);
  return hit === undefined ? analyse(metadata) : (hit ?? undefined);
}

/**
 * `describe` on a first call for `metadata`. Apart from it, which runs for every loaded entity: a
 * function holding a closure allocates the variables the closure captures on every call.
 */
function analyse(metadata: EntityMetadata): EntityDescriptor | undefined {
  const drafts = fieldsOf(metadata);
  if (drafts.length === 0) {
    descriptors.set(metadata, null);
    return undefined;
  }
  checkBindingFields(metadata, drafts);
  checkModelName(metadata);
  const draftPaths = new Map(drafts.map((f) => [f.path, f]));
  const draftIndexes = new Map<string, DraftField>();
  for (const f of drafts) if (f.index !== undefined) draftIndexes.set(f.index.path, f);
  for (const f of drafts) checkContextColumns(metadata, f, draftPaths, draftIndexes);
  const contextForms = contextFormsOf(metadata, drafts);
  const formOf = (key: string, value: string | number | bigint): string => {
    const form = contextForms.get(key);
    return form === undefined ? String(value) : form(value);
  };
  const columns: readonly EncryptedField[] = drafts.map((f) => {
    const keys = rowKeysOf(f.spec);
    const sealing =
      keys.length === 0
        ? undefined
        : Object.freeze({ model: metadata.name, path: f.path, keys, formOf });
    return Object.freeze({ ...f, sealing, rowBindings: rowBindingsFor(f.spec) });
  });
  const byPath = new Map(columns.map((f) => [f.path, f]));
  const blindIndexes = new Map<string, EncryptedField>();
  for (const f of columns) if (f.index !== undefined) blindIndexes.set(f.index.path, f);
  const contextKeys = [...new Set(columns.flatMap((f) => rowKeysOf(f.spec)))];
  const descriptor: EntityDescriptor = Object.freeze({
    model: metadata.name,
    columns,
    byPath,
    blindIndexes,
    contextKeys,
    fixedContext: fixedContextOf(metadata, contextKeys),
  });
  descriptors.set(metadata, descriptor);
  return descriptor;
}

/** The default a row gets for `column` when an INSERT leaves it out, if it is a literal. */
export function literalDefault(column: ColumnMetadata): string | number | bigint | undefined {
  const value: unknown = column.default;
  return typeof value === "string" || typeof value === "number" || typeof value === "bigint"
    ? value
    : undefined;
}

/** Whether rows of child entities share the table of `metadata` (single-table inheritance). */
export function hasChildEntities(metadata: EntityMetadata | undefined): metadata is EntityMetadata {
  return metadata?.inheritancePattern === "STI" && metadata.childEntityMetadatas.length > 0;
}

/**
 * Refuses two encrypted columns (or blind indexes) of one entity bound under the same field name:
 * an own property is bound by its name, an embedded column by its database name, so an own
 * `workStreet` and the `street` of an embedded `work` meet in `workStreet`, and a value copied
 * from one column to the other would decrypt there.
 * @throws ValidationException naming both.
 */
function checkBindingFields(metadata: EntityMetadata, drafts: readonly DraftField[]): void {
  const seen = new Map<string, string>();
  const claim = (field: string, what: string) => {
    const other = seen.get(field);
    if (other !== undefined) {
      throw new ValidationError(
        `${metadata.name}.${other} and ${metadata.name}.${what} are both bound to the field name "${field}" (an own property is bound by its name, a column of an embedded class by its database column name): values of one would decrypt (or, for a blind index, match) as the other's; rename one of them (or the embedded's prefix)`,
      );
    }
    seen.set(field, what);
  };
  for (const f of drafts) {
    claim(f.field, f.path);
    if (f.index !== undefined)
      claim(f.index.field, `${f.index.path} (the blind index of ${f.path})`);
  }
}

/**
 * Refuses an entity whose name another entity of its DataSource with encrypted columns shares
 * (two classes `Account`, one per module, on tables of their own): values are bound to the
 * entity name, not the table, so a value copied from one table to the other would decrypt there.
 * @throws ValidationException naming both tables.
 */
function checkModelName(metadata: EntityMetadata): void {
  for (const other of metadata.connection.entityMetadatas) {
    if (other === metadata || other.name !== metadata.name || other.target === metadata.target)
      continue;
    if (encryptedSpecsOf(other.target).length === 0 && !hasEmbeddedSpecs(other)) continue;
    throw new ValidationError(
      `${metadata.name} names two entities with encrypted columns (tables ${metadata.tableName} and ${other.tableName}): values are bound to the entity name, not the table, so a value copied from one table to the other would decrypt there; rename one of the classes`,
    );
  }
}

function hasEmbeddedSpecs(metadata: EntityMetadata): boolean {
  const visit = (embeddeds: readonly EmbeddedMetadata[]): boolean =>
    embeddeds.some((e) => encryptedSpecsOf(e.type).length > 0 || visit(e.embeddeds));
  return visit(metadata.embeddeds);
}

/** An EncryptedField before the entity's context columns are known. */
type DraftField = Omit<EncryptedField, "sealing" | "rowBindings">;

/** The plain column of `metadata` a context name names (checkContextColumns found it). */
function contextColumn(metadata: EntityMetadata, key: string): ColumnMetadata {
  return metadata.columns.find(
    (c) => c.propertyPath === key && !c.isVirtual && !c.isVirtualProperty,
  ) as ColumnMetadata;
}

function fixedContextOf(
  metadata: EntityMetadata,
  keys: readonly string[],
): ReadonlyMap<string, FixedContextColumn> {
  const fixed = new Map<string, FixedContextColumn>();
  for (const key of keys) {
    const column = contextColumn(metadata, key);
    if (column.isInsert && column.isUpdate) continue;
    fixed.set(
      key,
      Object.freeze({
        insert: column.isInsert,
        update: column.isUpdate,
        default: literalDefault(column),
      }),
    );
  }
  return fixed;
}

/** The entity's own encrypted columns, then those of its embeddeds, nested ones included. */
function fieldsOf(metadata: EntityMetadata): DraftField[] {
  const out: DraftField[] = [];
  for (const spec of encryptedSpecsOf(metadata.target)) {
    const column = metadata.findColumnWithPropertyPath(spec.property);
    const indexProperty = spec.blindIndex?.column;
    const index =
      indexProperty === undefined ? undefined : metadata.findColumnWithPropertyPath(indexProperty);
    out.push({
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
    });
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
): DraftField {
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
  return {
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
  };
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
  // Indexed: for…of allocated an iterator per call, and a find calls this per column per entity.
  for (let i = 0; i < names.length; i++) {
    const next = holder[names[i] as string];
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
  f: DraftField,
  encrypted: ReadonlyMap<string, DraftField>,
  blindIndexes: ReadonlyMap<string, DraftField>,
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

/**
 * The stored form of every `fromRow`/`rowIdentity` column the database rewrites, by property.
 * @throws ValidationException naming the column when its type stores values in a form that
 *   cannot be told from the value written.
 */
function contextFormsOf(
  metadata: EntityMetadata,
  fields: readonly DraftField[],
): ReadonlyMap<string, ContextForm> {
  const forms = new Map<string, ContextForm>();
  const seen = new Set<string>();
  for (const f of fields) {
    for (const list of ["fromRow", "rowIdentity"] as const) {
      for (const key of f.spec.context[list]) {
        if (seen.has(key)) continue;
        seen.add(key);
        const column = contextColumn(metadata, key);
        const form = contextFormOf(
          metadata,
          column,
          `${metadata.name}.${f.path}: context.${list} names "${key}"`,
        );
        if (form !== undefined) forms.set(key, form);
      }
    }
  }
  return forms;
}

type Row = Readonly<Record<string, unknown>>;

/**
 * The binding context of `f` for a row: `fromRow` and `rowIdentity` keys from the row (then
 * `fallback`, the stored row on updates, for a key the row leaves out), in the form the database
 * stores them (`f.sealing.formOf`); `fromScope` keys from the ambient scope; `override` wins over
 * both.
 * @throws ValidationException naming the missing or null key, or a value its column refuses.
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
      // Only a key left out falls back to the stored row: a null given is the row's new value,
      // and a value sealed under the stored one would be bound to a context the row no longer has.
      if (value === undefined) value = fallback?.[key];
      if (value === undefined) {
        throw new ValidationError(
          `${model}.${f.path} is bound to ${model}.${key}: include it in the entity, the update or the lookup`,
        );
      }
      if (value === null) {
        throw new ValidationError(
          `${model}.${f.path} is bound to ${model}.${key}, which is null: a value cannot be bound to a null context; give ${key} a value, or set ${f.path} to null`,
        );
      }
      if (typeof value !== "string" && typeof value !== "number" && typeof value !== "bigint") {
        throw new ValidationError(
          `${model}.${key} must be a string or number to bind encrypted values`,
        );
      }
      // `sealing` is set for every field with fromRow/rowIdentity keys.
      ctx[key] = f.sealing === undefined ? String(value) : f.sealing.formOf(key, value);
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

/**
 * The row whose context values a write seals under: `row` itself, but for a context column that
 * TypeORM leaves out of this statement, the value the row gets instead: on an INSERT, the
 * column's literal default (`insert: false`); on an UPDATE of a loaded row (`stored`), the stored
 * value (`update: false`). An UPDATE without the stored row (a QueryBuilder update) keeps the
 * value set, which the query guards compare with the stored one.
 * The key of an `insert: false` column without a literal default throws when a value bound to it
 * is sealed (contextFor reads it).
 */
export function writtenRow(
  d: EntityDescriptor,
  row: Row,
  stored: Row | undefined,
  write: "insert" | "update",
): Row {
  if (d.fixedContext.size === 0) return row;
  const out: Record<string, unknown> = {};
  for (const key of d.contextKeys) {
    const fixed = d.fixedContext.get(key);
    if (fixed === undefined || (write === "insert" ? fixed.insert : fixed.update)) {
      out[key] = row[key];
    } else if (write === "update") {
      out[key] = stored === undefined ? row[key] : stored[key];
    } else if (fixed.default !== undefined) {
      out[key] = fixed.default;
    } else {
      Object.defineProperty(out, key, {
        enumerable: true,
        get() {
          throw new ValidationError(
            `${d.model}.${key} is insert: false without a literal default: TypeORM leaves it out of the INSERT, so the value the row gets is not known while the values bound to it are encrypted; give the column a literal default, or insert the row without them and save() them once it exists`,
          );
        },
      });
    }
  }
  return out;
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
