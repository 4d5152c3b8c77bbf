import { encodeEncryptionContext } from "../envelope/encryption-context.ts";
import { ValidationError } from "../errors.ts";
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
}

const encoder = new TextEncoder();
const MAX_NAME_BYTES = 255;
/** Bounded so that bindings built from attacker-chosen tenants cannot grow memory forever. */
const MAX_CACHED_BINDINGS = 4096;
const cache = new Map<string, Uint8Array>();

/**
 * Canonical, collision-free string form of a context, used as a cache key: each key and value
 * is preceded by its length, pairs sorted by key.
 */
export function contextKey(context: EncryptionContext): string {
  let out = "";
  const keys = Object.keys(context);
  if (keys.length > 1) keys.sort();
  for (const k of keys) {
    const v = context[k] as string;
    out += `${k.length}:${k}${String(v).length}:${v}`;
  }
  return out;
}

function lengthPrefixed(argument: string, value: string): Uint8Array {
  if (typeof value !== "string" || value.length === 0) {
    throw new ValidationError(`"${argument}" must be a non-empty string`);
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
export function encodeBinding(
  binding: FieldBinding,
  ctxKey = contextKey(binding.context),
): Uint8Array {
  const key = `${binding.model.length}:${binding.model}${binding.field.length}:${binding.field}${ctxKey}`;
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  const model = lengthPrefixed("model", binding.model);
  const field = lengthPrefixed("field", binding.field);
  const context = encodeEncryptionContext(binding.context, "context");
  const out = new Uint8Array(model.length + field.length + context.length);
  out.set(model, 0);
  out.set(field, model.length);
  out.set(context, model.length + field.length);
  if (cache.size >= MAX_CACHED_BINDINGS) cache.clear();
  cache.set(key, out);
  return out;
}
