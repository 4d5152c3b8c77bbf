import { isObject, lowerFirst } from "./codec.ts";

/**
 * The result fields of other extensions (`$extends({ result })`) a query of one model may
 * compute: each field's name and every column it needs, through the result fields it needs in
 * turn. A name may stand for a column too: a result field named like a column shadows it.
 */
export type ResultFieldNeeds = ReadonlyMap<string, ReadonlySet<string>>;

/** The result fields of one model (see `ResultFieldRegistry.of`). */
export interface ResultFields {
  /** Every field, with every column it may need on any client that has it. */
  readonly needs: ResultFieldNeeds;
  /**
   * The fields that need the same columns on every client that has them, and no other result
   * field: those columns, which Prisma hides behind the field where a select names it and not
   * them (a field another client defines otherwise, or that needs a field, is left out).
   */
  readonly certain: ResultFieldNeeds;
}

/**
 * The result fields a query running through this extension may compute, so that the extension
 * reads back what they need and removes from rows what none of them can need. Prisma tells a
 * query hook nothing of them, nor of the client a query runs on:
 *
 * - Those of extensions applied before this one are in the client it is applied to, which keeps
 *   them in its extension list (`_extensions`, Prisma 7's, exposed through no public API, like
 *   `_globalOmit`).
 * - Those applied after it are made through the extended client's `$extends`, which the
 *   extension's `client` component wraps: every extension applied to a client made from this
 *   one passes through `add` first, whichever of those clients a query then runs on.
 *
 * So they are a superset of the fields of the client a query runs on: a field of another client
 * made from the same one counts too. `of` answers undefined where the first list cannot be read
 * (a Prisma release that moved it): then any column may be needed.
 */
export class ResultFieldRegistry {
  /** `getAllComputedFields(model)` of the client the extension is applied to. */
  readonly #before: ((model: string) => unknown) | undefined;
  /** Fields added after, by delegate name (`user`) or `$allModels`: field → what it needs. */
  readonly #after = new Map<string, Map<string, Set<string>>>();
  /** The same fields: field → what each of its definitions needs, as `needsKey` gives it. */
  readonly #afterDefinitions = new Map<string, Map<string, Set<string>>>();
  readonly #byModel = new Map<string, ResultFields | undefined>();

  constructor(client: unknown) {
    const list = isObject(client) ? client._extensions : undefined;
    const all = isObject(list) ? list.getAllComputedFields : undefined;
    this.#before =
      typeof all === "function"
        ? (model) => (all as (model: string) => unknown).call(list, model)
        : undefined;
  }

  /** Records the result component of an extension applied to a client made from this one. */
  add(extension: unknown): void {
    // A function extension is called with the client and applies objects through `$extends`.
    const result = isObject(extension) ? extension.result : undefined;
    if (!isObject(result)) return;
    for (const [model, fields] of Object.entries(result)) {
      if (!isObject(fields)) continue;
      const known = entry(this.#after, model, () => new Map());
      const definitions = entry(this.#afterDefinitions, model, () => new Map());
      for (const [name, field] of Object.entries(fields)) {
        const needs = isObject(field) && isObject(field.needs) ? field.needs : {};
        const wanted = Object.keys(needs).filter((column) => needs[column]);
        const set = entry(known, name, () => new Set());
        for (const column of wanted) set.add(column);
        entry(definitions, name, () => new Set()).add(needsKey(wanted));
      }
    }
    this.#byModel.clear();
  }

  /**
   * The result fields of `model` (its schema name, `User`), each with the columns it needs;
   * undefined when the fields of the extensions applied before this one cannot be read.
   */
  of(model: string): ResultFields | undefined {
    if (this.#byModel.has(model)) return this.#byModel.get(model);
    const fields = this.#collect(model);
    this.#byModel.set(model, fields);
    return fields;
  }

  #collect(model: string): ResultFields | undefined {
    if (this.#before === undefined) return undefined;
    const direct = new Map<string, Set<string>>();
    /** Each field's definitions, by what they need (`needsKey`). */
    const definitions = new Map<string, Set<string>>();
    const merge = (name: string, needs: Iterable<unknown>): void => {
      const set = entry(direct, name, () => new Set());
      for (const need of needs) if (typeof need === "string") set.add(need);
    };
    // Already resolved by Prisma down to columns.
    const before = this.#before(model);
    if (isObject(before)) {
      for (const [name, field] of Object.entries(before)) {
        if (!isObject(field) || !Array.isArray(field.needs)) return undefined;
        merge(name, field.needs);
        entry(definitions, name, () => new Set()).add(needsKey(field.needs.map(String)));
      }
    } else if (before !== undefined) {
      return undefined;
    }
    for (const key of ["$allModels", lowerFirst(model)]) {
      for (const [name, needs] of this.#after.get(key) ?? []) merge(name, needs);
      for (const [name, keys] of this.#afterDefinitions.get(key) ?? []) {
        for (const k of keys) entry(definitions, name, () => new Set()).add(k);
      }
    }
    const certain = new Map<string, ReadonlySet<string>>();
    for (const [name, keys] of definitions) {
      const needs = direct.get(name) as Set<string>;
      // Prisma resolves a need naming a result field through the field the client has.
      if (keys.size === 1 && ![...needs].some((need) => direct.has(need))) {
        certain.set(name, needs);
      }
    }
    // A need naming another result field stands for what that field needs: resolved here over
    // the union, keeping the name too (it may also be a column, which a later field shadows).
    const resolved = new Map<string, ReadonlySet<string>>();
    for (const name of direct.keys()) {
      const all = new Set<string>();
      const pending = [...(direct.get(name) ?? [])];
      while (pending.length > 0) {
        const need = pending.pop() as string;
        if (all.has(need)) continue;
        all.add(need);
        if (need !== name) pending.push(...(direct.get(need) ?? []));
      }
      resolved.set(name, all);
    }
    return { needs: resolved, certain };
  }
}

/** What a definition of a field needs, as one key: equal for definitions needing the same. */
function needsKey(needs: readonly string[]): string {
  return JSON.stringify([...new Set(needs)].sort());
}

/** The value of `key` in `map`, made first where there is none. */
function entry<V>(map: Map<string, V>, key: string, make: () => V): V {
  let value = map.get(key);
  if (value === undefined) {
    value = make();
    map.set(key, value);
  }
  return value;
}
