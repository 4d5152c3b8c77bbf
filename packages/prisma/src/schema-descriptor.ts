import {
  DETERMINISTIC_OVERHEAD,
  FIELD_TEXT_PREFIX,
  FIELD_VALUE_TYPES,
  type FieldValueType,
  RANDOMIZED_OVERHEAD,
  ValidationError,
} from "@kms/core";
import type { TypedSchemaDescriptor } from "./field-types.ts";
import { readSchemaText } from "./internal/schema-text.ts";

/**
 * The encryption-relevant shape of a Prisma schema, analysed once into an immutable
 * descriptor: which fields are encrypted and how, which columns hold blind indexes, where each
 * model's encryption context comes from, and the relations needed to walk nested writes and
 * results. Built from the schema file's `///` annotations (`parseSchema`) or from typed
 * configuration in code (`defineModels`) — never from Prisma's internal runtime DMMF.
 */
export interface EncryptedFieldDescriptor {
  readonly mode: "randomized" | "deterministic";
  /** Declared JS type of the value (default: string for String columns, bytes for Bytes). */
  readonly type: FieldValueType;
  /** How the column stores ciphertext: String columns hold `kms1:…` text. */
  readonly storage: "text" | "bytes";
  /**
   * Context this field adds to its model's (`@kms.context(recordId)` on the field): its values
   * are bound to the model's pairs plus these. Empty lists when it adds none; fields adding the
   * same keys share one object.
   */
  readonly context: ModelContextDescriptor;
}

export interface BlindIndexDescriptor {
  /** The encrypted field this column indexes. */
  readonly of: string;
  readonly bytes: number;
  readonly normalize: readonly ("lowercase" | "trim" | "nfkc")[];
  /**
   * The declared type of `of`, which the engine's `blindIndex` reads: each form of a value
   * (a decimal as `"1.5"`, `1.5` or `Prisma.Decimal`) gives one index (FORMAT §6.5).
   */
  readonly type: FieldValueType;
}

export interface ModelContextDescriptor {
  /** Context keys read from the row's own columns (same name). */
  readonly fromRow: readonly string[];
  /** Context keys read from the ambient scope (`runWithEncryptionContext`). */
  readonly fromScope: readonly string[];
}

export interface ModelDescriptor {
  readonly name: string;
  readonly encrypted: Readonly<Record<string, EncryptedFieldDescriptor>>;
  /** Blind index column → its spec. */
  readonly blindIndexes: Readonly<Record<string, BlindIndexDescriptor>>;
  /** Relation field → target model name. */
  readonly relations: Readonly<Record<string, string>>;
  /**
   * Relation field → the columns of this model that hold its foreign key (`@relation(fields:
   * […])`), for the relations that have one on this side. Writing such a relation (`connect`…)
   * writes those columns.
   */
  readonly foreignKeys: Readonly<Record<string, readonly string[]>>;
  /**
   * Relation field → the name of its relation (`@relation("Watchers")`, by default the two model
   * names in alphabetical order joined by "To": `InvoiceToTenant`), which the field on the other
   * side shares. It tells which relation back holds the foreign key a write on this side sets;
   * a relation without one is paired with any relation back to its model.
   */
  readonly links: Readonly<Record<string, string>>;
  readonly context: ModelContextDescriptor;
  /** Every column some value is bound to: the model's `fromRow`, then the fields' own. */
  readonly contextColumns: readonly string[];
  /** Keys of `encrypted`, `relations` and `blindIndexes`, precomputed for the per-row paths. */
  readonly encryptedNames: readonly string[];
  readonly relationNames: readonly string[];
  readonly blindIndexNames: readonly string[];
  /**
   * Encrypted field → its blind index columns with their specs, in `blindIndexes` order (an
   * empty list for a field without one): what a write or a lookup of the field computes.
   */
  readonly indexesOf: Readonly<
    Record<string, readonly (readonly [column: string, index: BlindIndexDescriptor])[]>
  >;
  /**
   * The relations whose foreign key (`foreignKeys`) holds columns that values are bound to, in
   * `foreignKeys` order: a relation write there (`tenant: { connect }`) rebinds those values.
   */
  readonly boundForeignKeys: readonly BoundForeignKeyDescriptor[];
  /**
   * The native types (`@db.Char(8)`) of the columns this model's encryption names, where the
   * schema gives them; absent when none has one, and from descriptors written by generators
   * that did not record them (whose columns' native types are then not checked).
   */
  readonly nativeTypes?: NativeTypesDescriptor;
}

/**
 * Native database types of columns, with the datasource provider that gives them their
 * meaning (`@db.Float` is single precision on MySQL, double on SQL Server). Some change what a
 * column reads back, and `checkColumnTypes` refuses those where values depend on it; a UUID
 * context column's values are checked when written or looked up (`contextSpellings`).
 */
export interface NativeTypesDescriptor {
  /** The datasource's provider (`postgresql`, `mysql`, `sqlserver`, `cockroachdb`…), if known. */
  readonly provider?: string;
  /**
   * The datasource's name (`pg` in `datasource pg { … }`), which its native type attributes
   * start with (`@pg.VarChar(255)`), for messages; `db` when not given.
   */
  readonly datasource?: string;
  /**
   * Column → its native type as written after `@db.` (the datasource's name), arguments
   * separated by ", ", as Prisma's DMMF gives them: `Char(8)`, `Real`, `VarChar(255)`,
   * `Decimal(10, 2)`.
   */
  readonly columns: Readonly<Record<string, string>>;
}

export interface BoundForeignKeyDescriptor {
  readonly relation: string;
  /** The columns of the relation's foreign key that some encrypted value is bound to. */
  readonly columns: readonly string[];
  /** The encrypted fields whose values are bound to one of `columns`. */
  readonly fields: readonly string[];
}

export type SchemaDescriptor = Readonly<Record<string, ModelDescriptor>>;

/** Typed configuration equivalent to the schema annotations. */
export interface ModelConfig {
  readonly encrypted?: Readonly<
    Record<
      string,
      {
        readonly mode?: "randomized" | "deterministic";
        readonly type?: FieldValueType;
        readonly storage?: "text" | "bytes";
        /**
         * The column is optional (`String?`). Read only by the type level: with a declared
         * `type`, results are typed `T | null` instead of `T`.
         */
        readonly optional?: boolean;
        /**
         * Context added to the model's for this field alone: `{ fromRow: ["recordId"] }` binds
         * its values to their row, which the model's context (shared with lookup fields) cannot.
         */
        readonly context?: Partial<ModelContextDescriptor>;
      }
    >
  >;
  readonly blindIndexes?: Readonly<
    Record<
      string,
      {
        readonly of: string;
        readonly bytes?: number;
        readonly normalize?: readonly ("lowercase" | "trim" | "nfkc")[];
      }
    >
  >;
  /**
   * Relation field → the model it leads to. The extension follows listed relations only, and
   * refuses a query through any other one (an include, a relation filter, a nested write): list
   * every relation queries go through, also on models without encrypted fields.
   */
  readonly relations?: Readonly<Record<string, string>>;
  /**
   * Relation field (one of `relations`) → the columns of this model its `@relation(fields: […])`
   * names. Needed where a context column is also a foreign key: a relation write that changes
   * it (`tenant: { connect }`) is then refused, as it would orphan the values bound to it.
   */
  readonly foreignKeys?: Readonly<Record<string, readonly string[]>>;
  /**
   * Relation field (one of `relations`) → the name of its relation, the same on both sides
   * (`@relation("Watchers")`, by default the two model names in alphabetical order joined by
   * "To"). Pairs a relation with the one back: without it, a write through a relation whose
   * foreign key is on the other side is checked against every relation back to this model, so
   * with a second relation between the two models (an implicit many-to-many beside a foreign
   * key that is a context column) a write through either is refused.
   */
  readonly links?: Readonly<Record<string, string>>;
  readonly context?: Partial<ModelContextDescriptor>;
  /**
   * The native types (`@db.VarChar(255)`) of the columns named above, which schema text and the
   * `kms-prisma-types` generator record: a column whose native type changes what it reads back
   * (`@db.Char(n)` context or ciphertext columns on PostgreSQL, `@db.Real` context columns) or
   * cannot hold even the shortest value is then refused when the extension is applied.
   */
  readonly nativeTypes?: NativeTypesDescriptor;
}

/**
 * The generated client's `Prisma` namespace (`import { Prisma } from "./generated/prisma/client"`,
 * or `…/browser`). Of it only `ModelName` and the `<Model>ScalarFieldEnum` objects are read: the
 * public generated values that list the models and each model's scalar fields at runtime.
 */
export interface GeneratedPrismaNamespace {
  readonly ModelName: Readonly<Record<string, string>>;
}

export interface DefineModelsOptions {
  /**
   * Check the configuration against the generated client when it is defined, as schema text is
   * checked when it is loaded: every model must be one of the client's, and every encrypted
   * field, blind index column, context column (`context.fromRow`, the model's or a field's) and
   * foreign key column one of its model's scalar fields; a relation must name a model. The
   * namespace lists no types: column types are checked when the extension is applied.
   */
  readonly checkAgainst?: GeneratedPrismaNamespace;
  /**
   * Every relation of every model is in `relations` (the `kms-prisma-types` generator's module
   * says so; schema text always does). A query then names a field that is neither a column nor
   * a listed relation only for a result field of another extension (`$extends({ result })`),
   * which the extension lets through. Otherwise such a field might be a relation left out, and
   * a query naming it is refused.
   */
  readonly listsEveryRelation?: boolean;
}

/** Models of descriptors that list every relation (`DefineModelsOptions.listsEveryRelation`). */
const LISTING_EVERY_RELATION = new WeakSet<ModelDescriptor>();

/**
 * Whether `model` comes from a descriptor that lists every relation (schema text, the
 * generator's module): a field it lists neither as a relation nor among the client's columns is
 * then no relation.
 */
export function listsEveryRelation(model: ModelDescriptor): boolean {
  return LISTING_EVERY_RELATION.has(model);
}

/** Each model's scalar fields (its columns), by model name. */
export type ModelColumns = ReadonlyMap<string, ReadonlySet<string>>;

const NORMALIZATIONS = ["lowercase", "trim", "nfkc"] as const;

const NO_CONTEXT: ModelContextDescriptor = Object.freeze({
  fromRow: Object.freeze([]),
  fromScope: Object.freeze([]),
});

function fail(where: string, rule: string): never {
  throw new ValidationError(`${where}: ${rule}`);
}

function contextKeys(where: string, name: string, keys: unknown): readonly string[] {
  if (keys === undefined) return [];
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === "string" && k !== "")) {
    fail(where, `${name} must be a list of non-empty column or key names`);
  }
  return keys as string[];
}

type EncryptedConfig = NonNullable<ModelConfig["encrypted"]>[string];
type BlindIndexConfig = NonNullable<ModelConfig["blindIndexes"]>[string];

/** A field's declared type for the type map, when it differs from what Prisma generates. */
type DeclaredSpec<F> = F extends { readonly type: infer T extends FieldValueType }
  ? FieldValueType extends T
    ? never // not a literal: nothing to say about the column
    : T extends (F extends { readonly storage: "bytes" } ? "bytes" : "string")
      ? never // the column's own type already
      : F extends { readonly optional: true }
        ? `${T}?`
        : T
  : never;

/**
 * The field type map of a typed configuration: every encrypted field with a declared `type`
 * other than its column's own (String → string, Bytes → bytes).
 */
export type FieldTypesOf<Models> = {
  -readonly [M in keyof Models]: Models[M] extends { readonly encrypted: infer E }
    ? {
        -readonly [F in keyof E as [DeclaredSpec<E[F]>] extends [never] ? never : F]: DeclaredSpec<
          E[F]
        >;
      }
    : // biome-ignore lint/complexity/noBannedTypes: a model without encrypted fields maps nothing.
      {};
};

/**
 * Builds a descriptor from typed configuration. Its type carries the configuration's field type
 * map (`FieldTypesOf`), so passing it as `schema` types the extended client's results.
 * With `{ checkAgainst: Prisma }` (the generated client's namespace) it also refuses what schema
 * text refuses when loaded: an unknown model, or a column that is not a scalar field of its model.
 * @throws ValidationException when a type, mode, normalization or blind index source is invalid,
 *   when a context column is itself encrypted, when a foreign key's relation is not in
 *   `relations`, or (with `checkAgainst`) when a model or column is not in the generated client.
 */
export function defineModels<const Models extends Readonly<Record<string, ModelConfig>>>(
  models: Models,
  options?: DefineModelsOptions,
): TypedSchemaDescriptor<FieldTypesOf<Models>> {
  // Read before building, so a malformed namespace is named even when the models are fine.
  const columns = namespaceColumns(options);
  const out: Record<string, ModelDescriptor> = {};
  for (const [name, config] of Object.entries(models)) {
    const modelContext = Object.freeze({
      fromRow: Object.freeze([
        ...contextKeys(`model "${name}"`, "context.fromRow", config.context?.fromRow),
      ]),
      fromScope: Object.freeze([
        ...contextKeys(`model "${name}"`, "context.fromScope", config.context?.fromScope),
      ]),
    });
    // Fields adding the same keys share one descriptor, so a result row builds their context
    // once for all of them.
    const fieldContexts = new Map<string, ModelContextDescriptor>();
    const encrypted: Record<string, EncryptedFieldDescriptor> = {};
    const fields: Readonly<Record<string, EncryptedConfig>> = config.encrypted ?? {};
    for (const [field, spec] of Object.entries(fields)) {
      const where = `model "${name}" field "${field}"`;
      const mode = spec.mode ?? "randomized";
      if (mode !== "randomized" && mode !== "deterministic") {
        fail(where, `mode must be randomized or deterministic`);
      }
      const storage = spec.storage ?? "text";
      if (storage !== "text" && storage !== "bytes") fail(where, `storage must be text or bytes`);
      const type = spec.type ?? (storage === "bytes" ? "bytes" : "string");
      if (!FIELD_VALUE_TYPES.includes(type)) {
        fail(where, `type must be one of ${FIELD_VALUE_TYPES.join(", ")}`);
      }
      if (spec.optional !== undefined && typeof spec.optional !== "boolean") {
        fail(where, `optional must be a boolean`);
      }
      const context = fieldContext(where, modelContext, spec.context, fieldContexts);
      encrypted[field] = Object.freeze({ mode, type, storage, context });
    }
    const contextColumns = [...modelContext.fromRow];
    for (const spec of Object.values(encrypted)) {
      for (const key of spec.context.fromRow) {
        if (!contextColumns.includes(key)) contextColumns.push(key);
      }
    }
    for (const column of contextColumns) {
      if (encrypted[column] !== undefined) {
        fail(
          `model "${name}"`,
          `context column "${column}" is itself encrypted: values are bound to what the column holds in the clear`,
        );
      }
    }
    const blindIndexes: Record<string, BlindIndexDescriptor> = {};
    for (const [column, spec] of Object.entries(config.blindIndexes ?? {})) {
      const where = `model "${name}" blind index "${column}"`;
      const source = encrypted[spec.of];
      if (source === undefined) fail(where, `"of" must name an encrypted field`);
      const bytes = spec.bytes ?? 16;
      if (!Number.isInteger(bytes) || bytes < 4 || bytes > 32) {
        fail(where, `bytes must be an integer 4–32`);
      }
      for (const n of spec.normalize ?? []) {
        if (!NORMALIZATIONS.includes(n)) fail(where, `normalize must be of lowercase, trim, nfkc`);
      }
      blindIndexes[column] = Object.freeze({
        of: spec.of,
        bytes,
        normalize: Object.freeze([...(spec.normalize ?? [])]),
        type: source.type,
      });
    }
    const foreignKeys: Record<string, readonly string[]> = {};
    for (const [relation, columns] of Object.entries(config.foreignKeys ?? {})) {
      const where = `model "${name}" relation "${relation}"`;
      if (config.relations?.[relation] === undefined) {
        fail(where, `a foreign key needs the relation in "relations"`);
      }
      foreignKeys[relation] = Object.freeze([...contextKeys(where, "foreignKeys", columns)]);
    }
    const links: Record<string, string> = {};
    for (const [relation, link] of Object.entries(config.links ?? {})) {
      const where = `model "${name}" relation "${relation}"`;
      if (config.relations?.[relation] === undefined) {
        fail(where, `a link needs the relation in "relations"`);
      }
      if (typeof link !== "string" || link === "") fail(where, `links must name relations`);
      links[relation] = link;
    }
    // What writes and lookups would otherwise derive from the model on every call.
    const indexesOf: Record<string, (readonly [string, BlindIndexDescriptor])[]> = {};
    for (const field of Object.keys(encrypted)) indexesOf[field] = [];
    for (const [column, index] of Object.entries(blindIndexes)) {
      indexesOf[index.of]?.push(Object.freeze([column, index] as const));
    }
    const bindings = { encrypted, context: modelContext, contextColumns };
    const boundForeignKeys: BoundForeignKeyDescriptor[] = [];
    for (const [relation, foreignKey] of Object.entries(foreignKeys)) {
      const bound = boundColumns(bindings, foreignKey);
      if (bound.length === 0) continue;
      boundForeignKeys.push(
        Object.freeze({
          relation,
          columns: Object.freeze(bound),
          fields: Object.freeze(fieldsBoundTo(bindings, bound)),
        }),
      );
    }
    const nativeTypes = nativeTypesOf(`model "${name}"`, config.nativeTypes);
    out[name] = Object.freeze({
      name,
      encrypted: Object.freeze(encrypted),
      blindIndexes: Object.freeze(blindIndexes),
      relations: Object.freeze({ ...(config.relations ?? {}) }),
      foreignKeys: Object.freeze(foreignKeys),
      links: Object.freeze(links),
      encryptedNames: Object.freeze(Object.keys(encrypted)),
      relationNames: Object.freeze(Object.keys(config.relations ?? {})),
      blindIndexNames: Object.freeze(Object.keys(blindIndexes)),
      indexesOf: Object.freeze(
        Object.fromEntries(Object.entries(indexesOf).map(([f, list]) => [f, Object.freeze(list)])),
      ),
      boundForeignKeys: Object.freeze(boundForeignKeys),
      context: modelContext,
      contextColumns: Object.freeze(contextColumns),
      ...(nativeTypes === undefined ? {} : { nativeTypes }),
    });
  }
  const descriptor = Object.freeze(out);
  if (columns !== undefined) checkColumns(descriptor, columns);
  if (listsEvery(options))
    for (const model of Object.values(out)) LISTING_EVERY_RELATION.add(model);
  return descriptor;
}

/** A native type as written after `@db.`: a name, then arguments in parentheses. */
const NATIVE_TYPE = /^([A-Za-z]\w*)(?:\((.*)\))?$/s;

/** A datasource's name, as the schema grammar takes it (`datasource pg`). */
const DATASOURCE_NAME = /^[A-Za-z][\w-]*$/;

/** `config.nativeTypes` checked and frozen; undefined when not given. */
function nativeTypesOf(where: string, config: unknown): NativeTypesDescriptor | undefined {
  if (config === undefined) return undefined;
  if (!isRecord(config) || !isRecord(config.columns) || Array.isArray(config.columns)) {
    fail(
      where,
      `nativeTypes must be { provider?, datasource?, columns: { <column>: "<native type>" } }`,
    );
  }
  const provider = config.provider;
  if (provider !== undefined && (typeof provider !== "string" || provider === "")) {
    fail(where, `nativeTypes.provider must be a datasource provider ("postgresql", "mysql"…)`);
  }
  const datasource = config.datasource;
  if (
    datasource !== undefined &&
    (typeof datasource !== "string" || !DATASOURCE_NAME.test(datasource))
  ) {
    fail(where, `nativeTypes.datasource must be the datasource's name ("db" in datasource db {})`);
  }
  const prefix = attributePrefix(datasource);
  const columns: Record<string, string> = {};
  for (const [column, type] of Object.entries(config.columns)) {
    if (typeof type !== "string" || !NATIVE_TYPE.test(type)) {
      fail(
        where,
        `nativeTypes column "${column}" must be a native type as written after ${prefix} ("VarChar(255)")`,
      );
    }
    columns[column] = type;
  }
  return Object.freeze({
    ...(provider === undefined ? {} : { provider }),
    ...(datasource === undefined ? {} : { datasource }),
    columns: Object.freeze(columns),
  });
}

/** What a datasource's native type attributes start with: `@pg.` for `datasource pg`. */
function attributePrefix(datasource: string | undefined): string {
  return `@${datasource ?? "db"}.`;
}

/** What of a model decides which values are bound to which columns. */
type Bindings = Pick<ModelDescriptor, "encrypted" | "context" | "contextColumns">;

/** The encrypted fields of `model` whose values are bound to one of `columns`. */
export function fieldsBoundTo(model: Bindings, columns: readonly string[]): string[] {
  if (columns.length === 0) return [];
  const modelWide = columns.some((c) => model.context.fromRow.includes(c));
  return Object.entries(model.encrypted)
    .filter(([, spec]) => modelWide || spec.context.fromRow.some((c) => columns.includes(c)))
    .map(([field]) => field);
}

/** The columns among `columns` that encrypted values of `model` are bound to. */
export function boundColumns(model: Bindings, columns: readonly string[]): string[] {
  return columns.filter(
    (c) => model.contextColumns.includes(c) && fieldsBoundTo(model, [c]).length > 0,
  );
}

/**
 * The models and columns a descriptor names, checked against its schema's: the one place these
 * rules live, run on the columns read from schema text (`parseSchema`, the type generator) and on
 * those of the generated client (`defineModels(…, { checkAgainst })`).
 * @throws ValidationException naming the model, and the field, blind index or relation.
 */
export function checkColumns(models: SchemaDescriptor, columns: ModelColumns): void {
  for (const model of Object.values(models)) {
    const where = `model "${model.name}"`;
    const own = columns.get(model.name);
    if (own === undefined) fail(where, `not a model of the Prisma schema`);
    checkModelColumns(model, (column) => own.has(column));
    for (const [relation, target] of Object.entries(model.relations)) {
      if (!columns.has(target)) {
        fail(`${where} relation "${relation}"`, `"${target}" is not a model of the Prisma schema`);
      }
    }
  }
}

/** Every column `model` names (context, encrypted, blind index, foreign key) is one of `has`. */
function checkModelColumns(model: ModelDescriptor, has: (column: string) => boolean): void {
  const where = `model "${model.name}"`;
  const notColumn = `not a column of ${model.name}`;
  for (const column of model.context.fromRow) {
    if (!has(column)) fail(where, `context column "${column}" is ${notColumn}`);
  }
  for (const [field, spec] of Object.entries(model.encrypted)) {
    const fieldWhere = `${where} field "${field}"`;
    if (!has(field)) fail(fieldWhere, notColumn);
    for (const column of spec.context.fromRow) {
      if (!has(column)) fail(fieldWhere, `context column "${column}" is ${notColumn}`);
    }
  }
  for (const column of Object.keys(model.blindIndexes)) {
    if (!has(column)) fail(`${where} blind index "${column}"`, notColumn);
  }
  for (const [relation, foreignKey] of Object.entries(model.foreignKeys)) {
    for (const column of foreignKey) {
      if (!has(column)) {
        fail(`${where} relation "${relation}"`, `foreign key column "${column}" is ${notColumn}`);
      }
    }
  }
}

/** A column's type as the generated client gives it (`prisma.user.fields.email`, a FieldRef). */
export interface ColumnType {
  /** `String`, `Bytes`, `Int`…, or an enum's name. */
  readonly typeName: string;
  readonly isList: boolean;
  /**
   * The column holds an enum (Prisma's FieldRef says so at runtime, undeclared in its types);
   * unknown when undefined, and then any type that is not one of Prisma's scalars is one.
   */
  readonly isEnum?: boolean;
}

/** Prisma's scalar types: any other type of a scalar field is an enum's. */
const PRISMA_SCALARS = new Set([
  "String",
  "Boolean",
  "Int",
  "BigInt",
  "Float",
  "Decimal",
  "DateTime",
  "Json",
  "Bytes",
]);

/**
 * The scalar types whose values a read gives back as exactly the text a write bound them under
 * (`String(value)`): a string, an integer (`number` or `bigint`, read back as its type) and a
 * double, whose shortest round-trip text is the same on both sides.
 */
const CONTEXT_SCALARS = new Set(["String", "Int", "BigInt", "Float"]);

/**
 * A column's native type (`@db.Char(8)`), from its model's `nativeTypes`, with the provider
 * that gives it its meaning.
 */
interface NativeType {
  readonly name: string;
  readonly args: readonly string[];
  /** As written after the attribute's prefix. */
  readonly text: string;
  readonly provider: string | undefined;
  /** What the datasource's attributes start with (`@db.`, `@pg.` for `datasource pg`). */
  readonly prefix: string;
  /** The attribute as the schema writes it (`@pg.Char(8)`), for messages. */
  readonly written: string;
}

function nativeTypeOf(model: ModelDescriptor, column: string): NativeType | undefined {
  const types = model.nativeTypes;
  if (types === undefined || !Object.hasOwn(types.columns, column)) return undefined;
  const text = types.columns[column] as string;
  const [, name = text, args] = NATIVE_TYPE.exec(text) ?? [];
  const prefix = attributePrefix(types.datasource);
  return {
    name,
    args: args === undefined ? [] : args.split(",").map((a) => a.trim()),
    text,
    provider: types.provider,
    prefix,
    written: `${prefix}${text}`,
  };
}

const PROVIDER_NAMES: Readonly<Record<string, string>> = {
  postgresql: "PostgreSQL",
  mysql: "MySQL (and MariaDB)",
  sqlserver: "SQL Server",
  cockroachdb: "CockroachDB",
};

function providerName(native: NativeType): string {
  return (
    (native.provider === undefined ? undefined : PROVIDER_NAMES[native.provider]) ?? "the database"
  );
}

/** Text types whose declared length (`VarChar(255)`) caps what a column holds, in characters. */
const LENGTH_LIMITED_TEXT = new Set(["Char", "NChar", "VarChar", "NVarChar", "String"]);
/** The same for bytes (`VarBinary(64)`). */
const LENGTH_LIMITED_BYTES = new Set(["Binary", "VarBinary"]);
/** Fixed-length types, whose length is 1 when none is given (`@db.Char` is CHAR(1)). */
const FIXED_LENGTH = new Set(["Char", "NChar", "Binary"]);

/** The most characters (or bytes) a column of `native` holds; undefined when not capped. */
function declaredLength(native: NativeType, limited: ReadonlySet<string>): number | undefined {
  if (!limited.has(native.name)) return undefined;
  const length = native.args[0];
  if (length === undefined || length === "") return FIXED_LENGTH.has(native.name) ? 1 : undefined;
  // `Max` (SQL Server) caps nothing a value reaches.
  return /^\d+$/.test(length) ? Number(length) : undefined;
}

/** Characters of base64url without padding for `bytes` bytes (FORMAT §6.1.5). */
function base64urlLength(bytes: number): number {
  return Math.ceil((bytes * 4) / 3);
}

/** Text types that cannot hold `kms1:…` or base64url text at all (every write fails or is cut). */
const NOT_TEXT = new Set([
  "Uuid",
  "UniqueIdentifier",
  "Inet",
  "Bit",
  "VarBit",
  "CatalogSingleChar",
]);

/** Whether `native` keeps a Float in single precision (4 bytes). */
function singlePrecision(native: NativeType): boolean {
  if (native.name === "Real" || native.name === "Float4") return true;
  if (native.name !== "Float") return false;
  // SQL Server's float is float(53) unless given n ≤ 24; MySQL's FLOAT is single precision
  // (and so is taken a provider left unsaid).
  if (native.provider !== "sqlserver") return true;
  const n = native.args[0];
  return n !== undefined && /^\d+$/.test(n) && Number(n) <= 24;
}

/** The double-precision native type of a Float column on each provider. */
const DOUBLE_TYPES: Readonly<Record<string, string>> = {
  postgresql: "DoublePrecision",
  mysql: "Double",
  sqlserver: "Float(53)",
  cockroachdb: "Float8",
};

/**
 * Why a context column of `typeName` in `native` reads back in another text than a write bound
 * its values under, with what to write instead; undefined when it does not.
 */
function contextNativeReason(typeName: string, native: NativeType): string | undefined {
  const on = providerName(native);
  const at = native.prefix;
  if (typeName === "String") {
    if (native.name === "Char" || native.name === "NChar") {
      const change =
        native.provider === "mysql"
          ? `MySQL and MariaDB strip the trailing spaces of a CHAR(n) value ("t1 " reads back as "t1")`
          : `${on} pads a CHAR(n) value shorter than n with spaces ("t1" reads back as "t1      ")`;
      return `${change}, so its rows would not decrypt; use ${at}VarChar(n) or ${at}Text`;
    }
    if (native.name === "Inet") {
      return `${on} reads an address back in its own spelling ("10.0.0.1/32" as "10.0.0.1"), so its rows would not decrypt; keep the address in a text column`;
    }
    if (native.name === "CatalogSingleChar") {
      return `a "char" column keeps only the first byte of a value ("t1" reads back as "t"), so its rows would not decrypt; use ${at}String`;
    }
    // A UUID column (`Uuid`, `UniqueIdentifier`) reads every value back in one spelling: the
    // values written are checked instead (`contextSpellings`).
  } else if (typeName === "Int" && native.name === "Year") {
    return `a YEAR column reads a two-digit year back in four digits (70 as 1970), so its rows would not decrypt; use an integer type`;
  } else if (typeName === "Float" && singlePrecision(native)) {
    const double = native.provider === undefined ? undefined : DOUBLE_TYPES[native.provider];
    return `${on} keeps a single-precision number, which reads back as another double than was written (0.30000000000000004 as 0.3, or as 0.30000001192092896), so its rows would not decrypt; use ${double === undefined ? "a double-precision type" : `${at}${double}`}`;
  }
  return undefined;
}

/**
 * How a context column spells the values it reads back, where the database reads every
 * spelling of a value back in one of its own (`contextSpellings`).
 */
export interface ContextSpelling {
  /** The column's native type attribute as the schema writes it (`@db.Uuid`). */
  readonly written: string;
  /** Who reads values back, and how (`PostgreSQL reads back in lower case with hyphens`). */
  readonly readsBack: string;
  /** What the values are (`a UUID`), for a value that is none. */
  readonly kind: string;
  /** `value` as the database reads it back; undefined when it is no such value. */
  readonly spell: (value: string) => string | undefined;
}

/**
 * A UUID (`{…}`, without hyphens, in any letter case: the spellings PostgreSQL and SQL Server
 * take) as 8-4-4-4-12 hex digits in lower case, or undefined when `value` is none.
 */
function hyphenatedUuid(value: string): string | undefined {
  const bare = /^\{(.*)\}$/s.exec(value)?.[1] ?? value;
  const hex = bare.replaceAll("-", "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex) || bare.startsWith("-") || bare.endsWith("-")) {
    return undefined;
  }
  const h = hex.toLowerCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The spelling a column of `native` (a String column's: UUID types hold no other) reads back. */
function contextSpellingOf(native: NativeType): ContextSpelling | undefined {
  if (native.name === "Uuid") {
    return {
      written: native.written,
      readsBack: `${providerName(native)} reads back in lower case with hyphens`,
      kind: "a UUID",
      spell: hyphenatedUuid,
    };
  }
  if (native.name === "UniqueIdentifier") {
    return {
      written: native.written,
      readsBack: `SQL Server reads back in capitals with hyphens`,
      kind: "a UUID",
      spell: (value) => hyphenatedUuid(value)?.toUpperCase(),
    };
  }
  return undefined;
}

const SPELLINGS = new WeakMap<ModelDescriptor, ReadonlyMap<string, ContextSpelling>>();

/**
 * The context columns of `model` (the model's and its fields' own) whose native type reads
 * every spelling of a value back in one of its own: a UUID in `@db.Uuid` (PostgreSQL,
 * CockroachDB: lower case with hyphens) or `@db.UniqueIdentifier` (SQL Server: capitals).
 * Values are bound to the text they were written with, so one written in another spelling
 * than its column reads back would never decrypt, and a lookup sealed under it matches no row:
 * writes and lookups check the values they seal under. Empty without `nativeTypes`.
 */
export function contextSpellings(model: ModelDescriptor): ReadonlyMap<string, ContextSpelling> {
  let spellings = SPELLINGS.get(model);
  if (spellings === undefined) {
    const found = new Map<string, ContextSpelling>();
    if (model.nativeTypes !== undefined) {
      for (const column of model.contextColumns) {
        const native = nativeTypeOf(model, column);
        const spelling = native && contextSpellingOf(native);
        if (spelling !== undefined) found.set(column, spelling);
      }
    }
    spellings = found;
    SPELLINGS.set(model, spellings);
  }
  return spellings;
}

/** Why a column of `type` cannot be a context column, or undefined if it can. */
function contextColumnRule(type: ColumnType, native?: NativeType): string | undefined {
  if (!type.isList) {
    const reason = native && contextNativeReason(type.typeName, native);
    if (native !== undefined && reason !== undefined) {
      return `a context column cannot be ${native.written}: values are bound to the column's text, and ${reason}`;
    }
    if (CONTEXT_SCALARS.has(type.typeName)) return undefined;
    if (type.isEnum ?? !PRISMA_SCALARS.has(type.typeName)) return undefined;
  }
  const what = type.isList ? `a list (${type.typeName}[])` : type.typeName;
  return `a context column must be String, Int, BigInt, Float or an enum, not ${what}: values are bound to the column's text, and ${CONTEXT_TYPE_REASONS[type.typeName] ?? "this type's values are no such text"}`;
}

const CONTEXT_TYPE_REASONS: Readonly<Record<string, string>> = {
  Decimal:
    'a Decimal reads back as a Prisma.Decimal, in another text than it may have been written in ("1.50" as 1.5), so its rows would not decrypt',
  Boolean: "a Boolean is no such text",
  DateTime: "a DateTime is no such text (its text depends on the time zone and precision)",
  Json: "a Json value is no such text",
  Bytes: "Bytes are no such text",
};

const NOT_ENCRYPTABLE = "only String and Bytes columns can be encrypted";
const NOT_BLIND_INDEX = "a blind index column must be a String";

/**
 * Why a column of `type` cannot hold an encrypted field's ciphertext, or undefined if it can;
 * with the field's `spec` and the column's `native` type, also a native type that changes the
 * ciphertext on its way back or cannot hold the shortest one (an empty value's: every write
 * would fail). Longer values are the database's to refuse, loudly, when written.
 */
function encryptedColumnRule(
  type: string,
  isList: boolean,
  spec?: Pick<EncryptedFieldDescriptor, "mode" | "storage">,
  native?: NativeType,
): string | undefined {
  if ((type !== "String" && type !== "Bytes") || isList) return NOT_ENCRYPTABLE;
  if (spec === undefined || native === undefined) return undefined;
  const overhead = spec.mode === "deterministic" ? DETERMINISTIC_OVERHEAD : RANDOMIZED_OVERHEAD;
  const { written, prefix: at } = native;
  if (spec.storage === "bytes") {
    if (native.name === "Binary") {
      return `ciphertext cannot be kept in ${written}: a BINARY(n) column pads a value shorter than n with zero bytes, and the padded bytes read back as no ciphertext, so every read would fail; use ${at}VarBinary(n) or a BLOB type`;
    }
    const length = declaredLength(native, LENGTH_LIMITED_BYTES);
    if (length !== undefined && length < overhead) {
      return `ciphertext cannot fit in ${written}: it holds at most ${length} bytes, and a ${spec.mode} value's ciphertext has ${overhead} bytes besides the value's own (an empty value's ciphertext is that long), so every write would fail`;
    }
    return undefined;
  }
  if (NOT_TEXT.has(native.name)) {
    return `ciphertext cannot be kept in ${written}: the column takes no ${FIELD_TEXT_PREFIX}… text; use ${at}Text or ${at}VarChar(n)`;
  }
  if ((native.name === "Char" || native.name === "NChar") && native.provider !== "mysql") {
    return `ciphertext cannot be kept in ${written}: ${providerName(native)} pads a CHAR(n) value shorter than n with spaces, and the padded text reads back as no ciphertext, so every read would fail; use ${at}VarChar(n) or ${at}Text`;
  }
  const length = declaredLength(native, LENGTH_LIMITED_TEXT);
  const shortest = FIELD_TEXT_PREFIX.length + base64urlLength(overhead);
  if (length !== undefined && length < shortest) {
    return `ciphertext cannot fit in ${written}: it holds at most ${length} characters, and a ${spec.mode} value's ciphertext has at least ${shortest} (${FIELD_TEXT_PREFIX} and the base64url of the ${overhead} bytes every value adds, an empty value's), so every write would fail; a value of k bytes takes ${FIELD_TEXT_PREFIX.length} + ⌈4(k + ${overhead})/3⌉ characters`;
  }
  return undefined;
}

/**
 * Why a column of `type` cannot hold a blind index (base64url text), or undefined if it can;
 * with its `index` and `native` type, also a native type that cannot hold one (a CHAR(n) wider
 * than the index pads it, which lookups, compared by the database, do not see).
 */
function blindIndexColumnRule(
  type: string,
  isList: boolean,
  index?: Pick<BlindIndexDescriptor, "bytes">,
  native?: NativeType,
): string | undefined {
  if (type !== "String" || isList) return NOT_BLIND_INDEX;
  if (index === undefined || native === undefined) return undefined;
  const { written, prefix: at } = native;
  if (NOT_TEXT.has(native.name)) {
    return `a blind index cannot be kept in ${written}: the column takes no base64url text; use ${at}VarChar(n) or ${at}Text`;
  }
  const length = declaredLength(native, LENGTH_LIMITED_TEXT);
  const needed = base64urlLength(index.bytes);
  if (length !== undefined && length < needed) {
    return `a blind index cannot fit in ${written}: it holds at most ${length} characters, and an index of ${index.bytes} bytes is ${needed} (base64url), so every write would fail`;
  }
  return undefined;
}

/**
 * The columns a descriptor names and the types it needs, checked against those of its client:
 * every column it names must be one of its model's scalar fields (a misspelt encrypted field
 * would be written in plaintext; a relation field holds no value), an encrypted field's column
 * holds its ciphertext (a String column for text storage, Bytes for bytes), a blind index
 * column base64url text, and a context column values that read back as the text a write bound
 * them under (`contextColumnRule`). Where the descriptor records native types (`nativeTypes`:
 * schema text and the generator's module do), those are checked too: one that changes what a
 * context column or a ciphertext reads back (`@db.Char(n)`, `@db.Real`), or that cannot hold
 * even an empty value's ciphertext or a blind index, is refused. Schema text and the type
 * generator apply the same rules to the schema's own types. `columnsOf` gives a model's
 * columns by name, or undefined for a model the client lacks, which is not checked here
 * (`checkColumns` with `checkAgainst` is).
 * @throws ValidationException naming the model and field.
 */
export function checkColumnTypes(
  models: SchemaDescriptor,
  columnsOf: (model: string) => ((column: string) => ColumnType | undefined) | undefined,
): void {
  for (const model of Object.values(models)) {
    const columnType = columnsOf(model.name);
    if (columnType === undefined) continue;
    checkModelColumns(model, (column) => columnType(column) !== undefined);
    // Every column named is the client's from here on.
    for (const [field, spec] of Object.entries(model.encrypted)) {
      const column = columnType(field) as ColumnType;
      const where = `model "${model.name}" field "${field}"`;
      const rule = encryptedColumnRule(column.typeName, column.isList);
      if (rule !== undefined) fail(where, rule);
      const needed = spec.storage === "bytes" ? "Bytes" : "String";
      if (column.typeName !== needed) {
        fail(where, `storage "${spec.storage}" needs a ${needed} column, not ${column.typeName}`);
      }
      const native = nativeTypeOf(model, field);
      const nativeRule = encryptedColumnRule(column.typeName, column.isList, spec, native);
      if (nativeRule !== undefined) fail(where, nativeRule);
    }
    for (const [name, index] of Object.entries(model.blindIndexes)) {
      const column = columnType(name) as ColumnType;
      const native = nativeTypeOf(model, name);
      const rule = blindIndexColumnRule(column.typeName, column.isList, index, native);
      if (rule !== undefined) fail(`model "${model.name}" field "${name}"`, rule);
    }
    for (const name of model.contextColumns) {
      const rule = contextColumnRule(columnType(name) as ColumnType, nativeTypeOf(model, name));
      if (rule !== undefined) fail(`model "${model.name}" context column "${name}"`, rule);
    }
  }
}

function isRecord(v: unknown): v is Readonly<Record<string, unknown>> {
  return typeof v === "object" && v !== null;
}

function listsEvery(options: DefineModelsOptions | undefined): boolean {
  const value = isRecord(options) ? options.listsEveryRelation : undefined;
  if (value !== undefined && typeof value !== "boolean") {
    throw new ValidationError(`"listsEveryRelation" expected a boolean`);
  }
  return value === true;
}

/** The columns listed by the generated namespace given as `checkAgainst`, if one is given. */
function namespaceColumns(options: DefineModelsOptions | undefined): ModelColumns | undefined {
  if (options === undefined) return undefined;
  if (!isRecord(options)) throw new ValidationError(`defineModels options expected an object`);
  if (!("checkAgainst" in options)) return undefined;
  const namespace: unknown = options.checkAgainst;
  const expected = `"checkAgainst" expected the generated client's Prisma namespace (import { Prisma } from "./generated/prisma/client")`;
  if (!isRecord(namespace) || !isRecord(namespace.ModelName)) {
    throw new ValidationError(`${expected}: it has no ModelName`);
  }
  const columns = new Map<string, ReadonlySet<string>>();
  for (const model of Object.values(namespace.ModelName)) {
    if (typeof model !== "string") {
      throw new ValidationError(`${expected}: ModelName holds a non-string`);
    }
    // Prisma names the enum after the model with its first letter capitalized: `model users`
    // gives `UsersScalarFieldEnum`.
    const name = `${model.charAt(0).toUpperCase()}${model.slice(1)}ScalarFieldEnum`;
    const fields = namespace[name];
    if (!isRecord(fields)) {
      throw new ValidationError(`${expected}: it has no ${name} for model "${model}"`);
    }
    columns.set(
      model,
      new Set(Object.values(fields).filter((f): f is string => typeof f === "string")),
    );
  }
  return columns;
}

/** A field's own context keys, checked against its model's and shared between equal ones. */
function fieldContext(
  where: string,
  model: ModelContextDescriptor,
  config: Partial<ModelContextDescriptor> | undefined,
  shared: Map<string, ModelContextDescriptor>,
): ModelContextDescriptor {
  if (config === undefined) return NO_CONTEXT;
  const fromRow = contextKeys(where, "context.fromRow", config.fromRow);
  const fromScope = contextKeys(where, "context.fromScope", config.fromScope);
  for (const [keys, own, kind] of [
    [fromRow, model.fromRow, "column"],
    [fromScope, model.fromScope, "scope key"],
  ] as const) {
    for (const [i, key] of keys.entries()) {
      if (own.includes(key)) {
        fail(where, `context ${kind} "${key}" is already in the model's context`);
      }
      if (keys.indexOf(key) !== i) fail(where, `context ${kind} "${key}" is listed twice`);
    }
  }
  if (fromRow.length === 0 && fromScope.length === 0) return NO_CONTEXT;
  const key = JSON.stringify([fromRow, fromScope]);
  let context = shared.get(key);
  if (context === undefined) {
    context = Object.freeze({
      fromRow: Object.freeze([...fromRow]),
      fromScope: Object.freeze([...fromScope]),
    });
    shared.set(key, context);
  }
  return context;
}

interface Annotation {
  readonly name: string;
  readonly positional: readonly string[];
  readonly named: Readonly<Record<string, string>>;
}

const ANNOTATION_NAMES = ["encrypted", "blindIndex", "context"];
const ANNOTATION_NAME = /[A-Za-z_]\w*/y;

/** `@kms.` in any letter case: Prisma keeps the text, and only the exact form is an annotation. */
const ANNOTATION_START = /@kms\./gi;

/**
 * The `@kms.name(arguments)` annotations of documentation lines. Text that does not read as
 * one is refused, never skipped: an annotation misspelt (in another letter case too), unclosed
 * or with its arguments set apart would otherwise leave a field in plaintext or a model bound
 * to nothing.
 */
function parseAnnotations(doc: readonly string[], where: string): Annotation[] {
  const out: Annotation[] = [];
  for (const line of doc) {
    ANNOTATION_START.lastIndex = 0;
    for (let found = ANNOTATION_START.exec(line); found !== null; ) {
      const at = found.index;
      // The next annotation is looked for after this one (and its arguments).
      ANNOTATION_START.lastIndex = at + 1;
      ANNOTATION_NAME.lastIndex = at + 5;
      const name = ANNOTATION_NAME.exec(line)?.[0];
      if (name === undefined) fail(where, `"@kms." must be followed by an annotation name`);
      const known = ANNOTATION_NAMES.find((n) => n.toLowerCase() === name.toLowerCase());
      if (found[0] !== "@kms." || (known !== undefined && known !== name)) {
        const written = `${found[0]}${name}`;
        fail(
          where,
          known === undefined
            ? `unknown annotation ${written}`
            : `${written} is not an annotation (they are case-sensitive): write @kms.${known}`,
        );
      }
      if (known === undefined) fail(where, `unknown annotation @kms.${name}`);
      const open = at + 5 + name.length;
      if (line[open] !== "(") {
        if (/^[\t ]+\(/.test(line.slice(open))) {
          fail(where, `write the arguments of @kms.${name} right after its name: @kms.${name}(…)`);
        }
        out.push({ name, positional: [], named: {} });
      } else {
        const { args, end } = annotationArguments(line, open, `${where}: @kms.${name}`);
        out.push({ name, ...args });
        ANNOTATION_START.lastIndex = end;
      }
      found = ANNOTATION_START.exec(line);
    }
  }
  return out;
}

/**
 * The arguments in parentheses at `open`: comma-separated, each a value or `name: value`, a
 * value in double quotes when it holds commas (`normalize: "trim,lowercase"`).
 */
function annotationArguments(
  line: string,
  open: number,
  where: string,
): { args: Pick<Annotation, "positional" | "named">; end: number } {
  const parts: string[] = [];
  let part = "";
  let quoted = false;
  let i = open + 1;
  for (; i < line.length; i++) {
    const c = line[i] as string;
    if (c === '"') quoted = !quoted;
    else if (!quoted && c === ")") break;
    if (!quoted && c === ",") {
      parts.push(part);
      part = "";
    } else {
      part += c;
    }
  }
  if (i >= line.length) fail(where, `"(" is not closed on its line`);
  if (parts.length > 0 || part.trim() !== "") parts.push(part);
  const positional: string[] = [];
  const named: Record<string, string> = {};
  const unquote = (s: string) => s.trim().replace(/^"(.*)"$/, "$1");
  for (const raw of parts) {
    if (raw.trim() === "") fail(where, `an argument is empty`);
    const colon = raw.indexOf(":");
    if (colon === -1 || raw.trimStart().startsWith('"')) {
      positional.push(unquote(raw));
      continue;
    }
    const key = raw.slice(0, colon).trim();
    const value = unquote(raw.slice(colon + 1));
    if (!/^\w+$/.test(key)) fail(where, `"${key}" is not an argument name`);
    if (value === "") fail(where, `argument ${key}: has no value`);
    if (Object.hasOwn(named, key)) fail(where, `argument ${key}: is given twice`);
    named[key] = value;
  }
  return { args: { positional, named }, end: i };
}

/** Refuses the arguments of `a` that are not among `positional` values and `named` names. */
function refuseUnknownArguments(
  where: string,
  a: Annotation,
  positional: readonly string[] | "any",
  named: readonly string[],
): void {
  if (positional !== "any") {
    for (const value of a.positional) {
      if (!positional.includes(value)) {
        const takes = positional.length === 0 ? "no value" : positional.join(" or ");
        fail(where, `@kms.${a.name} takes ${takes} without a name, not "${value}"`);
      }
    }
  }
  for (const key of Object.keys(a.named)) {
    if (!named.includes(key)) {
      const takes = named.length === 0 ? "no named argument" : named.map((n) => `${n}:`).join(", ");
      fail(where, `@kms.${a.name} takes ${takes}, not ${key}:`);
    }
  }
}

/** A field as the annotation reader sees it (from schema text or from a generator's DMMF). */
export interface AnnotatedField {
  readonly name: string;
  /** The scalar type (`String`, `Bytes`, `Int`…) or, for a relation, the related model's name. */
  readonly type: string;
  /** `String?`: the column may hold null. */
  readonly optional: boolean;
  /** `String[]`: a list column. */
  readonly list?: boolean;
  /** The field's `///` lines, without the slashes. */
  readonly doc: readonly string[];
  /** For a relation field, the columns its `@relation(fields: […])` names (none: the other side). */
  readonly foreignKey?: readonly string[];
  /** For a relation field, the name of its relation (explicit or Prisma's default). */
  readonly relationName?: string;
  /**
   * Whether `type` names an enum; undefined when unknown, and then any type that is neither a
   * model nor one of Prisma's scalars is taken for one. A composite type (`type Address {}`)
   * is no enum, and no context column may hold it.
   */
  readonly isEnum?: boolean;
  /**
   * The field's native type (`@db.Char(8)`) as written after `@db.`, arguments separated by
   * ", " (`Char(8)`, `Decimal(10, 2)`); undefined when it has none.
   */
  readonly nativeType?: string;
}

export interface AnnotatedModel {
  readonly name: string;
  readonly doc: readonly string[];
  readonly fields: readonly AnnotatedField[];
  /** The schema's datasource provider (`postgresql`…), which gives native types their meaning. */
  readonly provider?: string;
  /** The datasource's name (`db` in `datasource db {}`), which its native type attributes use. */
  readonly datasource?: string;
}

/**
 * Turns annotated models into typed configuration; the one place the annotations get their
 * meaning, shared by `parseSchema` and the type generator.
 * @throws ValidationException naming the model and field of a malformed annotation.
 */
export function configFromAnnotations(
  models: readonly AnnotatedModel[],
): Record<string, ModelConfig> {
  const modelNames = new Set(models.map((m) => m.name));
  const configs: Record<string, ModelConfig> = {};
  for (const model of models) {
    const name = model.name;
    const encrypted: Record<string, EncryptedConfig> = {};
    const blindIndexes: Record<string, BlindIndexConfig> = {};
    const relations: Record<string, string> = {};
    const foreignKeys: Record<string, readonly string[]> = {};
    const links: Record<string, string> = {};
    // `@kms.context(tenantId)`, `(scope: clinic)`, `(row: a b)`: the same grammar on a model and
    // on an encrypted field; `checkColumns` checks that the columns it names are the model's own.
    const readContext = (where: string, annotations: readonly Annotation[]) => {
      const fromRow: string[] = [];
      const fromScope: string[] = [];
      for (const a of annotations) {
        const other = Object.keys(a.named).find((k) => k !== "scope" && k !== "row");
        if (other !== undefined)
          fail(where, `@kms.context takes columns, row: and scope:, not ${other}:`);
        if (a.positional.length === 0 && Object.keys(a.named).length === 0) {
          fail(where, `@kms.context names no column or scope key`);
        }
        fromRow.push(...a.positional);
        if (a.named.scope !== undefined) fromScope.push(...a.named.scope.split(/\s+/));
        if (a.named.row !== undefined) fromRow.push(...a.named.row.split(/\s+/));
      }
      return { fromRow, fromScope };
    };
    const modelAnnotations = parseAnnotations(model.doc, `model "${name}"`);
    for (const a of modelAnnotations) {
      if (a.name !== "context") fail(`model "${name}"`, `only @kms.context applies to a model`);
    }
    const { fromRow, fromScope } = readContext(`model "${name}"`, modelAnnotations);
    for (const field of model.fields) {
      const where = `model "${name}" field "${field.name}"`;
      if (modelNames.has(field.type)) {
        relations[field.name] = field.type;
        if (field.foreignKey !== undefined && field.foreignKey.length > 0) {
          foreignKeys[field.name] = [...field.foreignKey];
        }
        if (field.relationName !== undefined) links[field.name] = field.relationName;
      }
      const annotations = parseAnnotations(field.doc, where);
      const contextAnnotations = annotations.filter((a) => a.name === "context");
      for (const kind of ["encrypted", "blindIndex"]) {
        if (annotations.filter((a) => a.name === kind).length > 1) {
          fail(where, `@kms.${kind} is given twice`);
        }
      }
      for (const a of annotations) {
        if (a.name === "encrypted") {
          refuseUnknownArguments(where, a, ["deterministic", "randomized"], ["type"]);
          if (a.positional.length > 1) {
            fail(where, `@kms.encrypted takes one mode, not ${a.positional.join(" and ")}`);
          }
          const rule = encryptedColumnRule(field.type, field.list === true);
          if (rule !== undefined) fail(where, rule);
          const mode = a.positional.includes("deterministic") ? "deterministic" : "randomized";
          const declared = a.named.type as FieldValueType | undefined;
          const context = readContext(where, contextAnnotations);
          encrypted[field.name] = {
            mode,
            storage: field.type === "Bytes" ? "bytes" : "text",
            ...(declared === undefined ? {} : { type: declared }),
            ...(field.optional ? { optional: true } : {}),
            ...(contextAnnotations.length === 0 ? {} : { context }),
          };
        } else if (a.name === "blindIndex") {
          refuseUnknownArguments(where, a, "any", ["of", "bytes", "normalize"]);
          const rule = blindIndexColumnRule(field.type, field.list === true);
          if (rule !== undefined) fail(where, rule);
          if (a.positional.length + (a.named.of === undefined ? 0 : 1) > 1) {
            fail(where, `@kms.blindIndex indexes one field: give it once, as "of: <field>"`);
          }
          const of = a.named.of ?? a.positional[0];
          if (of === undefined) fail(where, `@kms.blindIndex needs "of: <field>"`);
          if (a.named.bytes !== undefined && !/^\d+$/.test(a.named.bytes)) {
            fail(where, `@kms.blindIndex bytes: must be a whole number, not "${a.named.bytes}"`);
          }
          const bytes = a.named.bytes === undefined ? undefined : Number(a.named.bytes);
          const normalize = a.named.normalize?.split(/[,\s]+/).filter((s) => s !== "");
          for (const n of normalize ?? []) {
            if (!(NORMALIZATIONS as readonly string[]).includes(n)) {
              fail(
                where,
                `@kms.blindIndex normalize: takes ${NORMALIZATIONS.join(", ")}, not "${n}"`,
              );
            }
          }
          blindIndexes[field.name] = {
            of,
            ...(bytes === undefined ? {} : { bytes }),
            ...(normalize === undefined
              ? {}
              : { normalize: normalize as ("lowercase" | "trim" | "nfkc")[] }),
          };
        }
      }
      if (contextAnnotations.length > 0 && encrypted[field.name] === undefined) {
        fail(
          where,
          `@kms.context on a field adds to the context of its encrypted values: it needs @kms.encrypted on the same field`,
        );
      }
    }
    // The native types of the columns the annotations name, which `checkColumnTypes` checks.
    const named = new Set([
      ...fromRow,
      ...Object.keys(encrypted),
      ...Object.keys(blindIndexes),
      ...Object.values(encrypted).flatMap((spec) => spec.context?.fromRow ?? []),
    ]);
    const nativeColumns: Record<string, string> = {};
    for (const field of model.fields) {
      if (field.nativeType !== undefined && named.has(field.name)) {
        nativeColumns[field.name] = field.nativeType;
      }
    }
    configs[name] = {
      encrypted,
      blindIndexes,
      relations,
      ...(Object.keys(foreignKeys).length === 0 ? {} : { foreignKeys }),
      ...(Object.keys(links).length === 0 ? {} : { links }),
      context: { fromRow, fromScope },
      ...(Object.keys(nativeColumns).length === 0
        ? {}
        : {
            nativeTypes: {
              ...(model.provider === undefined ? {} : { provider: model.provider }),
              // `db`, the name nearly every schema gives its datasource, goes without saying.
              ...(model.datasource === undefined || model.datasource === "db"
                ? {}
                : { datasource: model.datasource }),
              columns: nativeColumns,
            },
          }),
    };
  }
  return configs;
}

/**
 * The types of the scalar fields of annotated models, for `checkColumnTypes`: every field whose
 * type is not a model, an enum's where the field says so (`isEnum`).
 */
export function annotatedColumnTypes(
  models: readonly AnnotatedModel[],
): ReadonlyMap<string, ReadonlyMap<string, ColumnType>> {
  const modelNames = new Set(models.map((m) => m.name));
  return new Map(
    models.map((m) => [
      m.name,
      new Map(
        m.fields
          .filter((f) => !modelNames.has(f.type))
          .map((f) => {
            const type: ColumnType = {
              typeName: f.type,
              isList: f.list === true,
              ...(f.isEnum === undefined ? {} : { isEnum: f.isEnum }),
            };
            return [f.name, type] as const;
          }),
      ),
    ]),
  );
}

/**
 * Checks annotated models' descriptor against their own fields, as `parseSchema` and the type
 * generator both must: every column an annotation names is a scalar field of its model
 * (`checkColumns`), of a type it can hold (`checkColumnTypes`).
 */
export function checkAnnotated(
  descriptor: SchemaDescriptor,
  models: readonly AnnotatedModel[],
): void {
  const types = annotatedColumnTypes(models);
  checkColumns(
    descriptor,
    new Map([...types].map(([model, columns]) => [model, new Set(columns.keys())])),
  );
  checkColumnTypes(descriptor, (model) => {
    const columns = types.get(model);
    return columns === undefined ? undefined : (column) => columns.get(column);
  });
}

/**
 * Reads `/// @kms.…` annotations from a schema.prisma text:
 * - on a model: `@kms.context(tenantId)` (row column) and `@kms.context(scope: tenantId)`;
 * - on a field: `@kms.encrypted`, `@kms.encrypted(deterministic)`,
 *   `@kms.encrypted(type: json)`; `@kms.blindIndex(of: email, bytes: 16,
 *   normalize: "trim,lowercase")`; beside `@kms.encrypted`, `@kms.context(recordId)` (and
 *   `scope:`) adds to the model's context for that field alone.
 * @throws ValidationException naming the model and field of a malformed annotation.
 */
export function parseSchema(schema: string): SchemaDescriptor {
  if (typeof schema !== "string") throw new ValidationError(`"schema" expected a string`);
  const models = readSchemaText(schema);
  const descriptor = defineModels(configFromAnnotations(models), { listsEveryRelation: true });
  checkAnnotated(descriptor, models);
  return descriptor;
}
