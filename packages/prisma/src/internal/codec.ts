import {
  currentEncryptionContext,
  type DecryptItem,
  type EncryptCallOptions,
  type FieldBinding,
  type FieldEncryptionEngine,
  type FieldSpec,
  InvalidCiphertextError,
  mayCollateAsFieldCiphertextText,
  ValidationError,
} from "@kms/core";
import {
  boundColumns,
  contextSpellings,
  type EncryptedFieldDescriptor,
  fieldsBoundTo,
  type ModelContextDescriptor,
  type ModelDescriptor,
  type SchemaDescriptor,
} from "../schema-descriptor.ts";
import type { ResultFieldNeeds, ResultFields } from "./result-fields.ts";

/**
 * How the extension rewrites one query: encrypting write data (nested writes included),
 * rewriting equality filters on encrypted fields, and decrypting results (included relations
 * included). Pure data manipulation on Prisma's argument objects; no Prisma import.
 */
export type Json = Record<string, unknown>;
/** Builds the value a decimal field returns (Prisma's Decimal) from the string the engine gives. */
export type DecimalFactory = (text: string) => unknown;
export type Ctx = Record<string, string>;
/** A model's column test from the client (`prisma.user.fields`); undefined for a model it lacks. */
export type ColumnsOf = (model: string) => ((column: string) => boolean) | undefined;
/** `new PrismaClient({ omit: { user: { tenantId: true } } })`: model delegate → column → omitted. */
export type GlobalOmit = Readonly<Record<string, Readonly<Record<string, unknown>>>>;
/**
 * The result fields of other extensions a query of a model (its schema name) may compute, with
 * what they need (see `ResultFieldRegistry`); undefined when they cannot be known.
 */
type ResultFieldsOf = (model: string) => ResultFields | undefined;
/** What a field's values are bound to (`context`) and what chooses their data key. */
type FieldCtx = Pick<FieldBinding, "context" | "keyContext">;

/**
 * An exact equality of a unique where (`findUnique`, `update`, `delete`, `upsert`) on a
 * deterministic field whose value has several stored forms while a migration is under way
 * (`previousKeyIds`, `legacyPlaintext`): a unique input takes one value, not `in`, so the query
 * is run with `holder[key]` set to each form in turn (see field-encryption.ts).
 */
export interface FormChoice {
  readonly holder: Json;
  readonly key: string;
  /** The current form first. */
  readonly forms: readonly unknown[];
  /** The field looked up (a column of the where's model). */
  readonly field: string;
  /** `Model.field`, for errors. */
  readonly name: string;
}

/**
 * How a where that is a unique input (Prisma's WhereUniqueInput) takes an exact equality on a
 * deterministic field: collected as choices the caller runs in turn, or, where the query cannot
 * be run again per form, refused when the value has several (`refuse` names the place).
 */
type UniqueWhere = FormChoice[] | { readonly refuse: string };

/** Unique inputs inside a write: the statement runs once, with one value per unique input. */
const NESTED_UNIQUE: UniqueWhere = {
  refuse:
    "a nested write's unique input (connect, connectOrCreate, upsert, update, delete, disconnect or set)",
};
/** A cursor names one row; a cursor that matches none gives an empty page, not an error. */
export const CURSOR_UNIQUE: UniqueWhere = { refuse: "a cursor" };
/** A compound unique key met where no unique input was expected. */
const COMPOUND_UNIQUE: UniqueWhere = { refuse: "a compound unique key" };

/**
 * Where a where clause sits, for lookups on fields bound to the ambient scope (`@kms.context(scope:
 * tenantId)`): only such a lookup's operand is sealed under the scope, and the rows it runs over
 * are every tenant's. An equality then matches the scope's rows only (no other tenant's
 * ciphertext equals it); an exclusion (`not`, `notIn`, anything under `NOT`) matches every other
 * tenant's row, the excluded value included, unless the where pins the tenant's rows itself.
 */
interface ScopeFrame {
  /** Inside `NOT`, or a relation filter that negates (`none`, `every`, `isNot`). */
  readonly negated: boolean;
  /**
   * Scope keys a column of the same name pins to the scope's value, by an exact equality beside
   * the clause or in a clause around it (under a negation too): the clause then runs over the
   * scope's rows only, where a lookup sealed under the scope is exact, and so is its negation.
   */
  readonly pinned: readonly string[];
}

const TOP_FRAME: ScopeFrame = Object.freeze({ negated: false, pinned: Object.freeze([]) });

/** The stored forms of one looked-up value: in the filtered column, and (blind index) legacy. */
interface ValueForms {
  /** Deterministic: every form of the field (legacy included); blind index: the indexes. */
  readonly sealed: readonly unknown[];
  /** Blind index with `legacyPlaintext`: the value as a legacy row holds it in the field. */
  readonly legacy: readonly unknown[];
}

export const READS = new Set([
  "findUnique",
  "findUniqueOrThrow",
  "findFirst",
  "findFirstOrThrow",
  "findMany",
]);
const SCALAR_FILTERS = new Set(["equals", "in", "notIn", "not"]);

export function isObject(v: unknown): v is Json {
  return (
    typeof v === "object" &&
    v !== null &&
    !Array.isArray(v) &&
    !(v instanceof Uint8Array) &&
    !(v instanceof Date)
  );
}

/** An object literal (`{ … }` or `Object.create(null)`), not an instance of a class. */
function isLiteral(v: object): boolean {
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}

export function reject(message: string): never {
  throw new ValidationError(message);
}

/**
 * Per-call state: the engine, the descriptor, and the ambient context captured when the query
 * started (the hook runs inside the caller's async context).
 */
export class Codec {
  readonly engine: FieldEncryptionEngine;
  readonly models: SchemaDescriptor;
  readonly options: EncryptCallOptions;
  /** What a decimal field's value is returned as, from its exact string form. */
  readonly decimal: DecimalFactory;
  /** The client's `omit` option (`new PrismaClient({ omit })`), by model delegate name. */
  readonly globalOmit: GlobalOmit;
  /**
   * The client's columns of a model: a select key that is none of them nor a relation is a
   * result field of another extension.
   */
  readonly columnsOf: ColumnsOf;
  /** What the result fields of other extensions need: what a read adds for them, and keeps. */
  readonly resultFields: ResultFieldsOf;
  readonly #related: ReadonlyMap<ModelDescriptor, readonly RelatedModel[]>;

  constructor(
    engine: FieldEncryptionEngine,
    models: SchemaDescriptor,
    options: EncryptCallOptions,
    decimal: DecimalFactory = (text) => text,
    globalOmit: GlobalOmit = {},
    columnsOf: ColumnsOf = () => undefined,
    resultFields: ResultFieldsOf = () => ({ needs: new Map(), certain: new Map() }),
    related: ReadonlyMap<ModelDescriptor, readonly RelatedModel[]> = relatedModels(models),
  ) {
    this.engine = engine;
    this.models = models;
    this.options = options;
    this.decimal = decimal;
    this.globalOmit = globalOmit;
    this.columnsOf = columnsOf;
    this.resultFields = resultFields;
    this.#related = related;
  }

  /** The same schema (and its relations, worked out once) with other call options. */
  withOptions(options: EncryptCallOptions): Codec {
    return new Codec(
      this.engine,
      this.models,
      options,
      this.decimal,
      this.globalOmit,
      this.columnsOf,
      this.resultFields,
      this.#related,
    );
  }

  model(name: string): ModelDescriptor | undefined {
    return this.models[name];
  }

  /** The relations of `model` whose target is in the schema, in `relations` order. */
  related(model: ModelDescriptor): readonly RelatedModel[] {
    return this.#related.get(model) ?? relatedOf(model, this.models);
  }

  /**
   * Context for a row from its data, then where, then the enclosing row, then the scope. Only
   * an exact equality pins a context column (see `pinnedValue`): a looser filter on it is
   * skipped, so the context comes from elsewhere or is missing.
   */
  context(
    model: ModelDescriptor,
    sources: readonly (Json | undefined)[],
    inherited?: Ctx,
  ): Ctx | undefined {
    const ctx: Ctx = {};
    for (const key of model.context.fromRow) {
      const value = pickColumn(model, key, sources, inherited);
      if (value === undefined) return undefined;
      ctx[key] = value;
    }
    if (model.context.fromScope.length > 0) {
      const scope = currentEncryptionContext();
      for (const key of model.context.fromScope) {
        const value = scope?.[key];
        if (value === undefined) {
          reject(
            `${model.name} binds encrypted fields to the ambient context key "${key}": run the query inside runWithEncryptionContext`,
          );
        }
        ctx[key] = value;
      }
    }
    return ctx;
  }

  requireContext(
    model: ModelDescriptor,
    sources: readonly (Json | undefined)[],
    inherited?: Ctx,
  ): Ctx {
    const ctx = this.context(model, sources, inherited);
    if (ctx === undefined) {
      const loose = model.context.fromRow.find((key) =>
        sources.some((source) => {
          const value = source?.[key];
          return value !== undefined && value !== null && pinnedValue(value) === undefined;
        }),
      );
      if (loose !== undefined) {
        reject(
          `${model.name} binds encrypted fields to ${model.context.fromRow.join(", ")}: the filter on ${model.name}.${loose} is not an exact equality (mode "insensitive", contains, in, not, a range…) and can match rows of other ${loose} values, so it cannot choose their keys; give ${loose} as a plain value or { equals } in where, or in the data`,
        );
      }
      reject(
        `${model.name} binds encrypted fields to ${model.context.fromRow.join(", ")}: include it in the data or as an exact equality in where (a plain value or { equals })`,
      );
    }
    return ctx;
  }

  /**
   * The context of one field: the model's `base` plus the columns and scope keys the field adds
   * (`@kms.context(recordId)` on it). Those come from the field's own row only (`sources`, and
   * `inherited` from an enclosing clause of the same where), never from a parent row: a row's
   * identity is its own. Undefined when a column is not given.
   */
  fieldContext(
    model: ModelDescriptor,
    field: string,
    own: ModelContextDescriptor,
    base: Ctx,
    sources: readonly (Json | undefined)[],
    inherited?: Ctx,
  ): Ctx | undefined {
    if (own.fromRow.length === 0 && own.fromScope.length === 0) return base;
    const ctx: Ctx = { ...base };
    for (const key of own.fromRow) {
      const value = pickColumn(model, key, sources, inherited);
      if (value === undefined) return undefined;
      ctx[key] = value;
    }
    if (own.fromScope.length > 0) {
      const scope = currentEncryptionContext();
      for (const key of own.fromScope) {
        const value = scope?.[key];
        if (value === undefined) {
          reject(
            `${model.name}.${field} binds its values to the ambient context key "${key}": run the query inside runWithEncryptionContext`,
          );
        }
        ctx[key] = value;
      }
    }
    return ctx;
  }

  requireFieldContext(
    model: ModelDescriptor,
    field: string,
    own: ModelContextDescriptor,
    base: Ctx,
    sources: readonly (Json | undefined)[],
    inherited?: Ctx,
  ): Ctx {
    const ctx = this.fieldContext(model, field, own, base, sources, inherited);
    if (ctx !== undefined) return ctx;
    const missing = own.fromRow.filter(
      (k) => pickColumn(model, k, sources, inherited) === undefined,
    );
    const loose = missing.find((key) =>
      sources.some((source) => {
        const value = source?.[key];
        return value !== undefined && value !== null && pinnedValue(value) === undefined;
      }),
    );
    if (loose !== undefined) {
      reject(
        `${model.name}.${field} binds its values to ${own.fromRow.join(", ")}: the filter on ${model.name}.${loose} is not an exact equality (mode "insensitive", contains, in, not, a range…) and can match rows of other ${loose} values; give ${loose} as a plain value or { equals } in where, or in the data`,
      );
    }
    reject(
      `${model.name}.${field} binds its values to ${own.fromRow.join(", ")}: include ${missing.join(", ")} in the data or as an exact equality in where (a plain value or { equals }); a nested write never takes it from the parent row`,
    );
  }

  /**
   * The context an enclosing where clause hands its AND/OR/NOT branches and compound uniques:
   * the model's context if it pins one, and whatever it pins of the fields' own columns.
   */
  clauseContext(
    model: ModelDescriptor,
    sources: readonly (Json | undefined)[],
    inherited: Ctx | undefined,
  ): Ctx | undefined {
    const ctx = this.context(model, sources, inherited) ?? inherited;
    if (model.contextColumns.length === model.context.fromRow.length) return ctx;
    const out: Ctx = { ...ctx };
    for (const key of model.contextColumns) {
      if (model.context.fromRow.includes(key)) continue;
      const value = pickColumn(model, key, sources, inherited);
      if (value !== undefined) out[key] = value;
    }
    return out;
  }

  /**
   * Context columns an `update` of `data` needs and neither `data` nor the where pins: the
   * model's when `ctx` is missing, and those of the fields written that add their own. An
   * `update` reads them from its row first. Nothing is read for a field written null (it is
   * stored under no context), nor for a column `data` sets to null: the row's old value is not
   * its context any more (see `writeData`).
   */
  unpinnedColumns(
    model: ModelDescriptor,
    data: Json,
    ctx: Ctx | undefined,
    sources: readonly (Json | undefined)[],
  ): string[] {
    // Before the row is read: a write this refuses must run no statement at all.
    refuseComputedContext(model, data);
    const out =
      ctx === undefined && needsContext(model, data)
        ? model.context.fromRow.filter((k) => !writesNull(data[k]))
        : [];
    for (const field of model.encryptedNames) {
      if (data[field] === undefined || writesNull(data[field])) continue;
      for (const key of (model.encrypted[field] as EncryptedFieldDescriptor).context.fromRow) {
        if (
          !out.includes(key) &&
          !writesNull(data[key]) &&
          pickColumn(model, key, sources, undefined) === undefined
        ) {
          out.push(key);
        }
      }
    }
    return out;
  }

  async encryptValue(
    model: ModelDescriptor,
    field: string,
    spec: EncryptedFieldDescriptor,
    bound: FieldCtx,
    value: unknown,
  ): Promise<unknown> {
    if (value === null) return null;
    await this.#refuseCiphertext(model, field, value);
    const binding = bindingOf(model, field, bound);
    return spec.storage === "text"
      ? this.engine.encryptText(binding, spec, value, this.options)
      : this.engine.encrypt(binding, spec, value, this.options);
  }

  /**
   * Every stored form an equality lookup of `value` in a deterministic field must match: the
   * current one first, then those of a migration under way (engine `previousKeyIds`, and with
   * `legacyPlaintext` the value as a legacy row holds it). One form outside migrations.
   */
  async lookupForms(
    model: ModelDescriptor,
    field: string,
    spec: EncryptedFieldDescriptor,
    bound: FieldCtx,
    value: unknown,
  ): Promise<unknown[]> {
    await this.#refuseCiphertext(model, field, value);
    const binding = bindingOf(model, field, bound);
    return spec.storage === "text"
      ? this.engine.lookupFormsText(binding, spec, value, this.options)
      : this.engine.lookupForms(binding, spec, value, this.options);
  }

  async #refuseCiphertext(model: ModelDescriptor, field: string, value: unknown): Promise<void> {
    if (
      (typeof value === "string" && mayCollateAsFieldCiphertextText(value)) ||
      (value instanceof Uint8Array && (await this.#isCiphertext(value)))
    ) {
      reject(`${model.name}.${field} already holds ciphertext: refusing to encrypt it twice`);
    }
  }

  /**
   * Whether `bytes` are a field value of this engine: a FORMAT §6.1 header whose data key id
   * names a key of the data-key store. Bytes carry no prefix as text does, and ordinary bytes
   * may start like a header (one value in 128 starts with 0xC1 or 0xC2); the id of a key that
   * exists is what they cannot match by chance. Only bytes shaped like a header cost a look-up.
   */
  async #isCiphertext(bytes: Uint8Array): Promise<boolean> {
    try {
      return !(await this.engine.inspect(bytes)).legacy;
    } catch (error) {
      // Not a header, or the id of no key: ordinary bytes.
      if (error instanceof InvalidCiphertextError) return false;
      throw error;
    }
  }

  /**
   * Encrypts a write's data in place, walking nested writes of related models. `where` is an
   * update's; `rowSources` hold more of the row's own columns (the row an update read first),
   * read for the columns fields add to the context. A create has only its data: a row is
   * created with what the data holds, never with the columns of a where beside it.
   */
  async writeData(
    model: ModelDescriptor,
    data: Json,
    ctx: Ctx | undefined,
    where?: Json,
    rowSources: readonly Json[] = [],
  ): Promise<void> {
    for (const column of model.blindIndexNames) {
      if (column in data)
        reject(`${model.name}.${column} is a blind index: it is computed, not written`);
    }
    const computed = refuseComputedContext(model, data);
    // Columns a relation write sets through their foreign key, where that is let through.
    const relinked = refuseRelinking(model, data, where !== undefined);
    // As in Prisma, a key holding `undefined` writes nothing (`{ ...input }` with optional
    // fields left out): it neither changes a context column nor needs a value encrypted.
    const touchesContext = model.context.fromRow.some((k) => data[k] !== undefined);
    const encryptedKeys = model.encryptedNames.filter((k) => data[k] !== undefined);
    if (
      touchesContext &&
      where !== undefined &&
      encryptedKeys.length < model.encryptedNames.length
    ) {
      reject(
        `${model.name}: changing ${model.context.fromRow.join(", ")} would orphan encrypted values bound to it; rewrite every encrypted field in the same update`,
      );
    }
    if (where !== undefined) {
      const changed = model.contextColumns.filter((k) => data[k] !== undefined);
      const orphans = model.encryptedNames.filter(
        (f) =>
          data[f] === undefined &&
          (model.encrypted[f] as EncryptedFieldDescriptor).context.fromRow.some((k) =>
            changed.includes(k),
          ),
      );
      if (orphans.length > 0) {
        reject(
          `${model.name}: changing ${changed.join(", ")} would orphan the values of ${orphans.join(", ")} bound to it; rewrite ${orphans.join(", ")} in the same update`,
        );
      }
    }
    // A context column set to null leaves the row no context (a read finds none in it, and a
    // create without one is refused): `pickColumn` would take the where's value, the row's old
    // one or a parent's instead, and seal values under a context the row no longer holds. Only
    // null can be written to the fields bound to it.
    const nulled = model.contextColumns.filter((k) => writesNull(data[k]));
    const sealedUnderNull = fieldsBoundTo(model, nulled).filter(
      (f) => data[f] !== undefined && !writesNull(data[f]),
    );
    if (sealedUnderNull.length > 0) {
      const columns = nulled.join(", ");
      const fields = sealedUnderNull.join(", ");
      reject(
        `${model.name}: ${columns} set to null cannot bind encrypted values (a context column that is null binds none, and the row would no longer decrypt); write null to ${fields} too, or give ${columns} a value`,
      );
    }
    const sources =
      where === undefined
        ? [data, ...rowSources]
        : [data, where, ...andClauses(model, where), ...rowSources];
    let modelCtx = ctx;
    const fieldCtxs = new Map<ModelContextDescriptor, FieldCtx>();
    for (const field of encryptedKeys) {
      const spec = model.encrypted[field] as EncryptedFieldDescriptor;
      let value = data[field];
      // `{ set }` is Prisma's update form; a JSON field's own value may be any object, so only
      // an object whose sole key is "set" is unwrapped there.
      const wrapped =
        isObject(value) &&
        "set" in value &&
        (spec.type !== "json" || Object.keys(value).length === 1);
      if (wrapped) value = (value as Json).set;
      else if (isObject(value) && spec.type !== "json" && spec.type !== "decimal") {
        reject(`${model.name}.${field} is encrypted: only plain values or { set } can be written`);
      }
      const indexes = model.indexesOf[field] ?? [];
      // Null is stored as null, under no context: a row without one may clear its fields.
      if (value === null) {
        for (const [column] of indexes) data[column] = null;
        continue;
      }
      modelCtx ??= this.requireContext(model, [data, where]);
      let bound = fieldCtxs.get(spec.context);
      if (bound === undefined) {
        const rowCtx = this.requireFieldContext(model, field, spec.context, modelCtx, sources);
        refuseRespelled(model, field, spec, rowCtx, "write");
        bound = boundTo(spec, rowCtx, modelCtx);
        fieldCtxs.set(spec.context, bound);
      }
      const sealed = await this.encryptValue(model, field, spec, bound, value);
      data[field] = wrapped ? { set: sealed } : sealed;
      for (const [column, index] of indexes) {
        data[column] = await this.engine.blindIndex(
          bindingOf(model, column, bound),
          index,
          value,
          this.options,
        );
      }
    }
    for (const related of this.related(model)) {
      const nested = data[related.relation];
      if (!isObject(nested)) continue;
      if (related.moves !== undefined) refuseMoving(model, related, nested);
      // A created row takes its parent's context only if the parent keeps it.
      const parentCtx = model.context.fromRow.some(
        (k) => nulled.includes(k) || relinked.has(k) || computed.includes(k),
      )
        ? undefined
        : ctx;
      await this.nestedWrites(related.target, nested, inheritedContext(related, parentCtx));
    }
  }

  /**
   * Nested writes of a related model. Rows that already exist (nested update, updateMany,
   * upsert's update, the wheres of connect and the like) hold their own context columns, which
   * need not equal the parent's (a post of tenant t2 under an author of t1): their context
   * comes from the nested data or an exact equality in the nested where, never from the
   * parent. Only a created row takes the parent's context when its data has none, as a
   * relation whose foreign key includes the context column sets it.
   */
  async nestedWrites(model: ModelDescriptor, ops: Json, parent: Ctx | undefined): Promise<void> {
    const each = async (value: unknown, fn: (item: Json) => Promise<void>) => {
      for (const item of Array.isArray(value) ? value : [value]) if (isObject(item)) await fn(item);
    };
    const create = (item: Json) => this.writeData(model, item, this.context(model, [item], parent));
    const update = async (data: Json, where: Json | undefined) => {
      const sources = where === undefined ? [data] : [data, where, ...andClauses(model, where)];
      await this.writeData(model, data, this.context(model, sources), where ?? {});
    };
    await each(ops.create, create);
    if (isObject(ops.createMany)) await each(ops.createMany.data, create);
    await each(ops.connectOrCreate, async (item) => {
      if (isObject(item.where)) await this.where(model, item.where, undefined, NESTED_UNIQUE);
      if (isObject(item.create)) await create(item.create);
    });
    await each(ops.upsert, async (item) => {
      const where = isObject(item.where) ? item.where : undefined;
      if (where !== undefined) await this.where(model, where, undefined, NESTED_UNIQUE);
      if (isObject(item.create)) await create(item.create);
      if (isObject(item.update)) await update(item.update, where);
    });
    await each(ops.update, async (item) => {
      // To-many: `{ where, data }`, in a list or alone; to-one: that or the data itself.
      const form = Array.isArray(ops.update) ? "envelope" : this.#nestedUpdateForm(model, item);
      if (form === "data") return update(item, undefined);
      if (form === "neither") return;
      const where = isObject(item.where) ? item.where : undefined;
      if (where !== undefined) await this.where(model, where, undefined, NESTED_UNIQUE);
      if (isObject(item.data)) await update(item.data, where);
    });
    await each(ops.updateMany, async (item) => {
      const where = isObject(item.where) ? item.where : undefined;
      if (where !== undefined) await this.where(model, where, undefined);
      if (isObject(item.data)) await update(item.data, where);
    });
    for (const key of ["connect", "disconnect", "set", "delete"]) {
      await each(ops[key], (item) => this.where(model, item, undefined, NESTED_UNIQUE));
    }
    await each(ops.deleteMany, (item) => this.where(model, item, undefined));
  }

  /**
   * How a nested `update` of `model` that is not a list reads (see `nestedUpdateForm`), settled
   * where Prisma's choice depends on the values: "neither" when neither reading writes anything
   * the extension handles, else refused.
   */
  #nestedUpdateForm(model: ModelDescriptor, item: Json): "envelope" | "data" | "neither" {
    const isField = isFieldOf(model, this.columnsOf(model.name));
    const form = nestedUpdateForm(item, isField);
    if (form !== "either") return form;
    const handled = (data: Json) => definedKeys(data).some((k) => handles(model, k));
    const where = item.where;
    if (
      !handled(item) &&
      !handled(item.data as Json) &&
      !(isObject(where) && definedKeys(where).length > 0)
    ) {
      return "neither";
    }
    const own = `write the fields as the update itself with a key besides where and data (update: { data: …, secret: … })`;
    const fix = !isField("where")
      ? `${own}, or give the { where, data } form a where, which ${model.name} has no field for (update: { where: {}, data: { … } })`
      : isObject(where)
        ? `in a to-many relation give the update as a list (update: [{ where, data }]), which only the { where, data } form takes; in a to-one relation ${own}, or update the ${model.name} row with a query of its own`
        : `${own}, or update the ${model.name} row with a query of its own`;
    reject(
      `${model.name}: a nested update { ${definedKeys(item).join(", ")} } reads both as Prisma's { where, data } form and as ${model.name}'s own data, which has a field named data${isObject(where) ? " and one named where" : ""}: Prisma takes the first whose values all fit their fields' types, so the extension cannot tell which fields are written, nor encrypt them; ${fix}`,
    );
  }

  /**
   * Refuses a where entry on `model.key` (`operand`, its value) that compares it with a field
   * reference (`prisma.user.fields.email`), when either column is encrypted (or a blind index):
   * the database compares the two columns as stored, ciphertext with plaintext (never equal, so
   * `not` matches every row) or two ciphertexts sealed under different bindings.
   */
  #refuseCiphertextRef(
    model: ModelDescriptor,
    key: string,
    encrypted: boolean,
    operand: unknown,
  ): void {
    const ref = fieldRefIn(operand);
    if (ref === undefined) return;
    const target = this.model(ref.modelName);
    const index = target !== undefined && Object.hasOwn(target.blindIndexes, ref.name);
    const named = index || (target !== undefined && Object.hasOwn(target.encrypted, ref.name));
    if (!encrypted && !named) return;
    const which = encrypted
      ? `${model.name}.${key} is encrypted`
      : `${ref.modelName}.${ref.name} is ${index ? "a blind index" : "encrypted"}`;
    reject(
      `${model.name}.${key} is compared with the field reference ${ref.modelName}.${ref.name}, and ${which}: the database compares the two columns as stored, ciphertext rather than values; compare the decrypted values in the application`,
    );
  }

  /**
   * Rewrites equality filters on encrypted fields; any other filter on them is an error. With
   * `unique`, `where` is a unique input: an exact equality on a deterministic field there (or in
   * a compound unique key) keeps one value, and several stored forms go to `unique` (see
   * UniqueWhere); elsewhere a value with several forms becomes `in` of them.
   */
  async where(
    model: ModelDescriptor,
    where: Json,
    inherited: Ctx | undefined,
    unique?: UniqueWhere,
    outer: ScopeFrame = TOP_FRAME,
  ): Promise<void> {
    // Conditions over two columns (a blind index and its field's legacy rows), added once the
    // walk is done so that it never walks them.
    const added: Json[] = [];
    let ctx: Ctx | undefined;
    const resolve = () => {
      ctx ??= this.requireContext(model, [where, ...andClauses(model, where)], inherited);
      return ctx;
    };
    let frame: ScopeFrame | undefined;
    const frameHere = () => {
      // Most models bind nothing to the scope: their clauses keep the frame they are in.
      frame ??=
        allScopeKeys(model).length === 0
          ? outer
          : scopeFrame(model, [where, ...andClauses(model, where)], outer);
      return frame;
    };
    for (const key of Object.keys(where)) {
      const value = where[key];
      if (key === "AND" || key === "OR" || key === "NOT") {
        const ctxHere = this.clauseContext(model, [where, ...andClauses(model, where)], inherited);
        const inner = key === "NOT" ? { ...frameHere(), negated: true } : frameHere();
        for (const clause of Array.isArray(value) ? value : [value]) {
          if (isObject(clause)) await this.where(model, clause, ctxHere, undefined, inner);
        }
        continue;
      }
      if (key in model.blindIndexes) {
        reject(
          `${model.name}.${key} is a blind index: filter on ${model.blindIndexes[key]?.of} instead`,
        );
      }
      const spec = model.encrypted[key];
      if (spec !== undefined) {
        this.#refuseCiphertextRef(model, key, true, value);
        const resolveField = (): FieldCtx => {
          const modelCtx = resolve();
          const rowCtx = this.requireFieldContext(
            model,
            key,
            spec.context,
            modelCtx,
            [where, ...andClauses(model, where)],
            inherited,
          );
          refuseRespelled(model, key, spec, rowCtx, "lookup");
          return boundTo(spec, rowCtx, modelCtx);
        };
        const scoped = scopeKeysOf(model, spec);
        const exclusion =
          scoped.length === 0
            ? undefined
            : {
                negated: frameHere().negated,
                unpinned: scoped.filter((k) => !frameHere().pinned.includes(k)),
              };
        const clause = await this.rewriteFilter(
          model,
          key,
          spec,
          where,
          resolveField,
          unique,
          exclusion,
        );
        if (clause !== undefined) added.push(clause);
        continue;
      }
      if (isCompoundUnique(model, key, value)) {
        const ctxHere = this.clauseContext(model, [value, where], inherited);
        await this.where(model, value, ctxHere, unique ?? COMPOUND_UNIQUE, frameHere());
        continue;
      }
      // A related row's context is its own (an author of t1 may write posts of t2): a lookup
      // in a relation filter needs the related model's context pinned inside that filter.
      const target = ownValue(model.relations, key);
      if (target === undefined) {
        this.#refuseCiphertextRef(model, key, false, value);
      } else if (isObject(value)) {
        const targetModel = this.model(target);
        if (targetModel === undefined) continue;
        const filters = ["some", "every", "none", "is", "isNot"].filter((f) => f in value);
        // The related rows' columns are their own: none of this row's pins holds for them.
        const related = (negates: boolean): ScopeFrame => ({
          negated: outer.negated || negates,
          pinned: [],
        });
        if (filters.length === 0) {
          await this.where(targetModel, value, undefined, undefined, related(false));
        }
        for (const f of filters) {
          const inner = value[f];
          if (isObject(inner)) {
            await this.where(targetModel, inner, undefined, undefined, related(NEGATING.has(f)));
          }
        }
      }
    }
    if (added.length > 0) {
      const and = where.AND;
      where.AND = [...(and === undefined ? [] : Array.isArray(and) ? and : [and]), ...added];
    }
  }

  /**
   * Rewrites the filter on the encrypted `field` in `where` to what the database holds; returns a
   * condition to add to the where's AND when it spans two columns (a blind index whose field
   * still holds legacy plaintext rows). Outside migrations a value has one stored form and the
   * filter keeps its shape. While one is under way a value may have several (the current one,
   * those under `previousKeyIds`, a legacy one): `equals` becomes `in` of them, `in` the union
   * of its values' forms, `not` and `notIn` exclude every form; several positive filters keep
   * the forms all of them admit. An exact equality of a unique input (`unique`) keeps one value.
   */
  async rewriteFilter(
    model: ModelDescriptor,
    field: string,
    spec: EncryptedFieldDescriptor,
    where: Json,
    resolve: () => FieldCtx,
    unique?: UniqueWhere,
    exclusion?: { readonly negated: boolean; readonly unpinned: readonly string[] },
  ): Promise<Json | undefined> {
    const value = where[field];
    // Prisma reads `undefined` as "no filter" (`where: { email: undefined }` matches everything).
    if (value === null || value === undefined) return undefined;
    // A filter is an object literal; an instance (Prisma's Decimal) is a value to look up.
    const isFilter = isObject(value) && isLiteral(value);
    const filter: Json = isFilter ? value : { equals: value };
    for (const op of Object.keys(filter)) {
      if (!SCALAR_FILTERS.has(op)) {
        reject(
          `${model.name}.${field} is encrypted: the "${op}" filter cannot run on ciphertext (use equals, in, notIn or not)`,
        );
      }
    }
    for (const op of Object.keys(filter)) if (filter[op] === undefined) delete filter[op];
    // `null`, `not: null` and `not: { equals: null }` test for null, which is stored as null.
    const onlyNulls = Object.entries(filter).every(
      ([op, v]) =>
        v === null ||
        (op === "not" &&
          isObject(v) &&
          Object.keys(v).length > 0 &&
          Object.entries(v).every(([iop, iv]) => iop === "equals" && iv === null)),
    );
    if (onlyNulls) return undefined;
    const index = model.indexesOf[field]?.[0];
    if (spec.mode !== "deterministic" && index === undefined) {
      reject(
        `${model.name}.${field} is randomized: equality lookups need @kms.encrypted(deterministic) or a @kms.blindIndex`,
      );
    }
    if (exclusion !== undefined && exclusion.unpinned.length > 0) {
      refuseUnscopedExclusion(model, field, filter, exclusion.negated, exclusion.unpinned);
    }
    const bound = resolve();
    const ops = Object.keys(filter);
    if (
      unique !== undefined &&
      spec.mode === "deterministic" &&
      ops.length === 1 &&
      ops[0] === "equals" &&
      filter.equals !== null
    ) {
      const forms = await this.lookupForms(model, field, spec, bound, filter.equals);
      // A bare value stays bare: compound unique inputs accept no filter objects.
      const holder = isFilter ? { equals: forms[0] } : where;
      const key = isFilter ? "equals" : field;
      if (isFilter) where[field] = holder;
      else where[field] = forms[0];
      if (forms.length > 1) {
        const name = `${model.name}.${field}`;
        if (!Array.isArray(unique)) {
          reject(
            `${name} is looked up by one exact value in ${unique.refuse}, but its value has several stored forms while a migration is under way (previousKeyIds, legacyPlaintext), and a unique input cannot try them in turn; look the row up first with findUnique or findFirst (which match every form) and use its id, or finish the migration`,
          );
        }
        unique.push({ holder, key, forms, field, name });
      }
      return undefined;
    }
    const formsOf = async (v: unknown): Promise<ValueForms> => {
      if (v === null) return { sealed: [null], legacy: [] };
      if (spec.mode === "deterministic") {
        return { sealed: await this.lookupForms(model, field, spec, bound, v), legacy: [] };
      }
      // A blind index hashes any JSON value, so a number looked up on a string field would
      // silently match nothing where a plain column would refuse it.
      if (spec.type === "string" && typeof v !== "string") {
        reject(`${model.name}.${field} is a string: got ${typeof v} in the filter`);
      }
      const [column, bidx] = index as NonNullable<typeof index>;
      const sealed = await this.engine.blindIndexForms(
        bindingOf(model, column, bound),
        bidx,
        v,
        this.options,
      );
      const legacy =
        spec.storage === "text"
          ? this.engine.legacyForm(bindingOf(model, field, bound), spec, v, "text")
          : this.engine.legacyForm(bindingOf(model, field, bound), spec, v, "bytes");
      return { sealed, legacy: legacy === undefined ? [] : [legacy] };
    };
    // Each operator with the forms of its values; `not: { equals }` as `not`.
    const terms: { readonly op: string; readonly forms: readonly ValueForms[] }[] = [];
    for (const [op, v] of Object.entries(filter)) {
      if (op === "in" || op === "notIn") {
        if (!Array.isArray(v)) reject(`${model.name}.${field}: "${op}" expects an array`);
        terms.push({ op, forms: await Promise.all(v.map(formsOf)) });
      } else if (op === "not" && isObject(v)) {
        const inner = Object.entries(v);
        for (const [iop] of inner) {
          if (iop !== "equals")
            reject(`${model.name}.${field}: only "not: { equals }" works on ciphertext`);
        }
        terms.push({
          op: "not:equals",
          forms: await Promise.all(inner.map(([, iv]) => formsOf(iv))),
        });
      } else {
        terms.push({ op, forms: [await formsOf(v)] });
      }
    }
    const single = terms.every((t) =>
      t.forms.every((f) => f.sealed.length === 1 && f.legacy.length === 0),
    );
    if (single) {
      const out: Json = {};
      for (const { op, forms } of terms) {
        const first = forms.map((f) => f.sealed[0]);
        if (op === "in" || op === "notIn") out[op] = first;
        else if (op === "not:equals") out.not = first.length === 0 ? {} : { equals: first[0] };
        else out[op] = first[0];
      }
      // A bare value stays bare: compound unique inputs accept no filter objects.
      const rewritten = isFilter ? out : out.equals;
      if (spec.mode === "deterministic") {
        where[field] = rewritten;
      } else {
        delete where[field];
        where[(index as NonNullable<typeof index>)[0]] = rewritten;
      }
      return undefined;
    }
    // A migration under way. Null tests stay on the field (null exactly when its index is, in
    // migrated and legacy rows alike); values become the forms each operator admits.
    const nulls: Json = {};
    const positive: unknown[][] = [];
    const positiveLegacy: unknown[][] = [];
    const negative: unknown[] = [];
    const negativeLegacy: unknown[] = [];
    for (const { op, forms } of terms) {
      const isNull =
        forms.length === 1 && forms[0]?.sealed[0] === null && op !== "in" && op !== "notIn";
      if (isNull) {
        nulls[op === "not:equals" ? "not" : op] = op === "not:equals" ? { equals: null } : null;
        continue;
      }
      const sealed = forms.flatMap((f) => f.sealed);
      const legacy = forms.flatMap((f) => f.legacy);
      if (op === "equals" || op === "in") {
        positive.push(sealed);
        positiveLegacy.push(legacy);
      } else {
        negative.push(...sealed);
        negativeLegacy.push(...legacy);
      }
    }
    const admits = (lists: readonly unknown[][], excluded: readonly unknown[]): Json => {
      const out: Json = {};
      if (lists.length > 0) out.in = intersection(lists);
      if (excluded.length > 0) out.notIn = union(excluded);
      return out;
    };
    const sealedFilter = admits(positive, negative);
    if (spec.mode === "deterministic") {
      where[field] = { ...nulls, ...sealedFilter };
      return undefined;
    }
    const column = (index as NonNullable<typeof index>)[0];
    if (Object.keys(nulls).length > 0) where[field] = nulls;
    else delete where[field];
    const hasLegacy = positiveLegacy.some((l) => l.length > 0) || negativeLegacy.length > 0;
    if (!hasLegacy) {
      where[column] = sealedFilter;
      return undefined;
    }
    // Legacy rows have no index yet: they are matched on the field, by the value in clear.
    return {
      OR: [
        { [column]: sealedFilter },
        // Not null: a null field is no legacy value, and `not` never matches null.
        { [column]: null, [field]: { not: null, ...admits(positiveLegacy, negativeLegacy) } },
      ],
    };
  }

  /**
   * Makes sure a result holds the context columns its values decrypt with, wherever the query's
   * `select` or `omit`, or the client's global omit (`new PrismaClient({ omit })`), leaves them
   * out; returns what it added, to take out of the result again so that it has the shape asked
   * for. `rows`: the operation returns rows, which Prisma shapes with the global omit. `write`:
   * they are the rows a write returns (at every depth), for which a select reads every context
   * column of the model.
   *
   * A result field of another extension (`$extends({ result })`) may need any column: Prisma
   * reads the columns it `needs` below this hook, even ones the query or the client omits
   * (encrypted ones are decrypted here), and computes it from this hook's result, provided the
   * row has them all as own properties. So a column added here is hidden (non-enumerable) where
   * such a field may need it, and removed where none can (see `ResultFieldRegistry`); Prisma
   * then hides it behind the field, as it does without this extension, once the query hook has
   * taken it out of the shape Prisma keeps (`restoreShape`), which may also leave it as it is.
   */
  prepareRead(model: ModelDescriptor, args: Json, rows = true, write = false): Strip {
    let strip: Strip = NOTHING_ADDED;
    const select = args.select;
    if (isObject(select)) {
      if (model.encryptedNames.length > 0) {
        // With a select the row holds nothing else (Prisma ignores the global omit), and Prisma
        // computes the result fields it names.
        const fields = this.resultFields(model.name);
        const needs = this.#selectedNeeds(model, select, fields?.needs);
        let read: readonly string[] = model.contextColumns;
        // A write's rows are few and dearly encrypted: every context column, whatever a field
        // unknown to the extension (see `withoutContext`) adds below, rather than a write that
        // commits and then fails.
        if (needs !== undefined && !write) {
          const values = model.encryptedNames.filter((f) => select[f] === true || needs.has(f));
          read =
            values.length === 0
              ? []
              : [
                  ...model.context.fromRow,
                  ...values.flatMap((f) => model.encrypted[f]?.context.fromRow ?? []),
                ];
        }
        const added = read.filter((key) => select[key] !== true);
        for (const key of added) select[key] = true;
        if (added.length > 0) {
          strip = {
            ...sortSelected(select, fields, needs, added, false),
            via: "select",
            ownOmits: [],
            relations: {},
          };
        }
      }
    } else if (model.encryptedNames.length > 0) {
      const omit: Json = isObject(args.omit) ? args.omit : {};
      const omits = this.#omits(model, omit, rows);
      const added = model.contextColumns.filter(omits);
      if (added.length > 0) {
        strip = {
          ...this.#sortOmitted(model, omits, added),
          via: "omit",
          ownOmits: added.filter((key) => Object.hasOwn(omit, key)),
          relations: {},
        };
        for (const key of added) omit[key] = false;
        args.omit = omit;
      }
    }
    for (const container of [args.select, args.include]) {
      if (!isObject(container)) continue;
      for (const { relation, target } of this.related(model)) {
        const nested = container[relation];
        let inner: Strip | undefined;
        if (isObject(nested)) {
          inner = this.prepareRead(target, nested, rows, write);
        } else if (nested === true) {
          // `posts: true` reads the related rows' default shape, which the global omit cuts.
          const shaped: Json = {};
          inner = this.prepareRead(target, shaped, rows, write);
          if (Object.keys(shaped).length > 0) container[relation] = shaped;
        }
        if (inner !== undefined && reshapes(inner)) {
          if (strip === NOTHING_ADDED) strip = { ...NOTHING_ADDED, relations: {} };
          strip.relations[relation] = inner;
        }
      }
    }
    return strip;
  }

  /**
   * Takes what `prepareRead` added (`strip`) out of `args`, the arguments the innermost query
   * hook ran the query with (Prisma shapes the result fields of other extensions by them),
   * keeping what the hooks of extensions applied after this one added there; returns them, with
   * what rows lose and hide of the added columns under them. Objects are copied where changed.
   *
   * A column added here that such a hook also adds (or copies: `{ ...args.select }` cannot be
   * told from it) counts as added here. A column a result field the select names is sure to
   * need (see `ResultFields.certain`) stays in the rows as it is: Prisma hides it behind the
   * field, as it does without this extension, and a hook of an extension applied before this
   * one that copies the rows (`{ ...row }`) keeps it for the field.
   */
  restoreShape(
    model: ModelDescriptor,
    args: Json,
    strip: Strip,
    rows: boolean,
  ): { args: Json; strip: Strip } {
    const out: Json = { ...args };
    const added = [...strip.removed, ...strip.hidden];
    let sorted: Pick<Strip, "removed" | "hidden"> = strip;
    if (strip.via === "select" && isObject(args.select)) {
      const select: Json = { ...args.select };
      for (const key of added) delete select[key];
      out.select = select;
      const fields = this.resultFields(model.name);
      const needs = this.#selectedNeeds(model, select, fields?.needs);
      sorted = sortSelected(select, fields, needs, added, true);
    } else if (strip.via === "omit" && isObject(args.omit)) {
      const omit: Json = { ...args.omit };
      for (const key of added) {
        if (strip.ownOmits.includes(key)) omit[key] = true;
        else delete omit[key];
      }
      if (Object.keys(omit).length > 0) out.omit = omit;
      else delete out.omit;
      sorted = this.#sortOmitted(model, this.#omits(model, omit, rows), added);
    }
    const relations: Record<string, Strip> = { ...strip.relations };
    for (const name of ["select", "include"]) {
      const container = out[name];
      if (!isObject(container)) continue;
      let copy: Json | undefined;
      for (const { relation, target } of this.related(model)) {
        const inner = strip.relations[relation];
        const nested = container[relation];
        if (inner === undefined || !isObject(nested)) continue;
        const restored = this.restoreShape(target, nested, inner, rows);
        copy ??= { ...container };
        copy[relation] = restored.args;
        relations[relation] = restored.strip;
      }
      if (copy !== undefined) out[name] = copy;
    }
    return { args: out, strip: { ...strip, ...sorted, relations } };
  }

  /**
   * Whether a query's rows leave out a column: by its own `omit` (a key of its own, even one
   * holding `undefined`, overrides the client's: Prisma spreads the one over the other, so
   * `omit: { tenantId: false }` returns the column), else by the client's global omit, which
   * applies to operations returning `rows`.
   */
  #omits(model: ModelDescriptor, omit: Json, rows: boolean): (key: string) => boolean {
    const global = rows ? ownValue(this.globalOmit, lowerFirst(model.name)) : undefined;
    return (key) =>
      (Object.hasOwn(omit, key) ? omit[key] : isObject(global) ? global[key] : undefined) === true;
  }

  /**
   * Of the columns a read `added` back under an omit, those no result field Prisma computes on
   * the rows (those not omitted) can need, to remove, and the others, to hide. A field may
   * belong to another client made from the same one, where the rows need not be hidden behind
   * it: none stays as it is.
   */
  #sortOmitted(
    model: ModelDescriptor,
    omits: (key: string) => boolean,
    added: readonly string[],
  ): Pick<Strip, "removed" | "hidden"> {
    const fields = this.resultFields(model.name);
    let needed: Set<string> | undefined;
    if (fields !== undefined) {
      needed = new Set();
      for (const [name, needs] of fields.needs) {
        if (!omits(name)) for (const need of needs) needed.add(need);
      }
    }
    const sorted = { removed: [] as string[], hidden: [] as string[] };
    for (const key of added) {
      (needed === undefined || needed.has(key) ? sorted.hidden : sorted.removed).push(key);
    }
    return sorted;
  }

  /**
   * The columns the result fields of other extensions that `select` names need (a field named
   * like a column among them); undefined where it names a key that is neither a column, a
   * relation nor a result field the extension knows of, which may then need any column.
   */
  #selectedNeeds(
    model: ModelDescriptor,
    select: Json,
    fields: ResultFieldNeeds | undefined,
  ): ReadonlySet<string> | undefined {
    const isColumn = this.columnsOf(model.name);
    const needs = new Set<string>();
    for (const [key, value] of Object.entries(select)) {
      if (!value || key === "_count" || Object.hasOwn(model.relations, key)) continue;
      const field = fields?.get(key);
      if (field !== undefined) {
        for (const need of field) needs.add(need);
      } else if (isColumn !== undefined && !isColumn(key)) {
        return undefined;
      }
    }
    return needs;
  }

  /**
   * Refuses ordering and distinct over ciphertext wherever a query asks for them: its own
   * `orderBy` (a related row's fields too: `orderBy: { author: { name } }`) and `distinct`, and
   * those of the relations it includes or selects, at any depth. Ordering by any encrypted field
   * is meaningless. Distinct compares stored values, equal only for equal values sealed under
   * one context: it is refused on a randomized field, whose equal values differ, and on a
   * deterministic one bound to columns of its row (the model's `@kms.context(tenantId)` or the
   * field's own `@kms.context(recordId)`) that the query's where does not pin to one value, as
   * each row then seals under its own.
   */
  refuseCiphertextOrder(model: ModelDescriptor, args: Json): void {
    if (args.orderBy !== undefined) this.refuseOrderBy(model, args.orderBy);
    const distinct = typeof args.distinct === "string" ? [args.distinct] : args.distinct;
    if (Array.isArray(distinct)) {
      for (const key of distinct) {
        const spec = typeof key === "string" ? ownValue(model.encrypted, key) : undefined;
        if (spec === undefined) continue;
        if (spec.mode !== "deterministic") {
          reject(`${model.name}.${key} is encrypted: distinct cannot compare ciphertext`);
        }
        // The model's columns bind the field as its own do: a where without the tenant leaves
        // one row per (tenant, value). An included relation's where counts alone, as the
        // descriptor does not know which parent column its foreign key references.
        const bound = [...new Set([...model.context.fromRow, ...spec.context.fromRow])];
        if (bound.length === 0) continue;
        const where = isObject(args.where) ? args.where : {};
        const sources = [where, ...andClauses(model, where)];
        const unpinned = bound.filter(
          (k) => pickColumn(model, k, sources, undefined) === undefined,
        );
        if (unpinned.length > 0) {
          const columns = unpinned.join(", ");
          reject(
            `${model.name}.${key} is bound to its row's ${columns}: each row seals an equal value differently, so distinct cannot compare them unless the where pins ${columns} to one value (a plain value or { equals })`,
          );
        }
      }
    }
    for (const container of [args.select, args.include]) {
      if (!isObject(container)) continue;
      for (const { relation, target } of this.related(model)) {
        const nested = container[relation];
        if (isObject(nested)) this.refuseCiphertextOrder(target, nested);
      }
    }
  }

  /** One `orderBy` (an object or a list of them) of `model`, through ordering by relations. */
  refuseOrderBy(model: ModelDescriptor, orderBy: unknown): void {
    for (const item of Array.isArray(orderBy) ? orderBy : [orderBy]) {
      if (!isObject(item)) continue;
      for (const [key, value] of Object.entries(item)) {
        if (value === undefined) continue;
        // `_relevance: { fields, search, sort }` (full-text search) ranks the fields' text.
        const fields = key === "_relevance" && isObject(value) ? [value.fields].flat() : [key];
        for (const field of fields) {
          if (typeof field === "string" && ownValue(model.encrypted, field) !== undefined) {
            reject(`${model.name}.${field} is encrypted: ordering by ciphertext is meaningless`);
          }
        }
        // `author: { name: "asc" }` orders by the related row's field; `posts: { _count }` by a
        // count, which no field of Post is called.
        const target = ownValue(model.relations, key);
        const targetModel = target === undefined ? undefined : this.model(target);
        if (targetModel !== undefined) this.refuseOrderBy(targetModel, value);
      }
    }
  }

  /** Rewrites the wheres of included relations, each in the related rows' own context. */
  async relationWheres(model: ModelDescriptor, args: Json): Promise<void> {
    for (const container of [args.select, args.include]) {
      if (!isObject(container)) continue;
      // Filtered relation counts (`_count: { select: { posts: { where } } }`) filter too.
      const counted = isObject(container._count) ? container._count.select : undefined;
      for (const { relation, target: targetModel } of this.related(model)) {
        const count = isObject(counted) ? counted[relation] : undefined;
        if (isObject(count) && isObject(count.where)) {
          await this.where(targetModel, count.where, undefined);
        }
        const nested = container[relation];
        if (!isObject(nested)) continue;
        if (isObject(nested.where)) await this.where(targetModel, nested.where, undefined);
        if (isObject(nested.cursor)) {
          await this.where(targetModel, nested.cursor, undefined, CURSOR_UNIQUE);
        }
        await this.relationWheres(targetModel, nested);
      }
    }
  }

  /**
   * Queues the encrypted values of a result row (and of its included relations) for one
   * `decryptMany`, which `readResult` writes back in place.
   */
  collectRow(
    model: ModelDescriptor,
    row: unknown,
    strip: Strip | undefined,
    inherited: Ctx | undefined,
    jobs: DecryptJobs,
  ): void {
    if (!isObject(row)) return;
    let shared: RowContext | undefined;
    let fieldCtxs: Map<ModelContextDescriptor, Ctx> | undefined;
    const names = model.encryptedNames;
    for (let i = 0; i < names.length; i++) {
      const field = names[i] as string;
      const stored = row[field];
      if (stored === undefined || stored === null) continue;
      shared ??=
        this.rowContext(model, row, inherited, jobs) ??
        withoutContext(model, field, model.context.fromRow, row);
      const ctx = shared.ctx;
      const spec = model.encrypted[field] as EncryptedFieldDescriptor;
      let binding: FieldBinding;
      if (!hasOwnContext(spec)) {
        // Frozen (over a frozen context): the engine then reads it once for the whole result.
        binding = shared.bindings[i] ??= Object.freeze({ model: model.name, field, context: ctx });
      } else {
        fieldCtxs ??= new Map();
        let own = fieldCtxs.get(spec.context);
        if (own === undefined) {
          // The row's own columns only: `inherited` is a parent row's context.
          own = this.fieldContext(model, field, spec.context, ctx, [row]);
          if (own === undefined) withoutContext(model, field, spec.context.fromRow, row);
          fieldCtxs.set(spec.context, Object.freeze(own));
        }
        // Decryption finds the data key from the value and ignores keyContext; it is given so
        // that the binding reads as the one the value was written with.
        binding = { model: model.name, field, context: own, keyContext: ctx };
      }
      // Every value goes to one decryptMany: it opens the values under cached keys together,
      // one AES call per run of values under one key, and loads the other keys at once.
      // One array, the row and field on the item: three pushes per value (into arrays that grow
      // to the size of the result) were most of this walk's time.
      jobs.items.push({ binding, spec, stored: stored as string | Uint8Array, row, field });
    }
    // Most models relate to none: no lookup of their relations per row.
    if (model.relationNames.length > 0) {
      const ctx = shared?.ctx ?? inherited;
      for (const { relation, target } of this.related(model)) {
        const value = row[relation];
        if (value === undefined || value === null) continue;
        const nestedStrip = strip?.relations[relation];
        if (Array.isArray(value)) {
          for (const r of value) this.collectRow(target, r, nestedStrip, ctx, jobs);
        } else {
          this.collectRow(target, value, nestedStrip, ctx, jobs);
        }
      }
    }
    if (strip !== undefined && strip.removed.length + strip.hidden.length > 0) {
      jobs.strips.push([row, strip]);
    }
  }

  /**
   * `context(model, [row], inherited)`, shared between the rows of one result that have the
   * same context values (usually all of them) with the bindings built on it: one object, so
   * the engine's binding caches hit, and no context or binding is built per row.
   */
  rowContext(
    model: ModelDescriptor,
    row: Json,
    inherited: Ctx | undefined,
    jobs: DecryptJobs,
  ): RowContext | undefined {
    const key = contextValuesKey(model.context.fromRow, row);
    if (key === undefined) {
      const ctx = this.context(model, [row], absentFrom(row, inherited));
      return ctx === undefined ? undefined : { ctx, bindings: [] };
    }
    const last = jobs.last;
    if (last !== undefined && last.model === model && last.key === key) return last.shared;
    let byKey = jobs.contexts.get(model);
    if (byKey === undefined) {
      byKey = new Map();
      jobs.contexts.set(model, byKey);
    }
    let shared = byKey.get(key);
    if (shared === undefined) {
      // Every column is a string of the row: `inherited` is not read, and a context is found.
      const ctx = this.context(model, [row], inherited) as Ctx;
      // Frozen: the engine then caches the binding encodings on the object itself.
      shared = { ctx: Object.freeze(ctx), bindings: [] };
      byKey.set(key, shared);
    }
    jobs.last = { model, key, shared };
    return shared;
  }

  async readResult(
    model: ModelDescriptor,
    result: unknown,
    strip: Strip | undefined,
  ): Promise<void> {
    const jobs: DecryptJobs = {
      items: [],
      strips: [],
      contexts: new Map(),
      last: undefined,
    };
    if (Array.isArray(result)) {
      for (const row of result) this.collectRow(model, row, strip, undefined, jobs);
    } else {
      this.collectRow(model, result, strip, undefined, jobs);
    }
    if (jobs.items.length > 0) {
      const values = await this.engine.decryptMany(jobs.items);
      for (let i = 0; i < values.length; i++) {
        const item = jobs.items[i] as RowItem;
        item.row[item.field] = this.#returned(item.spec, values[i]);
      }
    }
    for (const [row, { removed, hidden }] of jobs.strips) {
      for (const column of removed) delete row[column];
      for (const column of hidden) {
        // Left readable for a result field that may need it (Prisma computes one only when the
        // row has all it needs as own properties), but out of the row's keys, spread and JSON:
        // the shape the query asked for (see `prepareRead`). Configurable as it was, so that
        // Prisma may hide it behind the field's own proxy.
        if (Object.hasOwn(row, column)) Object.defineProperty(row, column, { enumerable: false });
      }
    }
  }

  /** A decrypted value as a query returns it: a decimal field's as Prisma's Decimal. */
  #returned(spec: FieldSpec, value: unknown): unknown {
    return spec.type === "decimal" ? this.decimal(value as string) : value;
  }
}

/** A value to decrypt, and where in the result it goes. */
interface RowItem extends DecryptItem {
  readonly row: Json;
  readonly field: string;
}

interface DecryptJobs {
  readonly items: RowItem[];
  readonly strips: [Json, Strip][];
  /** Contexts of this result by model and context values (`contextValuesKey`). */
  readonly contexts: Map<ModelDescriptor, Map<string, RowContext>>;
  /** The context found last: consecutive rows usually share it. */
  last: { model: ModelDescriptor; key: string; shared: RowContext } | undefined;
}

/** A row's context, with the bindings of its model's fields that add none of their own. */
interface RowContext {
  readonly ctx: Ctx;
  /** By the field's position in `encryptedNames`; built when first needed. */
  readonly bindings: (FieldBinding | undefined)[];
}

/**
 * Of a parent row's context `inherited`, the columns `row` does not hold. A column the row holds
 * is its own context, null included: null is no context, and a value in such a row does not
 * decrypt under its parent's tenant (as it does not read at the top level).
 */
function absentFrom(row: Json, inherited: Ctx | undefined): Ctx | undefined {
  if (inherited === undefined) return undefined;
  const out: Ctx = {};
  for (const key of Object.keys(inherited)) {
    if (!Object.hasOwn(row, key)) out[key] = inherited[key] as string;
  }
  return out;
}

/**
 * A key for the values of the context columns `columns` in `row` when all of them are strings
 * (rows with equal keys then have equal contexts whatever else surrounds them), else undefined.
 */
function contextValuesKey(columns: readonly string[], row: Json): string | undefined {
  if (columns.length === 1) {
    const value = row[columns[0] as string];
    return typeof value === "string" ? value : undefined;
  }
  let key = "";
  for (const column of columns) {
    const value = row[column];
    if (typeof value !== "string") return undefined;
    key += `${value.length}:${value}`;
  }
  return key;
}

/**
 * Refuses a value that came back without a context column it decrypts with (`columns`).
 * `prepareRead` reads them for every encrypted value a query's shape holds, those the result
 * fields it knows of need included (`ResultFieldRegistry`). What it cannot see is a result field
 * it does not know of that is named like a column of the model (it shadows the column): Prisma
 * adds the field's `needs` below the query hook, in a select the extension took for plain
 * columns. A read then fails, having changed nothing; a write's select reads every context
 * column, so that it never fails after committing. Reading them for every select, in case,
 * would cost every narrow read of a large result a property per row.
 */
function withoutContext(
  model: ModelDescriptor,
  field: string,
  columns: readonly string[],
  row: Json,
): never {
  const absent = columns.filter((column) => !Object.hasOwn(row, column));
  if (absent.length === 0) {
    reject(`${model.name}.${field}: cannot decrypt without ${columns.join(", ")} in the result`);
  }
  const list = absent.join(", ");
  reject(
    `${model.name}.${field} came back without ${list}, which it decrypts with: a result field of another extension that needs ${field} is named like a column of ${model.name}, and the extension, not knowing the field, took it for the column (it learns of result fields from the client it is applied to and from the $extends of the client it returns); apply that extension through the returned client, give the field a name of its own, or select ${list} too`,
  );
}

/** Whether `spec` adds pairs of its own (`@kms.context(recordId)` on the field) to its model's. */
function hasOwnContext(spec: EncryptedFieldDescriptor): boolean {
  return spec.context.fromRow.length > 0 || spec.context.fromScope.length > 0;
}

/**
 * A field's binding context from its full context and its model's. The pairs a field adds are
 * bound into its values only, and its data keys are chosen by the model's pairs: a per-row
 * `recordId` then costs no data key, KMS call or data-key row per row, while a value copied to
 * another row still fails to decrypt.
 */
function boundTo(spec: EncryptedFieldDescriptor, context: Ctx, modelCtx: Ctx): FieldCtx {
  return hasOwnContext(spec) ? { context, keyContext: modelCtx } : { context };
}

/** The binding of `field` (an encrypted field or one of its blind index columns). */
function bindingOf(model: ModelDescriptor, field: string, bound: FieldCtx): FieldBinding {
  return bound.keyContext === undefined
    ? { model: model.name, field, context: bound.context }
    : { model: model.name, field, context: bound.context, keyContext: bound.keyContext };
}

/** A stored form as a key: text as it is, bytes by their content. */
function formKey(form: unknown): unknown {
  return form instanceof Uint8Array ? `bytes:${Buffer.from(form).toString("hex")}` : form;
}

/** The forms every list holds, in the first list's order. */
function intersection(lists: readonly (readonly unknown[])[]): unknown[] {
  const [first = [], ...rest] = lists;
  const sets = rest.map((list) => new Set(list.map(formKey)));
  return union(first.filter((form) => sets.every((set) => set.has(formKey(form)))));
}

/** The forms without repeats, in order. */
function union(forms: readonly unknown[]): unknown[] {
  const seen = new Set<unknown>();
  return forms.filter((form) => {
    const key = formKey(form);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** The keys of `data` Prisma sees: a key holding `undefined` is left out of the query. */
export function definedKeys(data: Json): string[] {
  return Object.keys(data).filter((k) => data[k] !== undefined);
}

/** Whether `key` names what the extension handles in `model`'s data: a field it encrypts or
 * indexes, a relation, or a column values are bound to. */
function handles(model: ModelDescriptor, key: string): boolean {
  return (
    Object.hasOwn(model.encrypted, key) ||
    Object.hasOwn(model.blindIndexes, key) ||
    Object.hasOwn(model.relations, key) ||
    model.contextColumns.includes(key)
  );
}

/**
 * Whether a key is a field of `model` in a write's data, a column or a relation, for
 * `nestedUpdateForm`: the codec and the relation guard must read one nested update alike.
 * `isColumn` is the client's test (undefined when the client does not know the model); the
 * columns and relations the descriptor names are fields whatever it says.
 */
export function isFieldOf(
  model: ModelDescriptor | undefined,
  isColumn: ((column: string) => boolean) | undefined,
): (key: string) => boolean {
  return (key) => (model !== undefined && handles(model, key)) || (isColumn?.(key) ?? false);
}

/**
 * How Prisma reads a nested `update` given as one object. A to-one relation takes
 * `XOR<{ where?, data }, UpdateInput>`, and Prisma takes the first reading whose keys and values
 * all fit: the `{ where, data }` form, else the row's data. "envelope" or "data" when the keys
 * alone rule one out: the form holds nothing but an object `where` and an object `data` whose
 * keys are fields of the model, and the data nothing but fields. "either" when both fit by their
 * keys (the model has a field named `data`, and one named `where` if that is given): the values'
 * types decide then (`{ data: { secret: 5 } }`, `secret` a String, writes the JSON column
 * `data`), which only Prisma checks. `isField`: whether a key is a column or relation of the
 * model. A to-many relation takes the form only, alone or in a list.
 */
export function nestedUpdateForm(
  item: Json,
  isField: (key: string) => boolean,
): "envelope" | "data" | "either" {
  const keys = definedKeys(item);
  const { data, where } = item;
  if (!isObject(data) || (where !== undefined && !isObject(where))) return "data";
  if (keys.some((k) => k !== "where" && k !== "data")) return "data";
  if (!keys.every(isField)) return "envelope";
  if (!definedKeys(data).every(isField)) return "data";
  return "either";
}

/** Whether writing `data` encrypts anything (directly or in nested writes); null is not. */
export function needsContext(model: ModelDescriptor, data: Json): boolean {
  if (model.context.fromRow.length === 0) return false;
  return Object.keys(data).some((k) => {
    const value = data[k];
    if (value === undefined) return false;
    return k in model.encrypted ? !writesNull(value) : k in model.relations;
  });
}

/** Whether write data sets a column to null: `null` or Prisma's update form `{ set: null }`. */
function writesNull(value: unknown): boolean {
  return (
    value === null || (isObject(value) && Object.keys(value).length === 1 && value.set === null)
  );
}

/**
 * Refuses a write of a context column that computes its new value from the old one
 * (`{ increment: 1 }`, `decrement`, `multiply`, `divide`) when it writes a value bound to the
 * column: no value the extension sees is the one the row will hold (the where and the row read
 * first hold the old one), so the values would be sealed under the old value while the row
 * moves to the new, never to decrypt again. Writing null binds nothing and passes; leaving the
 * bound values as they are is refused as any change of the column is (see `writeData`).
 * Returns the columns written that way.
 */
function refuseComputedContext(model: ModelDescriptor, data: Json): string[] {
  const computed: string[] = [];
  for (const column of model.contextColumns) {
    const value = data[column];
    // A plain value or Prisma's `{ set: value }` is the value the row will hold.
    if (!isObject(value) || (Object.keys(value).length === 1 && "set" in value)) continue;
    computed.push(column);
    const sealed = fieldsBoundTo(model, [column]).filter(
      (f) => data[f] !== undefined && !writesNull(data[f]),
    );
    if (sealed.length > 0) {
      const ops = Object.keys(value).join(", ");
      reject(
        `${model.name}.${column} is written with { ${ops} }: the values of ${sealed.join(", ")} bound to it would be sealed under its old value while the row takes the new one, and would not decrypt; write ${column} as a plain value or { set: value }`,
      );
    }
  }
  return computed;
}

/**
 * What a row created through `relation` of `model` takes from its parent's context `ctx`: the
 * columns Prisma fills in from the parent, those of the created row's foreign key back to `model`
 * (`@relation(fields: [tenantId, invoiceId], references: [tenantId, id])`). A column that key
 * does not hold stays as the data leaves it, null or its default, and values sealed under the
 * parent's value would not decrypt in the row: such a column must be in the created row's data.
 * When the foreign key is the parent's (`author: { create }` from a post) none is taken; when
 * neither side records one (a `defineModels` configuration without `foreignKeys`), all of them.
 */
function inheritedContext(related: RelatedModel, ctx: Ctx | undefined): Ctx | undefined {
  if (ctx === undefined || related.takes === "none") return undefined;
  if (related.takes === "all") return ctx;
  const out: Ctx = {};
  for (const [key, value] of Object.entries(ctx)) {
    if (related.takes.has(key)) out[key] = value;
  }
  return out;
}

/** `record[key]` if it is the record's own (not `toString` or `constructor` of its prototype). */
export function ownValue<T>(record: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** Writes to a relation that point the row at another related row: they set its foreign key. */
const RELINKING = ["connect", "connectOrCreate", "create", "disconnect", "delete"];
/** Writes to a relation whose foreign key is the related rows': they set theirs. */
const MOVING = ["connect", "connectOrCreate", "set", "disconnect"];

/** The first of `ops` that `nested` asks for (a to-one `disconnect: false` asks for nothing). */
function firstWrite(nested: Json, ops: readonly string[]): string | undefined {
  return ops.find((op) => nested[op] !== undefined && nested[op] !== false);
}

/**
 * A relation write that sets a context column through its foreign key (`tenant: { connect }`
 * where `tenantId` is the foreign key) would bind the row to another context while its values
 * stay sealed under the old one (or, on a create, under the context the extension chose without
 * seeing the column), so they would no longer decrypt. Refused in an update, and in a create
 * that writes values bound to the column; the column itself, in the data, is handled as usual.
 * Null values are sealed under nothing: an update that writes null to every field bound to the
 * column (as when it writes the column itself to null) and a create whose values bound to it are
 * all null leave nothing to orphan, and go through. Returns the columns such writes set.
 */
function refuseRelinking(model: ModelDescriptor, data: Json, update: boolean): Set<string> {
  const relinked = new Set<string>();
  for (const { relation, columns, fields } of model.boundForeignKeys) {
    const nested = data[relation];
    if (!isObject(nested)) continue;
    const op = firstWrite(nested, RELINKING);
    if (op === undefined) continue;
    // A value written here would be sealed without the new column; in an update, one left
    // alone stays sealed under the old.
    const orphaned = fields.filter((f) => (data[f] === undefined ? update : !writesNull(data[f])));
    if (orphaned.length > 0) {
      reject(
        `${model.name}.${relation}: "${op}" would change ${columns.join(", ")} without re-encrypting the values bound to it (${fields.join(", ")}), which would no longer decrypt; write ${columns.join(", ")} itself in the data, with ${fields.join(", ")} in the same write, or write null to ${fields.join(", ")}`,
      );
    }
    for (const column of columns) relinked.add(column);
  }
  return relinked;
}

/**
 * A relation of a model whose target is in the schema, with what a write through it needs of
 * that target. It spans two models, and a schema may be assembled from the descriptors of
 * several `defineModels` calls, so it is worked out once per schema rather than stored in
 * either descriptor.
 */
export interface RelatedModel {
  readonly relation: string;
  readonly target: ModelDescriptor;
  /**
   * What a row created through the relation takes of its parent's context (see
   * `inheritedContext`): none when the foreign key is the parent's; all of it when neither a
   * foreign key back nor the relation's name is recorded; else the columns of the foreign keys
   * back (`keysBack`).
   */
  readonly takes: "none" | "all" | ReadonlySet<string>;
  /**
   * When the related rows hold the foreign key and it includes columns their values are bound
   * to: those columns and the fields bound to them, which a `connect` would move (see
   * `refuseMoving`).
   */
  readonly moves:
    | { readonly columns: readonly string[]; readonly fields: readonly string[] }
    | undefined;
}

/** `relatedOf` for every model of the schema. */
export function relatedModels(
  models: SchemaDescriptor,
): ReadonlyMap<ModelDescriptor, readonly RelatedModel[]> {
  return new Map(Object.values(models).map((model) => [model, relatedOf(model, models)]));
}

/** The relations of `model` whose target is one of `models`, in `relations` order. */
function relatedOf(model: ModelDescriptor, models: SchemaDescriptor): readonly RelatedModel[] {
  const out: RelatedModel[] = [];
  for (const [relation, name] of Object.entries(model.relations)) {
    const target = models[name];
    if (target === undefined) continue;
    if (model.foreignKeys[relation] !== undefined) {
      out.push(Object.freeze({ relation, target, takes: "none", moves: undefined }));
      continue;
    }
    const keys = keysBack(model, relation, target);
    const columns = keys.flatMap((key) => boundColumns(target, key));
    out.push(
      Object.freeze({
        relation,
        target,
        takes:
          keys.length === 0 && model.links[relation] === undefined ? "all" : new Set(keys.flat()),
        moves:
          columns.length === 0
            ? undefined
            : Object.freeze({ columns, fields: fieldsBoundTo(target, columns) }),
      }),
    );
  }
  return Object.freeze(out);
}

/**
 * The foreign keys of `target` that a write through `relation` of `model` may set: those of
 * every relation back to `model` but the ones whose name (`links`) pairs them with another of
 * `model`'s relations. An implicit many-to-many beside a foreign key (`watching` beside
 * `invoices`) sets none: its keys are in a table of Prisma's.
 */
function keysBack(
  model: ModelDescriptor,
  relation: string,
  target: ModelDescriptor,
): (readonly string[])[] {
  const link = model.links[relation];
  const others = new Set(
    Object.keys(model.relations)
      .filter((r) => r !== relation && model.relations[r] === target.name)
      .map((r) => model.links[r]),
  );
  return Object.entries(target.foreignKeys)
    .filter(([back]) => target.relations[back] === model.name)
    .filter(([back]) => {
      const name = target.links[back];
      return name === undefined || name === link || !others.has(name);
    })
    .map(([, foreignKey]) => foreignKey);
}

/**
 * The other side of `refuseRelinking`: a write through `relation` of `model` (`tenant.update({
 * data: { invoices: { connect } } })`) that sets the related rows' foreign key, when that
 * includes a column their values are bound to, moves existing rows to another context without
 * re-encrypting them. The relation back is the one with the same name (`links`); without names,
 * any relation back to `model` with such a foreign key counts.
 */
function refuseMoving(model: ModelDescriptor, related: RelatedModel, nested: Json): void {
  if (related.moves === undefined) return;
  const op = firstWrite(nested, MOVING);
  if (op === undefined) return;
  const { relation, target } = related;
  const { columns, fields } = related.moves;
  reject(
    `${model.name}.${relation}: "${op}" would move ${target.name} rows to another ${columns.join(", ")} without re-encrypting the values bound to it (${fields.join(", ")}), which would no longer decrypt; update each ${target.name}'s ${columns.join(", ")} itself, with ${fields.join(", ")} in the same update`,
  );
}

/** What a read added to a query's shape, to take out of its result again (see `prepareRead`). */
export interface Strip {
  /** How the read asked for the columns: set true in the query's select, or false in its omit. */
  readonly via: "select" | "omit" | undefined;
  /** Context columns of the row the query did not ask for, which no result field can need. */
  readonly removed: readonly string[];
  /** Those a result field of another extension may need: hidden (non-enumerable) instead. */
  readonly hidden: readonly string[];
  /** Of the columns added under an omit, those its own keys omitted (not the client's omit). */
  readonly ownOmits: readonly string[];
  readonly relations: Record<string, Strip>;
}

/** A read that added nothing, at any depth (shared: never written to). */
const NOTHING_ADDED: Strip = Object.freeze({
  via: undefined,
  removed: [],
  hidden: [],
  ownOmits: [],
  relations: Object.freeze({}) as Record<string, Strip>,
});

/**
 * Of the columns a read `added` to a select, those no result field the select names can need
 * (`needs`, see `Codec.#selectedNeeds`), to remove, and the others, to hide; hidden all where
 * the fields cannot be known, as any of them may need them. `restored`: Prisma is handed the
 * select without them (see `Codec.restoreShape`), so those a field it names is sure to need are
 * neither: Prisma hides them behind the field.
 */
function sortSelected(
  select: Json,
  fields: ResultFields | undefined,
  needs: ReadonlySet<string> | undefined,
  added: readonly string[],
  restored: boolean,
): Pick<Strip, "removed" | "hidden"> {
  const kept = new Set<string>();
  if (restored && fields !== undefined) {
    for (const [name, value] of Object.entries(select)) {
      const columns = value ? fields.certain.get(name) : undefined;
      for (const column of columns ?? []) if (select[column] !== true) kept.add(column);
    }
  }
  const removed: string[] = [];
  const hidden: string[] = [];
  for (const key of added) {
    if (kept.has(key)) continue;
    (fields !== undefined && needs !== undefined && !needs.has(key) ? removed : hidden).push(key);
  }
  return { removed, hidden };
}

/** Whether a read added anything to the query's shape, at any depth. */
export function reshapes(strip: Strip): boolean {
  if (strip.removed.length + strip.hidden.length > 0) return true;
  for (const relation in strip.relations) {
    if (reshapes(strip.relations[relation] as Strip)) return true;
  }
  return false;
}

/** Relation filters that hold where the related rows do not match what is inside them. */
const NEGATING = new Set(["none", "every", "isNot"]);

/** The scope keys a lookup on `spec` is sealed under: the model's and the field's own. */
function scopeKeysOf(model: ModelDescriptor, spec: EncryptedFieldDescriptor): readonly string[] {
  const own = spec.context.fromScope;
  if (own.length === 0) return model.context.fromScope;
  return [...model.context.fromScope, ...own];
}

const SCOPE_KEYS = new WeakMap<ModelDescriptor, readonly string[]>();

/** Every scope key some value of `model` is sealed under: the model's and its fields' own. */
function allScopeKeys(model: ModelDescriptor): readonly string[] {
  let keys = SCOPE_KEYS.get(model);
  if (keys === undefined) {
    const all = new Set(model.context.fromScope);
    for (const field of model.encryptedNames) {
      for (const key of (model.encrypted[field] as EncryptedFieldDescriptor).context.fromScope) {
        all.add(key);
      }
    }
    keys = Object.freeze([...all]);
    SCOPE_KEYS.set(model, keys);
  }
  return keys;
}

/**
 * The frame of a where clause of `model` (with `sources`, its own equalities) inside `outer`: a
 * column named as a scope key and pinned to the scope's value there confines the clause, and
 * every clause inside it, to the scope's rows (`NOT: { tenantId, code }` excludes exactly the
 * scope's rows holding the code).
 */
function scopeFrame(
  model: ModelDescriptor,
  sources: readonly Json[],
  outer: ScopeFrame,
): ScopeFrame {
  const keys = allScopeKeys(model);
  if (keys.length === 0) return outer;
  const scope = currentEncryptionContext();
  const pinned = [...outer.pinned];
  for (const key of keys) {
    const wanted = scope?.[key];
    if (wanted === undefined || pinned.includes(key)) continue;
    if (pickColumn(model, key, sources, undefined) === wanted) pinned.push(key);
  }
  return pinned.length === outer.pinned.length ? outer : { negated: outer.negated, pinned };
}

/** Prisma's field reference (`prisma.user.fields.email`, a FieldRef instance): a column. */
interface FieldRefLike {
  readonly modelName: string;
  readonly name: string;
}

function isFieldRef(value: unknown): value is FieldRefLike {
  return (
    isObject(value) &&
    !isLiteral(value) &&
    typeof value.modelName === "string" &&
    typeof value.name === "string" &&
    typeof value.typeName === "string"
  );
}

/**
 * A field reference among the operands of one where entry: the entry itself, an operator's
 * (`{ lt: ref }`) or a negated operator's (`{ not: { equals: ref } }`), where Prisma takes them.
 */
function fieldRefIn(value: unknown): FieldRefLike | undefined {
  if (isFieldRef(value)) return value;
  if (!isObject(value) || !isLiteral(value)) return undefined;
  for (const operand of Object.values(value)) {
    if (isFieldRef(operand)) return operand;
    if (isObject(operand) && isLiteral(operand)) {
      for (const inner of Object.values(operand)) if (isFieldRef(inner)) return inner;
    }
  }
  return undefined;
}

/** Whether a filter operand compares a value (not only null, which is stored as null). */
function comparesValue(operand: unknown): boolean {
  if (operand === null || operand === undefined) return false;
  if (Array.isArray(operand)) return operand.some((v) => v !== null && v !== undefined);
  if (isObject(operand) && isLiteral(operand)) return Object.values(operand).some(comparesValue);
  return true;
}

/**
 * Refuses a lookup that excludes values of a field sealed under scope keys the where does not
 * pin (`unpinned`): `not`, `notIn`, `not: { equals }`, and any comparison under a negation. The
 * operand is sealed under the scope's tenant, so it differs from every other tenant's
 * ciphertext of the same value: the exclusion would match their rows holding the excluded value
 * (and `deleteMany`, `updateMany` or `count` would act on them).
 */
function refuseUnscopedExclusion(
  model: ModelDescriptor,
  field: string,
  filter: Json,
  negated: boolean,
  unpinned: readonly string[],
): void {
  let how: string | undefined;
  if (negated) {
    if (Object.values(filter).some(comparesValue))
      how = "a lookup under NOT (or none, every, isNot)";
  } else if (comparesValue(filter.notIn)) {
    how = `"notIn"`;
  } else if (comparesValue(filter.not)) {
    how = `"not"`;
  }
  if (how === undefined) return;
  const keys = unpinned.join(", ");
  const pins = unpinned.map((k) => `${k}: <the scope's ${k}>`).join(", ");
  reject(
    `${model.name}.${field} is sealed under the ambient context's ${keys}, and ${how} on it would also match every other ${keys}'s rows holding the excluded value (their ciphertext differs from the scope's): pin the rows to the scope's ${keys} beside the lookup or in a clause around it (${pins}, on a column of that name), or look values up with equals or in`,
  );
}

/**
 * Refuses to seal values of `field` (written, or looked up) under `ctx` where a context column
 * of its holds a value in another spelling than the column reads back (`contextSpellings`: a
 * `@db.Uuid` in capitals, in braces or without hyphens). The database takes the value, and
 * compares it as a UUID, so the write goes in and the where matches the rows; but values are
 * bound to the text given, and the row reads back another: a value written would never decrypt,
 * and a lookup's operand would match no row. Values are checked here, where they are sealed,
 * whichever source gave them (the data, a where, a parent row): a query that seals nothing under
 * the column (`findMany({ where: { tenantId } })`) goes through as the database takes it.
 */
function refuseRespelled(
  model: ModelDescriptor,
  field: string,
  spec: EncryptedFieldDescriptor,
  ctx: Ctx,
  use: "write" | "lookup",
): void {
  const spellings = contextSpellings(model);
  if (spellings.size === 0) return;
  for (const columns of [model.context.fromRow, spec.context.fromRow]) {
    for (const column of columns) {
      const spelling = spellings.get(column);
      const value = ctx[column];
      if (spelling === undefined || value === undefined) continue;
      const spelt = spelling.spell(value);
      if (spelt === value) continue;
      const name = `${model.name}.${column}`;
      if (spelt === undefined) {
        reject(
          `${name} is ${spelling.written}, which ${spelling.readsBack}: its value is not ${spelling.kind}; give ${column} as ${spelling.kind}, in that spelling`,
        );
      }
      const harm =
        use === "write"
          ? `${model.name}.${field} sealed under it would never decrypt`
          : `a lookup of ${model.name}.${field} sealed under it would match no row`;
      reject(
        `${name} is ${spelling.written}, which ${spelling.readsBack} ("${spelt}"), not as "${value}" was given: ${harm}; give ${column} as "${spelt}"`,
      );
    }
  }
}

/**
 * A context column's value from the first source that pins it exactly, else `inherited`'s, as
 * the string the context holds; undefined when none gives it.
 */
function pickColumn(
  model: ModelDescriptor,
  key: string,
  sources: readonly (Json | undefined)[],
  inherited: Ctx | undefined,
): string | undefined {
  let value: unknown;
  for (const source of sources) {
    if (source === undefined) continue;
    value = pinnedValue(source[key]);
    if (value !== undefined) break;
  }
  if (value === undefined) value = inherited?.[key];
  if (value === undefined) return undefined;
  if (typeof value !== "string" && typeof value !== "number" && typeof value !== "bigint") {
    reject(`${model.name}.${key} must be a string or number to bind encrypted values`);
  }
  return String(value);
}

/**
 * Filters that only narrow what `equals` matches, so beside it the column still holds exactly
 * the `equals` value. `mode` is not one of them: `mode: "insensitive"` (PostgreSQL) loosens
 * `equals` itself, so that `{ equals: "acme" }` matches "ACME" rows too.
 */
const NARROWING_FILTERS = [
  "equals",
  "in",
  "notIn",
  "not",
  "lt",
  "lte",
  "gt",
  "gte",
  "contains",
  "startsWith",
  "endsWith",
] as const;
const NARROWING = new Set<string>(NARROWING_FILTERS);

/**
 * The value a context column is pinned to by one data or where entry: a plain value, update
 * data's `{ set }`, or a where's `{ equals }` compared exactly. Anything else (`mode:
 * "insensitive"`, `contains`, `in`, `not`, a range, a field reference) admits rows whose column
 * holds another value, whose encrypted values are bound to that other value: it pins nothing.
 */
function pinnedValue(value: unknown): unknown {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) return value;
  if ("set" in value) return Object.keys(value).length === 1 ? (value.set ?? undefined) : undefined;
  const literal = value.equals;
  if (typeof literal !== "string" && typeof literal !== "number" && typeof literal !== "bigint") {
    return undefined;
  }
  for (const op of Object.keys(value)) {
    if (op === "mode" && value.mode === "default") continue;
    if (!NARROWING.has(op)) return undefined;
  }
  return literal;
}

const FILTER_KEYS = new Set<string>([
  ...NARROWING_FILTERS,
  "mode",
  "search",
  "has",
  "hasEvery",
  "hasSome",
  "isEmpty",
  "some",
  "every",
  "none",
  "is",
  "isNot",
  "path",
  "string_contains",
  "string_starts_with",
  "string_ends_with",
  "array_contains",
  "array_starts_with",
  "array_ends_with",
]);

/**
 * `tenantId_email: { tenantId, email }`: a compound unique input, whose keys are fields. A filter
 * holds nothing but operators, so one key that is no operator makes a compound unique. Fields
 * may be named like operators (`in`, `not`): when every key spells one, the input is a compound
 * unique only under Prisma's default name, its fields joined by "_" (`in_not`), which no field
 * can have beside it.
 */
function isCompoundUnique(model: ModelDescriptor, key: string, value: unknown): value is Json {
  // An instance (a field reference, a Decimal) is an operand, whatever its properties.
  if (!isObject(value) || !isLiteral(value) || key in model.relations || key in model.encrypted) {
    return false;
  }
  const keys = Object.keys(value);
  if (keys.length < 2) return false;
  return keys.some((k) => !FILTER_KEYS.has(k)) || isJoinOf(key, keys);
}

/** Whether `name` is all of `parts`, in some order, joined by "_". */
function isJoinOf(name: string, parts: readonly string[]): boolean {
  if (parts.length === 1) return name === parts[0];
  return parts.some(
    (part, i) =>
      name.startsWith(`${part}_`) &&
      isJoinOf(
        name.slice(part.length + 1),
        parts.filter((_, j) => j !== i),
      ),
  );
}

/** Clauses whose equalities constrain the whole where: AND members and compound uniques. */
export function andClauses(model: ModelDescriptor, where: Json): Json[] {
  const out: Json[] = [];
  const and = where.AND;
  if (Array.isArray(and)) out.push(...and.filter(isObject));
  else if (isObject(and)) out.push(and);
  // A to-one relation filter in its short form (`author: { tenantId, email }`) looks like a
  // compound unique but constrains another model: its tenant is not this row's.
  for (const [key, value] of Object.entries(where)) {
    if (key !== "AND" && key !== "OR" && key !== "NOT" && isCompoundUnique(model, key, value)) {
      out.push(value);
    }
  }
  return out;
}

/** Adds the keys of every object within `value` (through arrays and nested objects) to `into`. */
export function keysWithin(value: unknown, into: Set<string>): void {
  if (Array.isArray(value)) {
    for (const item of value) keysWithin(item, into);
  } else if (isObject(value)) {
    for (const [key, inner] of Object.entries(value)) {
      into.add(key);
      keysWithin(inner, into);
    }
  }
}

/** A container `clone` is copying, with the keys of its members still to copy. */
interface CloneFrame {
  readonly source: Json | readonly unknown[];
  readonly copy: Json | unknown[];
  /** Own enumerable keys, read when the container was reached; undefined for an array. */
  readonly keys: readonly string[] | undefined;
  next: number;
}

/** An empty copy of `value` when `clone` copies it (an array or a plain object), else undefined. */
function emptyCopyOf(value: unknown): Json | unknown[] | undefined {
  if (Array.isArray(value)) return new Array<unknown>(value.length);
  if (isObject(value) && Object.getPrototypeOf(value) === Object.prototype) return {};
  return undefined;
}

function cloneFrame(source: Json | readonly unknown[], copy: Json | unknown[]): CloneFrame {
  return { source, copy, keys: Array.isArray(source) ? undefined : Object.keys(source), next: 0 };
}

/**
 * Deep copy of the parts of args we rewrite, so the caller's objects are never mutated: arrays
 * and plain objects are copied, anything else (a Date, a Decimal, bytes, a null-prototype
 * object) is kept as it is. Iterative, so that a JSON value nested deeper than the call stack
 * (a request body parsed into a Json field) is copied rather than ending in a RangeError.
 * An own `__proto__` member, which JSON.parse makes, stays a member of the copy: assigned, it
 * would become the copy's prototype, and the member would vanish from the data.
 * @throws ValidationException when the arguments hold a cycle (an object inside itself).
 */
export function clone<T>(value: T): T {
  const root = emptyCopyOf(value);
  if (root === undefined) return value;
  const stack = [cloneFrame(value as Json | readonly unknown[], root)];
  // The containers being copied, outermost first: one met again inside itself is a cycle.
  const open = new Set<unknown>([value]);
  for (let frame = stack[0]; frame !== undefined; frame = stack[stack.length - 1]) {
    const { source, copy, keys } = frame;
    const index = frame.next;
    if (index === (keys === undefined ? (source as readonly unknown[]).length : keys.length)) {
      stack.pop();
      open.delete(source);
      continue;
    }
    frame.next = index + 1;
    let item: unknown;
    if (keys === undefined) {
      // A hole stays a hole, as Array.prototype.map leaves it.
      if (!(index in source)) continue;
      item = (source as readonly unknown[])[index];
    } else {
      item = (source as Json)[keys[index] as string];
    }
    const member = emptyCopyOf(item);
    if (member !== undefined) {
      if (open.has(item)) {
        reject("the query's arguments hold a cycle: an object or array inside itself");
      }
      open.add(item);
      stack.push(cloneFrame(item as Json | readonly unknown[], member));
    }
    const key = keys === undefined ? index : (keys[index] as string);
    if (key === "__proto__") {
      Object.defineProperty(copy, key, {
        value: member ?? item,
        writable: true,
        enumerable: true,
        configurable: true,
      });
    } else {
      (copy as Record<string | number, unknown>)[key] = member ?? item;
    }
  }
  return root as T;
}
