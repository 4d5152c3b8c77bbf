import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { ValidationError } from "../errors.ts";
import { isWellFormed } from "../internal/unicode.ts";
import type { EncryptionContext } from "../types.ts";

/**
 * Where a value lives: its model (table), its field (column), and the context values it belongs
 * to (tenant, …). Every field ciphertext authenticates its binding (docs/FORMAT.md §6.2), so a
 * value copied to another row's tenant, to another column or to another table does not decrypt.
 */
export interface FieldBinding {
  readonly model: string;
  readonly field: string;
  readonly context: EncryptionContext;
  /**
   * The pairs of `context` that choose the value's data key and that the KMS wraps it under
   * (where key policies and grants can test them); the other pairs are bound into the value
   * only (FORMAT §6.2). Absent: all of `context`. For a per-row identifier, so that a value
   * copied to another row fails while the rows of a tenant share one data key instead of one
   * per row. Every pair must appear in `context` with the same value.
   */
  readonly keyContext?: EncryptionContext;
}

/**
 * The context that chooses the data key of `binding`, and its cache key (`ctxKey`, the key of
 * the whole context, when they are the same).
 * @throws ValidationException when `keyContext` is not a part of `context`.
 */
export function keyContextOf(
  binding: FieldBinding,
  ctxKey: string,
): { readonly context: EncryptionContext; readonly ctxKey: string } {
  const keyContext = binding.keyContext;
  if (keyContext === undefined || keyContext === binding.context) {
    return { context: binding.context, ctxKey };
  }
  for (const name of Object.keys(keyContext)) {
    if (binding.context[name] !== keyContext[name]) {
      throw new ValidationError(
        `"keyContext" of ${binding.model}.${binding.field} must be a part of its context: "${name}" differs`,
      );
    }
  }
  return { context: keyContext, ctxKey: contextKey(keyContext) };
}

const encoder = new TextEncoder();
const MAX_NAME_BYTES = 255;
/** Bounded so that bindings built from attacker-chosen tenants cannot grow memory forever. */
const MAX_CACHED_BINDINGS = 4096;
/**
 * ctxKey → model → field → encoding. Nested maps so that a lookup hashes strings the caller
 * already holds (names from descriptors) instead of building a composite key per value.
 */
const cache = new Map<string, Map<string, Map<string, Uint8Array>>>();
let cached = 0;

/**
 * The context `contextKey` built last, as its pairs in `Object.keys` order and its key: rows of
 * one result set or one tenant's writes repeat a context, and handing back the very string built
 * before spares building it again, and spares the caches that look it up flattening and hashing a
 * fresh copy. Replaced (never mutated) as a whole, so a getter that re-enters cannot tear it.
 */
let last: {
  readonly names: readonly string[];
  readonly values: readonly string[];
  readonly key: string;
} = { names: [], values: [], key: "" };

/**
 * Canonical, collision-free string form of a context, used as a cache key: each key and value
 * is preceded by its length, pairs sorted by key.
 * @throws ValidationException when the context is not a plain object of strings: the key is
 *   looked up before the context is encoded (and validated), so a Map (no own pairs) or the
 *   number 1 would otherwise hit the entry of `{}` or of "1" and be bound as that.
 */
export function contextKey(context: EncryptionContext): string {
  const proto: unknown =
    typeof context === "object" && context !== null ? Object.getPrototypeOf(context) : undefined;
  if (proto !== Object.prototype && proto !== null) {
    throw new ValidationError(`"context" expected an object of string pairs`);
  }
  const names = Object.keys(context);
  const n = names.length;
  const seen = last;
  if (n === seen.names.length) {
    let i = 0;
    // Equal to a remembered string value means a string, so the type check holds as well.
    while (i < n && names[i] === seen.names[i] && context[names[i] as string] === seen.values[i]) {
      i++;
    }
    if (i === n) return seen.key;
  }
  // Each value read once: the key must describe exactly the values remembered with it.
  const values: string[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const k = names[i] as string;
    const v: unknown = context[k];
    if (typeof v !== "string") {
      throw new ValidationError(`"context" value for key "${k}" must be a string`);
    }
    values[i] = v;
  }
  let order: number[] | undefined;
  if (n > 1) {
    order = Array.from(names.keys()).sort((a, b) =>
      (names[a] as string) < (names[b] as string) ? -1 : 1,
    );
  }
  let out = "";
  for (let j = 0; j < n; j++) {
    const i = order === undefined ? j : (order[j] as number);
    const k = names[i] as string;
    const v = values[i] as string;
    out += `${k.length}:${k}${v.length}:${v}`;
  }
  last = { names, values, key: out };
  return out;
}

function lengthPrefixed(argument: string, value: string): Uint8Array {
  if (typeof value !== "string" || value.length === 0) {
    throw new ValidationError(`"${argument}" must be a non-empty string`);
  }
  if (!isWellFormed(value)) {
    throw new ValidationError(`"${argument}" must be well-formed Unicode (no lone surrogates)`);
  }
  const bytes = encoder.encode(value);
  if (bytes.length > MAX_NAME_BYTES) {
    throw new ValidationError(`"${argument}" must be at most ${MAX_NAME_BYTES} bytes of UTF-8`);
  }
  const out = new Uint8Array(bytes.length + 1);
  out[0] = bytes.length;
  out.set(bytes, 1);
  return out;
}

/**
 * `u8 len || model || u8 len || field || encodeEncryptionContext(context)` (FORMAT §6.2).
 * @throws ValidationException when a name is empty or too long or the context is malformed.
 */
export function encodeBinding(binding: FieldBinding, ctxKey?: string): Uint8Array {
  const { context, model, field } = binding;
  let key: string;
  if (context === frozenContext) {
    // A frozen context cannot change: the fields of a row, or a result set sharing one frozen
    // context, skip building its key per value.
    key = frozenKey;
  } else if (context !== openContext && Object.isFrozen(context)) {
    key = ctxKey ?? contextKey(context);
    frozenContext = context;
    frozenKey = key;
  } else {
    // The context found open last time is taken as open without asking again (Object.isFrozen
    // costs as much as the rest of this function): at worst it was frozen since, and takes the
    // path that holds for every context.
    openContext = context;
    key = ctxKey ?? contextKey(context);
  }
  return encodeKeyed(model, field, context, key);
}

/**
 * The frozen context `encodeBinding` met last and its key. Adapters freeze one context per row
 * (or per result set): a cache of encodings per context object (a WeakMap) cost more per row
 * than it spared.
 */
let frozenContext: EncryptionContext | undefined;
let frozenKey = "";
/** The context `encodeBinding` last found not frozen. */
let openContext: EncryptionContext | undefined;

/** The encoding `encodeKeyed` returned last: values of one column come in runs. */
let lastKeyed:
  | {
      readonly ctxKey: string;
      readonly model: string;
      readonly field: string;
      readonly out: Uint8Array;
    }
  | undefined;

function encodeKeyed(
  modelName: string,
  fieldName: string,
  bindingContext: EncryptionContext,
  ctxKey: string,
): Uint8Array {
  const seen = lastKeyed;
  if (
    seen !== undefined &&
    seen.ctxKey === ctxKey &&
    seen.model === modelName &&
    seen.field === fieldName
  ) {
    return seen.out;
  }
  const out = encodeKeyedMiss(modelName, fieldName, bindingContext, ctxKey);
  lastKeyed = { ctxKey, model: modelName, field: fieldName, out };
  return out;
}

function encodeKeyedMiss(
  modelName: string,
  fieldName: string,
  bindingContext: EncryptionContext,
  ctxKey: string,
): Uint8Array {
  const byModel = cache.get(ctxKey);
  const byField = byModel?.get(modelName);
  const hit = byField?.get(fieldName);
  if (hit !== undefined) return hit;
  const model = lengthPrefixed("model", modelName);
  const field = lengthPrefixed("field", fieldName);
  const context = encodeEncryptionContext(bindingContext, "context");
  const out = new Uint8Array(model.length + field.length + context.length);
  out.set(model, 0);
  out.set(field, model.length);
  out.set(context, model.length + field.length);
  if (cached >= MAX_CACHED_BINDINGS) {
    cache.clear();
    cached = 0;
  }
  let models = cache.get(ctxKey);
  if (models === undefined) {
    models = new Map();
    cache.set(ctxKey, models);
  }
  let fields = models.get(modelName);
  if (fields === undefined) {
    fields = new Map();
    models.set(modelName, fields);
  }
  fields.set(fieldName, out);
  cached += 1;
  return out;
}

/**
 * Whether `context` holds every pair of `keyContext` (own keys, same values). A data-key row is
 * unwrapped with the context stored in it, which whoever writes the database chooses: a value
 * opens only under a data key whose key context is part of the value's own context, so a key
 * planted under another tenant's (or no) context in KMS cannot open, nor forge, this one's.
 */
export function holdsKeyContext(
  context: EncryptionContext,
  keyContext: Readonly<EncryptionContext>,
): boolean {
  for (const name in keyContext) {
    if (!Object.hasOwn(context, name) || context[name] !== keyContext[name]) return false;
  }
  return true;
}
