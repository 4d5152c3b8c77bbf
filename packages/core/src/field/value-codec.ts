import { InvalidCiphertextError, ValidationError } from "../errors.ts";
import { isWellFormed } from "../internal/unicode.ts";

/**
 * The JS types a field can hold. The type travels as a 1-byte tag inside the plaintext (so it
 * is authenticated with the value), and the declared type of a field is checked on both ends.
 * See docs/FORMAT.md §6.3.
 */
export type FieldValueType =
  | "string"
  | "bytes"
  | "number"
  | "boolean"
  | "date"
  | "bigint"
  | "decimal"
  | "json";

/** A value of one of the FieldValueTypes; decimals travel as their string form. */
export type FieldValue = string | Uint8Array | number | boolean | Date | bigint | JsonValue;
export type JsonValue =
  | string
  | number
  | boolean
  | null
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue };

export const FIELD_VALUE_TYPES: readonly FieldValueType[] = [
  "string",
  "bytes",
  "number",
  "boolean",
  "date",
  "bigint",
  "decimal",
  "json",
];

const TAGS: Record<FieldValueType, number> = {
  string: 0x01,
  bytes: 0x02,
  number: 0x03,
  boolean: 0x04,
  date: 0x05,
  bigint: 0x06,
  decimal: 0x07,
  json: 0x08,
};
const TYPES_BY_TAG: readonly (FieldValueType | undefined)[] = (() => {
  const out: (FieldValueType | undefined)[] = [];
  for (const [type, tag] of Object.entries(TAGS)) out[tag] = type as FieldValueType;
  return out;
})();

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const DECIMAL = /^-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;

function typeError(field: string, type: FieldValueType, value: unknown): ValidationError {
  const got = value === null ? "null" : value instanceof Uint8Array ? "Uint8Array" : typeof value;
  return new ValidationError(`"${field}" is declared as ${type}, got ${got}`);
}

/** tag || UTF-8 in one allocation; Buffer's native writer is several times faster than encodeInto. */
function utf8Plaintext(value: string): Uint8Array {
  const out = Buffer.allocUnsafe(Buffer.byteLength(value, "utf8") + 1);
  out[0] = TAGS.string;
  out.write(value, 1, "utf8");
  return out;
}

/**
 * Serializes `value` as `tag || payload`.
 * @throws ValidationException when the value does not match the declared type.
 */
export function encodeFieldValue(field: string, type: FieldValueType, value: unknown): Uint8Array {
  switch (type) {
    case "string":
      if (typeof value !== "string") throw typeError(field, type, value);
      if (!isWellFormed(value)) {
        throw new ValidationError(
          `"${field}" string values must be well-formed Unicode (no lone surrogates)`,
        );
      }
      return utf8Plaintext(value);
    case "bytes": {
      if (!(value instanceof Uint8Array)) throw typeError(field, type, value);
      const out = new Uint8Array(value.length + 1);
      out[0] = TAGS.bytes;
      out.set(value, 1);
      return out;
    }
    case "number": {
      if (typeof value !== "number") throw typeError(field, type, value);
      const out = new Uint8Array(9);
      out[0] = TAGS.number;
      new DataView(out.buffer).setFloat64(1, value);
      return out;
    }
    case "boolean": {
      if (typeof value !== "boolean") throw typeError(field, type, value);
      return Uint8Array.of(TAGS.boolean, value ? 1 : 0);
    }
    case "date": {
      if (!(value instanceof Date) || Number.isNaN(value.getTime())) {
        throw typeError(field, type, value);
      }
      const out = new Uint8Array(9);
      out[0] = TAGS.date;
      new DataView(out.buffer).setFloat64(1, value.getTime());
      return out;
    }
    case "bigint": {
      if (typeof value !== "bigint") throw typeError(field, type, value);
      return tagged(TAGS.bigint, value.toString());
    }
    case "decimal": {
      // Prisma's Decimal (decimal.js) and similar objects serialize losslessly via toString().
      const text =
        typeof value === "string"
          ? value
          : typeof value === "number" && Number.isFinite(value)
            ? String(value)
            : isDecimalLike(value)
              ? value.toString()
              : undefined;
      if (text === undefined || !DECIMAL.test(text)) throw typeError(field, type, value);
      return tagged(TAGS.decimal, text);
    }
    case "json": {
      if (value === undefined || typeof value === "function" || typeof value === "symbol") {
        throw typeError(field, type, value);
      }
      let text: string | undefined;
      try {
        text = JSON.stringify(value);
      } catch (cause) {
        throw new ValidationError(`"${field}" is declared as json but is not serializable`, {
          cause,
        });
      }
      // A toJSON() that returns undefined serializes to nothing: stored, it would be an empty
      // text that no read can parse back.
      if (text === undefined) {
        throw new ValidationError(`"${field}" is declared as json but serializes to nothing`);
      }
      return tagged(TAGS.json, text);
    }
  }
}

function isDecimalLike(value: unknown): value is { toString(): string } {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { toFixed?: unknown }).toFixed === "function" &&
    typeof (value as { isNaN?: unknown }).isNaN === "function"
  );
}

function tagged(tag: number, text: string): Uint8Array {
  const body = encoder.encode(text);
  const out = new Uint8Array(body.length + 1);
  out[0] = tag;
  out.set(body, 1);
  return out;
}

/**
 * Parses `tag || payload` back to its JS value. The bytes were authenticated, so a mismatch
 * means a value written under another declared type (a schema change): still an error, and a
 * generic one.
 * @throws InvalidCiphertextException when the tag is unknown or differs from the declared type.
 */
export function decodeFieldValue(type: FieldValueType, plaintext: Uint8Array): FieldValue {
  const actual = TYPES_BY_TAG[plaintext[0] ?? 0];
  if (actual !== type) throw new InvalidCiphertextError("field value is not valid ciphertext");
  if (type === "string") {
    // Authenticated bytes that we encoded ourselves: Buffer's decoder is faster than a fatal
    // TextDecoder and cannot meet invalid UTF-8 here. One view, no intermediate subarray.
    return Buffer.from(
      plaintext.buffer,
      plaintext.byteOffset + 1,
      plaintext.byteLength - 1,
    ).toString("utf8");
  }
  const body = plaintext.subarray(1);
  try {
    switch (type) {
      case "bytes":
        return body.slice();
      case "number":
        return fixed8(body).getFloat64(0);
      case "boolean":
        if (body.length !== 1 || (body[0] ?? 2) > 1) throw new Error("boolean");
        return body[0] === 1;
      case "date":
        return new Date(fixed8(body).getFloat64(0));
      case "bigint":
        return BigInt(decoder.decode(body));
      case "decimal":
        return decoder.decode(body);
      case "json":
        return JSON.parse(decoder.decode(body)) as JsonValue;
    }
  } catch (cause) {
    throw new InvalidCiphertextError("field value is not valid ciphertext", { cause });
  }
}

function fixed8(body: Uint8Array): DataView {
  if (body.length !== 8) throw new Error("expected 8 bytes");
  return new DataView(body.buffer, body.byteOffset, 8);
}
