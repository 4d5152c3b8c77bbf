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
const frozenCache = new WeakMap<EncryptionContext, Map<string, Map<string, Uint8Array>>>();

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
  let out = "";
  const keys = Object.keys(context);
  if (keys.length > 1) keys.sort();
  for (const k of keys) {
    const v: unknown = context[k];
    if (typeof v !== "string") {
      throw new ValidationError(`"context" value for key "${k}" must be a string`);
    }
    out += `${k.length}:${k}${v.length}:${v}`;
  }
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
  const context = binding.context;
  // A frozen context cannot change, so its encodings can hang off the object itself: adapters
  // that share one frozen context across a result set skip building its key per value.
  const frozen = Object.isFrozen(context) ? frozenCache.get(context) : undefined;
  const own = frozen?.get(binding.model)?.get(binding.field);
  if (own !== undefined) return own;
  const out = encodeKeyed(binding, ctxKey ?? contextKey(context));
  if (Object.isFrozen(context)) {
    let models = frozenCache.get(context);
    if (models === undefined) {
      models = new Map();
      frozenCache.set(context, models);
    }
    let fields = models.get(binding.model);
    if (fields === undefined) {
      fields = new Map();
      models.set(binding.model, fields);
    }
    fields.set(binding.field, out);
  }
  return out;
}

function encodeKeyed(binding: FieldBinding, ctxKey: string): Uint8Array {
  const byModel = cache.get(ctxKey);
  const byField = byModel?.get(binding.model);
  const hit = byField?.get(binding.field);
  if (hit !== undefined) return hit;
  const model = lengthPrefixed("model", binding.model);
  const field = lengthPrefixed("field", binding.field);
  const context = encodeEncryptionContext(binding.context, "context");
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
  let fields = models.get(binding.model);
  if (fields === undefined) {
    fields = new Map();
    models.set(binding.model, fields);
  }
  fields.set(binding.field, out);
  cached += 1;
  return out;
}
