import { listsEveryRelation, type SchemaDescriptor } from "../schema-descriptor.ts";
import {
  type ColumnsOf,
  isFieldOf,
  isObject,
  type Json,
  nestedUpdateForm,
  ownValue,
  reject,
} from "./codec.ts";

const LOGICAL = new Set(["AND", "OR", "NOT"]);
const RELATION_FILTERS = ["some", "every", "none", "is", "isNot"];
/** Nested writes whose items are rows to create (`createMany` holds them in `data`). */
const CREATES = ["create", "connectOrCreate", "upsert"];
/** Nested writes whose items are where inputs of the related model. */
const WHERES = ["connect", "disconnect", "set", "delete", "deleteMany"];

/**
 * Refuses a query that goes through a relation its descriptor does not list. The extension
 * follows only listed relations, and a model the descriptor leaves out lists none: through any
 * other, a related model's encrypted fields would be written in plaintext by a nested write,
 * compared as plaintext by a relation filter and returned as ciphertext by an include, all
 * without an error. Schema text and the generator list every relation of every model: with
 * them a field that is neither a column nor a listed relation is a result field of another
 * extension (or does not exist, which Prisma refuses), and passes. So this refuses only with
 * hand-written `defineModels` configurations, which may leave a relation out.
 */
export class RelationGuard {
  readonly #models: SchemaDescriptor;
  readonly #columnsOf: ColumnsOf;

  /** `columnsOf`: cached by the caller, it is asked for every key of every query. */
  constructor(models: SchemaDescriptor, columnsOf: ColumnsOf) {
    this.#models = models;
    this.#columnsOf = columnsOf;
  }

  /** Checks one operation's arguments on `model`. @throws ValidationException */
  check(model: string, operation: string, args: unknown): void {
    if (!isObject(args)) return;
    this.#args(model, args);
    const data = operation === "upsert" ? [args.create, args.update] : [args.data];
    for (const item of data.flat()) if (isObject(item)) this.#data(model, item);
  }

  /**
   * The model the relation `key` of `model` leads to, when the descriptor lists it; refuses a key
   * that is neither a column nor a listed relation, unless the descriptor lists every relation
   * (the key is then a result field of another extension). Undefined for a column, or when the
   * client does not know `model` (nothing to tell its columns from).
   */
  #target(model: string, key: string): string | undefined {
    const isColumn = this.#columnsOf(model);
    if (isColumn === undefined || isColumn(key)) return undefined;
    const descriptor = this.#models[model];
    const target = descriptor === undefined ? undefined : ownValue(descriptor.relations, key);
    if (target !== undefined) return target;
    if (descriptor !== undefined && listsEveryRelation(descriptor)) return undefined;
    const listed = descriptor === undefined ? `list ${model} with` : "list";
    reject(
      `${model}.${key} is not a column of ${model} nor a relation its descriptor lists: ${listed} relations: { ${key}: "<its model>" } in defineModels; the extension follows listed relations only, and through another one a related model's encrypted fields would be written, compared and returned as they are. If ${key} is a result field of another extension, give defineModels every relation and { listsEveryRelation: true } (schema text and the generator's module do)`,
    );
  }

  /** The parts of a read's arguments (top level, or a relation's in include/select). */
  #args(model: string, args: Json): void {
    if (isObject(args.where)) this.#where(model, args.where);
    if (isObject(args.cursor)) this.#where(model, args.cursor);
    for (const selection of [args.include, args.select]) {
      if (isObject(selection)) this.#selection(model, selection);
    }
    if (args.orderBy !== undefined) this.#orderBy(model, args.orderBy);
  }

  #selection(model: string, selection: Json): void {
    for (const [key, value] of Object.entries(selection)) {
      if (value === undefined || value === false) continue;
      if (key === "_count") {
        // A bare count reads no value of the related rows; a filtered one compares them.
        const counted = isObject(value) ? value.select : undefined;
        if (!isObject(counted)) continue;
        for (const [relation, count] of Object.entries(counted)) {
          if (!isObject(count) || !isObject(count.where)) continue;
          const target = this.#target(model, relation);
          if (target !== undefined) this.#where(target, count.where);
        }
        continue;
      }
      // Field names start with a letter: `_all` (a count's select) names no relation.
      if (key.startsWith("_")) continue;
      const target = this.#target(model, key);
      if (target !== undefined && isObject(value)) this.#args(target, value);
    }
  }

  #where(model: string, where: Json): void {
    for (const [key, value] of Object.entries(where)) {
      if (LOGICAL.has(key)) {
        for (const clause of [value].flat()) if (isObject(clause)) this.#where(model, clause);
        continue;
      }
      // Only an object goes into the related rows (`author: null` reads none of their values).
      if (!isObject(value) || this.#isCompoundUnique(model, value)) continue;
      const target = this.#target(model, key);
      if (target === undefined) continue;
      const filters = RELATION_FILTERS.filter((f) => f in value);
      if (filters.length === 0) this.#where(target, value);
      for (const f of filters) {
        const inner = value[f];
        if (isObject(inner)) this.#where(target, inner);
      }
    }
  }

  /** `tenantId_email: { tenantId, email }`: two or more keys, every one a column of `model`. */
  #isCompoundUnique(model: string, value: Json): boolean {
    const isColumn = this.#columnsOf(model);
    const keys = Object.keys(value);
    return isColumn !== undefined && keys.length >= 2 && keys.every((k) => isColumn(k));
  }

  #orderBy(model: string, orderBy: unknown): void {
    for (const item of [orderBy].flat()) {
      if (!isObject(item)) continue;
      for (const [key, value] of Object.entries(item)) {
        // `_count`, `_relevance` and the aggregates of groupBy name no relation.
        if (!isObject(value) || key.startsWith("_")) continue;
        const target = this.#target(model, key);
        if (target !== undefined) this.#orderBy(target, value);
      }
    }
  }

  /** A row's write data, with the nested writes of its relations. */
  #data(model: string, data: Json): void {
    for (const [key, value] of Object.entries(data)) {
      if (!isObject(value)) continue;
      const target = this.#target(model, key);
      if (target !== undefined) this.#nested(target, value);
    }
  }

  #nested(model: string, ops: Json): void {
    const each = (value: unknown, fn: (item: Json) => void) => {
      for (const item of [value].flat()) if (isObject(item)) fn(item);
    };
    for (const op of CREATES) {
      each(ops[op], (item) => {
        if (op === "create") return this.#data(model, item);
        if (isObject(item.where)) this.#where(model, item.where);
        for (const data of [item.create, item.update]) if (isObject(data)) this.#data(model, data);
      });
    }
    if (isObject(ops.createMany)) each(ops.createMany.data, (item) => this.#data(model, item));
    for (const op of ["update", "updateMany"]) {
      const list = op === "updateMany" || Array.isArray(ops[op]);
      each(ops[op], (item) => {
        // To-one `update` takes `{ where, data }` or the data itself, as Prisma reads it; where
        // its values decide, both readings are checked.
        const form = list
          ? "envelope"
          : nestedUpdateForm(item, isFieldOf(this.#models[model], this.#columnsOf(model)));
        if (form !== "envelope") this.#data(model, item);
        if (form === "data") return;
        if (isObject(item.where)) this.#where(model, item.where);
        if (isObject(item.data)) this.#data(model, item.data);
      });
    }
    for (const op of WHERES) each(ops[op], (item) => this.#where(model, item));
  }
}
