import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { ValidationError } from "../errors.ts";
import { setOwnMember } from "../internal/own-member.ts";
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
 * A binding as read once, at the start of an operation: `model`, `field`, `context` (and, when
 * asked for, `keyContext`) are each read exactly once from the caller's object, and `context`
 * is the pairs read then, copied. What the operation checks, encodes and binds can then not
 * differ from what it keyed its caches with, whatever getters (or a Proxy) the caller's objects
 * have, and re-reading it runs no caller code.
 */
export interface BoundField extends FieldBinding {
  /** `contextKey` of `context`. */
  readonly ctxKey: string;
  /** The context that chooses the data key, and its key (`context` and `ctxKey` when absent). */
  readonly keyed: ContextRead;
}

/** A context read once: its cache key and its pairs as read (frozen, data properties only). */
export interface ContextRead {
  readonly context: EncryptionContext;
  readonly ctxKey: string;
}

/**
 * Reads `binding` once (see BoundField). `withKeyContext` also reads `keyContext` (the write
 * paths, which choose a data key by it; reads take the key the value names). An immutable
 * binding (see `isImmutableBinding`) met among the last few is answered with its earlier read:
 * adapters hand the engine one frozen binding per column and tenant, and reading it again for
 * every value of a result set cost an object, and a walk of its context, per value.
 * @throws ValidationException when the context is malformed, or `keyContext` is not a part of it.
 */
export function bindingOf(binding: FieldBinding, withKeyContext: boolean): BoundField {
  const ring = withKeyContext ? boundWithKeyContext : boundWithout;
  for (let i = 0; i < RECENT_BOUND; i++) {
    if (ring.bindings[i] === binding) return ring.bounds[i] as BoundField;
  }
  const bound = readBinding(binding, withKeyContext);
  if (isImmutableBinding(binding)) {
    const at = ring.next;
    ring.next = (at + 1) % RECENT_BOUND;
    ring.bindings[at] = binding;
    ring.bounds[at] = bound;
  }
  return bound;
}

function readBinding(binding: FieldBinding, withKeyContext: boolean): BoundField {
  const { model, field, context } = binding;
  const read = readContext(context);
  let keyed = read;
  if (withKeyContext) {
    const keyContext = binding.keyContext;
    if (keyContext !== undefined && keyContext !== context) {
      keyed = readContext(keyContext);
      for (const name of Object.keys(keyed.context)) {
        if (!Object.hasOwn(read.context, name) || read.context[name] !== keyed.context[name]) {
          throw new ValidationError(
            `"keyContext" of ${model}.${field} must be a part of its context: "${name}" differs`,
          );
        }
      }
    }
  }
  return {
    model,
    field,
    context: read.context,
    // Always present (one object shape); equal to `context` when the caller gave none.
    keyContext: keyed.context,
    ctxKey: read.ctxKey,
    keyed,
  };
}

/** Bindings `bindingOf` remembers, per kind of read. */
const RECENT_BOUND = 8;
interface BoundRing {
  readonly bindings: (FieldBinding | undefined)[];
  readonly bounds: (BoundField | undefined)[];
  next: number;
}
const newBoundRing = (): BoundRing => ({
  bindings: new Array(RECENT_BOUND).fill(undefined),
  bounds: new Array(RECENT_BOUND).fill(undefined),
  next: 0,
});
const boundWithKeyContext = newBoundRing();
const boundWithout = newBoundRing();

/**
 * Whether reading `binding` again must give what it gave: the binding frozen, a plain object
 * whose `model`, `field`, `context` (and `keyContext`, if it has one) are data properties, and
 * its contexts immutable (see `isImmutable`). Asked after it was read and found valid.
 */
function isImmutableBinding(binding: FieldBinding): boolean {
  if (!Object.isFrozen(binding)) return false;
  const proto: unknown = Object.getPrototypeOf(binding);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const name of ["model", "field", "context"] as const) {
    const descriptor = Object.getOwnPropertyDescriptor(binding, name);
    if (descriptor === undefined || !("value" in descriptor)) return false;
  }
  const keyContext = Object.getOwnPropertyDescriptor(binding, "keyContext");
  if (keyContext !== undefined && !("value" in keyContext)) return false;
  const contexts = [binding.context, keyContext?.value as EncryptionContext | undefined];
  return contexts.every((c) => c === undefined || isImmutable(c, Object.keys(c)));
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
 * The context `readContext` built last, as its pairs in `Object.keys` order and its read: rows
 * of one result set or one tenant's writes repeat a context, and handing back the very string
 * built before spares building it again, and spares the caches that look it up flattening and
 * hashing a fresh copy. Replaced (never mutated) as a whole, so a getter that re-enters cannot
 * tear it.
 */
let last: {
  readonly names: readonly string[];
  readonly values: readonly string[];
  readonly read: ContextRead;
} = { names: [], values: [], read: { context: Object.freeze({}), ctxKey: "" } };

/** Stands for "no object yet": `undefined` would match a missing context. */
const NONE: object = Object.freeze({});
/**
 * The immutable context (frozen, data properties only) `readContext` met last and its read:
 * adapters freeze one context per row (or per result set), whose fields then skip reading it.
 * A cache of reads per object (a WeakMap) cost more per row than it spared.
 */
let frozenContext: object = NONE;
let frozenRead: ContextRead = last.read;
/**
 * The context last found mutable, taken as mutable without asking again (Object.isFrozen costs
 * as much as the rest of `readContext`): at worst it was frozen since, and takes the path that
 * holds for every context.
 */
let openContext: object = NONE;

/**
 * Canonical, collision-free string form of a context, used as a cache key: each key and value
 * is preceded by its length, pairs sorted by key.
 * @throws ValidationException when the context is not a plain object of strings: the key is
 *   looked up before the context is encoded (and validated), so a Map (no own pairs) or the
 *   number 1 would otherwise hit the entry of `{}` or of "1" and be bound as that.
 */
export function contextKey(context: EncryptionContext): string {
  return readContext(context).ctxKey;
}

/**
 * `context` read once: each value read exactly once, its key built from those values, and the
 * same values copied into the frozen object returned with it.
 * @throws ValidationException as `contextKey`.
 */
export function readContext(context: EncryptionContext): ContextRead {
  if (context === frozenContext) return frozenRead;
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
    if (i === n) return seen.read;
  }
  // Asked before the values are read: an object frozen with data properties only gives the
  // values read below for good, so its read may stand for it from now on.
  const immutable = context !== openContext && isImmutable(context, names);
  const values: string[] = new Array(n);
  const copy: Record<string, string> = {};
  for (let i = 0; i < n; i++) {
    const k = names[i] as string;
    const v: unknown = context[k];
    if (typeof v !== "string") {
      throw new ValidationError(`"context" value for key "${k}" must be a string`);
    }
    values[i] = v;
    setOwnMember(copy, k, v);
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
  const read: ContextRead = { context: Object.freeze(copy), ctxKey: out };
  last = { names, values, read };
  if (immutable) {
    frozenContext = context;
    frozenRead = read;
  } else {
    openContext = context;
  }
  return read;
}

/** Frozen, with no accessor among `names`: reading it again gives the same values for good. */
function isImmutable(context: object, names: readonly string[]): boolean {
  if (!Object.isFrozen(context)) return false;
  for (const name of names) {
    const descriptor = Object.getOwnPropertyDescriptor(context, name);
    if (descriptor === undefined || !("value" in descriptor)) return false;
  }
  return true;
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
 * `u8 len || model || u8 len || field || encodeEncryptionContext(context)` (FORMAT §6.2), from
 * the binding as read once: encodings are cached by context key, and each is built from the very
 * pairs its key was built from.
 * @throws ValidationException when a name is empty or too long or the context is malformed.
 */
export function encodeBinding(binding: BoundField): Uint8Array {
  return encodeKeyed(binding.model, binding.field, binding.context, binding.ctxKey);
}

/**
 * The encodings `encodeKeyed` returned last, in a ring of RECENT_KEYED entries: a result set
 * comes row by row, so a row's few encrypted columns come in turn, and one remembered encoding
 * missed on every value (and built a memo entry each time). Parallel arrays written in place:
 * a miss allocates nothing here.
 */
const RECENT_KEYED = 8;
const recentCtxKeys: (string | undefined)[] = new Array(RECENT_KEYED).fill(undefined);
const recentModels: (string | undefined)[] = new Array(RECENT_KEYED).fill(undefined);
const recentFields: (string | undefined)[] = new Array(RECENT_KEYED).fill(undefined);
const recentOuts: (Uint8Array | undefined)[] = new Array(RECENT_KEYED).fill(undefined);
let recentNext = 0;

function encodeKeyed(
  modelName: string,
  fieldName: string,
  bindingContext: EncryptionContext,
  ctxKey: string,
): Uint8Array {
  for (let i = 0; i < RECENT_KEYED; i++) {
    if (
      recentFields[i] === fieldName &&
      recentCtxKeys[i] === ctxKey &&
      recentModels[i] === modelName
    ) {
      return recentOuts[i] as Uint8Array;
    }
  }
  const out = encodeKeyedMiss(modelName, fieldName, bindingContext, ctxKey);
  const at = recentNext;
  recentNext = (at + 1) % RECENT_KEYED;
  recentCtxKeys[at] = ctxKey;
  recentModels[at] = modelName;
  recentFields[at] = fieldName;
  recentOuts[at] = out;
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
