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
  /** The stored form of each `fromRow`/`rowIdentity` value the database rewrites, by property. */
  readonly contextForms: ReadonlyMap<string, ContextForm>;
}

/**
 * The text a context column gives back once the database has stored `value`, where that differs
 * from `String(value)`: a value is bound as written and opened as read, so both must be the text
 * the database holds.
 * @throws ValidationException when the database would store the value in a form not known here.
 */
export type ContextForm = (value: string | number | bigint) => string;

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
 * @throws ValidationException when a context name is refused (see checkContextColumns), or the
 *   type of its column (see contextFormOf).
 */
export function describe(metadata: EntityMetadata): EntityDescriptor | undefined {
  const hit = descriptors.get(metadata);
  if (hit !== undefined) return hit ?? undefined;
  const drafts = fieldsOf(metadata);
  if (drafts.length === 0) {
    descriptors.set(metadata, null);
    return undefined;
  }
  const draftPaths = new Map(drafts.map((f) => [f.path, f]));
  const draftIndexes = new Map<string, DraftField>();
  for (const f of drafts) if (f.index !== undefined) draftIndexes.set(f.index.path, f);
  for (const f of drafts) checkContextColumns(metadata, f, draftPaths, draftIndexes);
  const contextForms = contextFormsOf(metadata, drafts);
  const columns: readonly EncryptedField[] = drafts.map((f) =>
    Object.freeze({ ...f, contextForms }),
  );
  const byPath = new Map(columns.map((f) => [f.path, f]));
  const blindIndexes = new Map<string, EncryptedField>();
  for (const f of columns) if (f.index !== undefined) blindIndexes.set(f.index.path, f);
  const descriptor: EntityDescriptor = Object.freeze({
    model: metadata.name,
    columns,
    byPath,
    blindIndexes,
  });
  descriptors.set(metadata, descriptor);
  return descriptor;
}

/** An EncryptedField before the entity's context columns are known. */
type DraftField = Omit<EncryptedField, "contextForms">;

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
        // checkContextColumns found it.
        const column = metadata.columns.find(
          (c) => c.propertyPath === key && !c.isVirtual && !c.isVirtualProperty,
        ) as ColumnMetadata;
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

/** Column types whose stored text is the database's own: scale, exponent, rounding, time zone. */
const REWRITTEN_TYPES = new Set([
  "decimal",
  "numeric",
  "dec",
  "fixed",
  "money",
  "float",
  "float4",
  "float8",
  "double",
  "double precision",
  "real",
  "date",
  "time",
  "time without time zone",
  "time with time zone",
  "timetz",
  "datetime",
  "timestamp",
  "timestamp without time zone",
  "timestamp with time zone",
  "timestamptz",
  "interval",
  "year",
]);

const INTEGER_TYPES = new Set([
  "int",
  "integer",
  "int2",
  "int4",
  "int8",
  "tinyint",
  "smallint",
  "mediumint",
  "bigint",
]);

const FIXED_LENGTH_TYPES = new Set(["char", "character", "nchar", "bpchar"]);

/**
 * How `column` stores a context value, where the database rewrites the text it is given:
 * undefined when it keeps it as written.
 * @throws ValidationException when no form can be told (decimal, floating-point, temporal types).
 */
function contextFormOf(
  metadata: EntityMetadata,
  column: ColumnMetadata,
  where: string,
): ContextForm | undefined {
  const { driver, options } = metadata.connection;
  const type = String(driver.normalizeType(column)).toLowerCase();
  if (REWRITTEN_TYPES.has(type)) {
    throw new ValidationError(
      `${where}, a ${type} column: the database stores such values in a form of its own (scale, exponent, rounding, time zone), which a value bound as written would not match once read back; bind a string or integer column`,
    );
  }
  const name = `${metadata.name}.${column.propertyPath}`;
  if (INTEGER_TYPES.has(type)) return (value) => integerForm(name, value);
  // PostgreSQL's uuid type, and MariaDB's from 10.7 (TypeORM's "uuid" is a varchar elsewhere),
  // take any case and give back lowercase.
  if (type === "uuid") return uuidForm;
  if (FIXED_LENGTH_TYPES.has(type)) {
    // PostgreSQL pads char(n) with spaces and gives the padding back; MariaDB and MySQL pad it
    // and strip trailing spaces on the way out; SQLite keeps the text as written.
    if (options.type === "postgres" || options.type === "cockroachdb") {
      const length = Number(column.length) || 1;
      return (value) => padded(String(value), length);
    }
    if (options.type === "mariadb" || options.type === "mysql" || options.type === "aurora-mysql") {
      return (value) => String(value).replace(/ +$/u, "");
    }
  }
  return undefined;
}

/**
 * An integer as the database gives it back: leading zeros and `-0` dropped.
 * @throws ValidationException for anything but an integer.
 */
function integerForm(name: string, value: string | number | bigint): string {
  if (typeof value === "bigint") return value.toString();
  const text = String(value);
  // A number's text is what the driver sends; 1e21 or 1.5 would be stored as another integer.
  if ((typeof value === "string" || Number.isInteger(value)) && /^-?[0-9]+$/u.test(text)) {
    return BigInt(text).toString();
  }
  throw new ValidationError(
    `${name} is an integer column bound into encrypted values: give it an integer (a number, a bigint or a string of decimal digits), which is what the database gives back`,
  );
}

/** A UUID as PostgreSQL and MariaDB give it back: lowercase, 8-4-4-4-12 (other text as is). */
function uuidForm(value: string | number | bigint): string {
  const text = String(value);
  const hex = text.replace(/^\{(.*)\}$/su, "$1").replaceAll("-", "");
  if (!/^[0-9a-f]{32}$/iu.test(hex)) return text;
  const h = hex.toLowerCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** PostgreSQL's char(n): trailing spaces are not significant, and it gives back n characters. */
function padded(text: string, length: number): string {
  const trimmed = text.replace(/ +$/u, "");
  const characters = [...trimmed].length;
  return characters >= length ? trimmed : trimmed + " ".repeat(length - characters);
}

type Row = Readonly<Record<string, unknown>>;

/**
 * The binding context of `f` for a row: `fromRow` and `rowIdentity` keys from the row (then
 * `fallback`, the stored row on updates, for a key the row leaves out), in the form the database
 * stores them (`f.contextForms`); `fromScope` keys from the ambient scope; `override` wins over
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
      const form = f.contextForms.get(key);
      ctx[key] = form === undefined ? String(value) : form(value);
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
