import { ValidationError } from "../errors.ts";
import { isWellFormed } from "./unicode.ts";

/** Validation helpers that name the argument and the rule in their message. */
export function assertString(name: string, value: unknown, min: number, max: number): string {
  if (typeof value !== "string") {
    throw new ValidationError(`"${name}" expected a string, got ${describe(value)}`);
  }
  if (value.length < min || value.length > max) {
    throw new ValidationError(
      `"${name}" must be ${min}–${max} characters long, got ${value.length}`,
    );
  }
  // Stores write UTF-8, which turns each lone surrogate into U+FFFD: a grantee "a\ud800" would
  // come back from the database as "a\ufffd", another principal's name.
  if (!isWellFormed(value)) {
    throw new ValidationError(`"${name}" must be well-formed Unicode (no lone surrogates)`);
  }
  return value;
}

export function assertBytes(name: string, value: unknown, min: number, max: number): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new ValidationError(`"${name}" expected a Uint8Array, got ${describe(value)}`);
  }
  if (value.length < min || value.length > max) {
    throw new ValidationError(`"${name}" must be ${min}–${max} bytes long, got ${value.length}`);
  }
  return value;
}

export function assertInteger(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new ValidationError(`"${name}" expected an integer, got ${describe(value)}`);
  }
  if (value < min || value > max) {
    throw new ValidationError(`"${name}" must be between ${min} and ${max}, got ${value}`);
  }
  return value;
}

export function assertOneOf<T extends string>(
  name: string,
  value: unknown,
  allowed: readonly T[],
): T {
  if (typeof value !== "string" || !(allowed as readonly string[]).includes(value)) {
    throw new ValidationError(
      `"${name}" must be one of ${allowed.join(", ")}, got ${describe(value)}`,
    );
  }
  return value as T;
}

export function assertBoolean(name: string, value: unknown): boolean {
  if (typeof value !== "boolean") {
    throw new ValidationError(`"${name}" expected a boolean, got ${describe(value)}`);
  }
  return value;
}

export function assertObject(name: string, value: unknown): Record<string, unknown> {
  // Byte arrays are objects too, but never a request or a map of fields.
  if (
    typeof value !== "object" ||
    value === null ||
    Array.isArray(value) ||
    ArrayBuffer.isView(value)
  ) {
    throw new ValidationError(`"${name}" expected an object, got ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

/**
 * A plain object (prototype Object.prototype or null). The facade's request snapshot copies
 * those, so their fields are the data authorization read; a class instance is kept by
 * reference, and a getter on it could answer a policy condition one value and the write another.
 */
export function isPlainObject(value: unknown): value is Readonly<Record<string, unknown>> {
  if (typeof value !== "object" || value === null) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Describes a bad value by type and size only: it may be a secret, so never by content. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (value instanceof Uint8Array) return `${value.constructor.name}(${value.length})`;
  if (Array.isArray(value)) return `array(${value.length})`;
  if (typeof value === "string") return `string(${value.length})`;
  if (typeof value === "number")
    return Number.isFinite(value) ? String(value) : "non-finite number";
  return typeof value;
}
