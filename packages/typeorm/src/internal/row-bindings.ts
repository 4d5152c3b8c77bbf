import type { FieldBinding } from "@kms/core";
import type { EncryptedColumnSpec } from "../encrypted-column.ts";

/** Bindings kept per column, beyond which the oldest are dropped together. */
const MAX_ROW_BINDINGS = 1024;

/**
 * The bindings of one encrypted column's loaded values, when its context is one `fromRow` column
 * and nothing else (no `fromScope`, no `rowIdentity`): equal values of that column share one
 * frozen binding (and context) across rows and queries, so a find builds nothing per value and
 * the engine's binding caches hit. The last value looked up is checked first: the rows of a
 * find mostly share it (one tenant), and comparing it costs less than hashing a string the
 * driver made afresh for every row.
 */
export class RowBindings {
  /** The row property the context is read from. */
  readonly key: string;
  readonly #byValue = new Map<string, FieldBinding>();
  #lastValue: string | undefined;
  #last: FieldBinding | undefined;

  constructor(key: string) {
    this.key = key;
  }

  /** The binding of rows whose `key` column holds `value` (`String` of it), if kept. */
  get(value: string): FieldBinding | undefined {
    if (value === this.#lastValue) return this.#last;
    const binding = this.#byValue.get(value);
    if (binding !== undefined) {
      this.#lastValue = value;
      this.#last = binding;
    }
    return binding;
  }

  /** Keeps `binding` for `value`, and returns it. */
  add(value: string, binding: FieldBinding): FieldBinding {
    if (this.#byValue.size >= MAX_ROW_BINDINGS) this.#byValue.clear();
    this.#byValue.set(value, binding);
    this.#lastValue = value;
    this.#last = binding;
    return binding;
  }
}

/** The RowBindings of a column of `spec`, or undefined when its context is not one row column. */
export function rowBindingsFor(spec: EncryptedColumnSpec): RowBindings | undefined {
  const { fromRow, fromScope, rowIdentity } = spec.context;
  return fromRow.length === 1 && fromScope.length === 0 && rowIdentity.length === 0
    ? new RowBindings(fromRow[0] as string)
    : undefined;
}
