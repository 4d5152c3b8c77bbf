import { InvalidCiphertextError, ValidationError } from "../errors.ts";
import { isWellFormed } from "../internal/unicode.ts";
import { mayCollateAsFieldCiphertextText, parseFieldCiphertext } from "./field-format.ts";
import { jsonDataText, type NotJsonData } from "./json-data.ts";

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

/** Strings up to this many UTF-16 units encode into the scratch of encodeFieldValueShared. */
const SCRATCH_UNITS = 1024;
/** Memory of its own (Buffer.alloc never takes Node's shared pool); wiped after each use. */
const scratch = Buffer.alloc(SCRATCH_UNITS * 3 + 1);
let current: Uint8Array | undefined;

/**
 * `encodeFieldValue` for a caller that seals and wipes the plaintext before it returns: a short
 * string, the common case, encodes into one buffer shared by every call, which spares an
 * allocation per value and keeps the plaintext out of Node's shared Buffer pool. The bytes hold
 * their value until the next call: check `isCurrentPlaintext` after anything that may run caller
 * code (a key selector or a getter may encrypt another value).
 * @throws ValidationException as `encodeFieldValue`.
 */
export function encodeFieldValueShared(
  field: string,
  type: FieldValueType,
  value: unknown,
): Uint8Array {
  if (type !== "string" || typeof value !== "string" || value.length > SCRATCH_UNITS) {
    return encodeFieldValue(field, type, value);
  }
  checkString(field, value);
  scratch[0] = TAGS.string;
  // UTF-8 takes at most 3 bytes per UTF-16 unit: the write cannot be cut short.
  const length = scratch.write(value, 1, "utf8") + 1;
  current = new Uint8Array(scratch.buffer, scratch.byteOffset, length);
  return current;
}

/** False when `bytes` came from encodeFieldValueShared and a later call reused their buffer. */
export function isCurrentPlaintext(bytes: Uint8Array): boolean {
  return bytes === current || bytes.buffer !== scratch.buffer;
}

/** @throws ValidationException when `value` is not well-formed Unicode. */
export function checkString(field: string, value: string): void {
  if (!isWellFormed(value)) {
    throw new ValidationError(
      `"${field}" string values must be well-formed Unicode (no lone surrogates)`,
    );
  }
}

/**
 * Serializes `value` as `tag || payload`.
 * @throws ValidationException when the value does not match the declared type.
 */
export function encodeFieldValue(field: string, type: FieldValueType, value: unknown): Uint8Array {
  switch (type) {
    case "string":
      if (typeof value !== "string") throw typeError(field, type, value);
      checkString(field, value);
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
      // setFloat64 keeps a NaN's payload bits, and JS can make NaNs with any of 2^52 payloads:
      // one NaN, one encoding, or equal deterministic values would differ. -0 stays -0.
      new DataView(out.buffer).setFloat64(1, Number.isNaN(value) ? Number.NaN : value);
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
      const text = decimalText(value);
      if (text === undefined) throw typeError(field, type, value);
      return tagged(TAGS.decimal, text);
    }
    case "json": {
      if (value === undefined || typeof value === "function" || typeof value === "symbol") {
        throw typeError(field, type, value);
      }
      // JSON data only: what JSON.stringify drops or rewrites (a Map, undefined members, NaN,
      // a toJSON() result) would be stored as something else and lost without a word.
      const text = readJsonData(
        value,
        (cause) =>
          new ValidationError(`"${field}" is declared as json but is not serializable`, { cause }),
      );
      if (typeof text !== "string") {
        throw new ValidationError(`"${field}" is declared as json but holds ${notJsonData(text)}`);
      }
      return tagged(TAGS.json, text);
    }
  }
}

/**
 * The input of a blind index of a non-string value: the §6.3 `json` encoding (tag || JSON text),
 * byte for byte, of JSON data. An index matches equal inputs, so a value whose JSON text stands
 * for others too is refused instead of colliding with them: null itself, and anything that is
 * not JSON data anywhere in the value (jsonDataText: NaN and ±Infinity, undefined, functions,
 * symbols, bigints, array holes, cycles, toJSON() methods, Maps, Sets, typed arrays, Dates and
 * other class instances). At the top only, a valid Date and a decimal object (decimal.js, as
 * Prisma's Decimal) keep their index: their text is a JSON string, which no other input has
 * (strings are indexed as themselves, tag 01). Inside a value they would match a string.
 * @throws ValidationException naming the field and the path, by members' positions: neither a
 * member name nor a value, which are both plaintext.
 */
export function encodeIndexValue(field: string, value: unknown): Uint8Array {
  const refuse = (rule: string, cause?: unknown) =>
    new ValidationError(
      `"${field}": a blind index ${rule}`,
      cause === undefined ? undefined : { cause },
    );
  if (typeof value === "bigint") {
    throw refuse("cannot take a bigint: JSON has no form for it (index its string form)");
  }
  if (value === undefined || typeof value === "function" || typeof value === "symbol") {
    throw refuse(`value must have a JSON form, got ${typeof value}`);
  }
  const isDate = value instanceof Date;
  if (value === null || (isDate && Number.isNaN(value.getTime()))) {
    throw refuse(
      "cannot take null or a value that serializes to null (such as an invalid Date): they would all match each other",
    );
  }
  if (isDate || isDecimalLike(value)) {
    let text: string | undefined;
    try {
      text = JSON.stringify(value);
    } catch (cause) {
      // A decimal object's throwing toJSON(); its message is the library's, not the value.
      throw refuse("value must be JSON-serializable", cause);
    }
    if (text?.startsWith('"') && (isDate || DECIMAL.test(text.slice(1, -1)))) {
      return tagged(TAGS.json, text);
    }
    if (!isDate) {
      throw refuse("cannot take a decimal object whose text is not a finite decimal");
    }
  }
  const text = readJsonData(value, (cause) => refuse("value must be JSON-serializable", cause));
  if (typeof text !== "string") throw refuse(`cannot take ${notJsonData(text)}`);
  return tagged(TAGS.json, text);
}

/** What a blind index of a field of each type takes, for the message that refuses the rest. */
const INDEX_TAKES: Record<FieldValueType, string> = {
  string: "a string",
  bytes: "a Uint8Array",
  number: "a number",
  boolean: "a boolean",
  date: "a valid Date",
  bigint: "a bigint",
  decimal: "a decimal string, a finite number or a decimal object",
  json: "JSON data",
};

/**
 * The input of a blind index of a field declared `type` (FORMAT §6.5): the forms of one value
 * that the field's encoding takes (§6.3) give one input, and forms that encode differently give
 * different ones, as deterministic encryption does. What the field would refuse is refused, so
 * that a lookup with it fails instead of silently matching nothing. The inputs are those an
 * untyped index gives the form most values arrive in, so stored indexes keep matching:
 * - string, and a json string: the string, normalized;
 * - decimal: its §6.3 text (a string as written, a number as `String(n)`, a decimal object as
 *   its `toString()`), normalized, as the string it is stored as;
 * - bigint: its decimal digits, normalized, the string form an untyped index asked for;
 * - number, boolean, json: the JSON text, as untyped (`-0` as `0`; NaN and ±Infinity refused);
 * - date: a valid Date's `toISOString()` as a JSON string, as untyped (no other form);
 * - bytes: tag `02` and the bytes (§6.3), which an untyped index refuses.
 * @throws ValidationException naming the field and what its type takes, never quoting the value.
 */
export function encodeTypedIndexValue(
  field: string,
  type: FieldValueType,
  value: unknown,
  normalize: (text: string) => string,
): Uint8Array {
  const text = (raw: string) => encodeFieldValue(field, "string", normalize(raw));
  const wrongType = (): ValidationError => {
    const got =
      value === null
        ? "null"
        : value instanceof Uint8Array
          ? "Uint8Array"
          : value instanceof Date
            ? "a Date"
            : typeof value === "string" && type === "decimal"
              ? "a string outside the decimal grammar"
              : typeof value;
    return new ValidationError(
      `"${field}": a blind index of a ${type} field takes ${INDEX_TAKES[type]}, got ${got}`,
    );
  };
  switch (type) {
    case "string":
      if (typeof value !== "string") throw wrongType();
      return text(value);
    case "decimal": {
      const decimal = decimalText(value);
      if (decimal === undefined) throw wrongType();
      return text(decimal);
    }
    case "bigint":
      if (typeof value !== "bigint") throw wrongType();
      return text(value.toString());
    case "bytes":
      if (!(value instanceof Uint8Array)) throw wrongType();
      return encodeFieldValue(field, "bytes", value);
    case "number":
    case "boolean":
      if (typeof value !== type) throw wrongType();
      return encodeIndexValue(field, value);
    case "date": {
      const time = dateTime(value);
      if (time === undefined) throw wrongType();
      // The intrinsic, not the value's own toJSON() or toISOString(), which an object may replace.
      return tagged(TAGS.json, JSON.stringify(new Date(time).toISOString()));
    }
    case "json":
      if (typeof value === "string") return text(value);
      // Untyped, a whole Date or decimal object is indexed; a json field stores neither.
      if (value instanceof Date || isDecimalLike(value)) throw wrongType();
      return encodeIndexValue(field, value);
  }
}

/** The time of a valid Date, read by the intrinsic (an object may only inherit from Date). */
function dateTime(value: unknown): number | undefined {
  if (!(value instanceof Date)) return undefined;
  try {
    const time = Date.prototype.getTime.call(value);
    return Number.isNaN(time) ? undefined : time;
  } catch {
    return undefined;
  }
}

/**
 * A decimal's §6.3 text: a string as written, a finite number as `String(n)`, Prisma's Decimal
 * (decimal.js) or a similar object as its `toString()`, which is lossless; undefined when that
 * text is not in the decimal grammar.
 */
function decimalText(value: unknown): string | undefined {
  const text =
    typeof value === "string"
      ? value
      : typeof value === "number" && Number.isFinite(value)
        ? String(value)
        : isDecimalLike(value)
          ? value.toString()
          : undefined;
  return text !== undefined && DECIMAL.test(text) ? text : undefined;
}

/** jsonDataText, with what a getter of the value throws turned into `wrap(cause)`. */
function readJsonData(
  value: unknown,
  wrap: (cause: unknown) => ValidationError,
): string | NotJsonData {
  try {
    return jsonDataText(value);
  } catch (cause) {
    throw wrap(cause);
  }
}

/** "undefined at $.<member 2>: JSON leaves the member out"; no path for the value itself. */
function notJsonData({ found, path, why }: NotJsonData): string {
  return `${found}${path === "$" ? "" : ` at ${path}`}: ${why}`;
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
 * `decodeFieldValue` of the plaintext held in `buffer` from `start` to `end` (a batch's shared
 * plaintext): a string is decoded from the range itself, without a view.
 */
export function decodeFieldValueIn(
  type: FieldValueType,
  buffer: Buffer,
  start: number,
  end: number,
): FieldValue {
  if (type === "string" && start < end && TYPES_BY_TAG[buffer[start] as number] === "string") {
    return buffer.toString("utf8", start + 1, end);
  }
  return decodeFieldValue(
    type,
    new Uint8Array(buffer.buffer, buffer.byteOffset + start, end - start),
  );
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
    // TextDecoder and cannot meet invalid UTF-8 here. A Buffer (the cipher's output) decodes a
    // range without a view; anything else through one view, no intermediate subarray.
    if (Buffer.isBuffer(plaintext)) return plaintext.toString("utf8", 1);
    return Buffer.from(
      plaintext.buffer,
      plaintext.byteOffset + 1,
      plaintext.byteLength - 1,
    ).toString("utf8");
  }
  // A plain view even of a Buffer (the cipher's output): Buffer#slice shares memory, and "bytes"
  // must return a copy that outlives the caller's wipe of the plaintext.
  const body = new Uint8Array(plaintext.buffer, plaintext.byteOffset + 1, plaintext.byteLength - 1);
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
  } catch {
    // No cause: the parsers' messages quote the text they failed on, which is plaintext.
    throw new InvalidCiphertextError("field value is not valid ciphertext");
  }
}

function fixed8(body: Uint8Array): DataView {
  if (body.length !== 8) throw new Error("expected 8 bytes");
  return new DataView(body.buffer, body.byteOffset, 8);
}

const LEGACY_NUMBER = /^\s*(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Infinity|NaN)\s*$/;
const LEGACY_BIGINT = /^\s*-?\d+\s*$/;
/**
 * ISO 8601 (RFC 3339) as databases and toISOString() print a date: `2024-05-06`, or with a time
 * after `T` or a space, `2024-05-06 07:08`, `2024-05-06T07:08:09.123456`, and a zone, `Z`, `+02`,
 * `+0200`, `-02:00`; a year of 4 digits, or of 6 with a sign as toISOString() writes years
 * outside 0…9999.
 */
const LEGACY_DATE =
  /^([+-]\d{6}|\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}(?::?\d{2})?)?)?$/;
/** PostgreSQL prints booleans as t/f, MySQL stores 1/0. */
const LEGACY_BOOLEANS = new Map([
  ["true", true],
  ["false", false],
  ["t", true],
  ["f", false],
  ["1", true],
  ["0", false],
]);

/**
 * A legacy plaintext value (`legacyPlaintext`) as the declared type: a column migrated to
 * ciphertext held the value's natural text form (or its bytes). Text that is not such a form is
 * refused, not guessed at (`Number("")` is 0, "yes" is no boolean, "1" is no date: LEGACY_DATE
 * lists the date forms), and the error carries neither the text nor the parser's message, which
 * quotes it.
 * @throws ValidationException when `stored` is not a text form of `type`.
 */
export function parseLegacyValue(
  field: string,
  type: FieldValueType,
  stored: string | Uint8Array,
): FieldValue {
  if (stored instanceof Uint8Array && type === "bytes") return stored;
  const unparsable = () =>
    new ValidationError(`legacy value of "${field}" is not a ${type} in text form`);
  let text: string;
  try {
    text = typeof stored === "string" ? stored : decoder.decode(stored);
  } catch {
    throw unparsable();
  }
  switch (type) {
    case "number":
      if (!LEGACY_NUMBER.test(text)) throw unparsable();
      return Number(text);
    case "boolean": {
      const value = LEGACY_BOOLEANS.get(text.trim().toLowerCase());
      if (value === undefined) throw unparsable();
      return value;
    }
    case "date": {
      const date = legacyDate(text);
      if (date === undefined) throw unparsable();
      return date;
    }
    case "bigint":
      if (!LEGACY_BIGINT.test(text)) throw unparsable();
      return BigInt(text.trim());
    case "json":
      try {
        return JSON.parse(text) as FieldValue;
      } catch {
        throw unparsable();
      }
    case "decimal":
      if (!DECIMAL.test(text)) throw unparsable();
      return text;
    case "bytes":
      return encoder.encode(text);
    case "string":
      return text;
  }
}

/**
 * A legacy date text (LEGACY_DATE) as the Date it names, read as ECMAScript reads its own date
 * format: a date alone at midnight UTC, a time without a zone in local time, as `new Date(text)`
 * read them before. Undefined for any other text and for a day or time that does not exist
 * (February 30, 24:00, a zone past ±23:59), which `new Date` would roll over or guess at ("1" as
 * 2001-01-01).
 */
function legacyDate(text: string): Date | undefined {
  const match = LEGACY_DATE.exec(text);
  if (match === null) return undefined;
  const [, year = "", month = "", day = "", hour, minute = "", second = "00", fraction = "", zone] =
    match;
  const y = Number(year);
  const m = Number(month);
  const d = Number(day);
  const leap = y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
  const days = m === 2 ? (leap ? 29 : 28) : m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31;
  if (year === "-000000" || m < 1 || m > 12 || d < 1 || d > days) return undefined;
  const date = `${year}-${month}-${day}`;
  if (hour === undefined) return validDate(`${date}T00:00:00.000Z`);
  if (Number(hour) > 23 || Number(minute) > 59 || Number(second) > 59) return undefined;
  let offset = "";
  if (zone === "Z") offset = zone;
  else if (zone !== undefined) {
    const hours = zone.slice(1, 3);
    const minutes = zone.length === 3 ? "00" : zone.slice(-2);
    if (Number(hours) > 23 || Number(minutes) > 59) return undefined;
    offset = `${zone.charAt(0)}${hours}:${minutes}`;
  }
  // Rewritten in the format every ECMAScript engine reads exactly (ECMA-262 "Date Time String
  // Format"), the fraction cut to milliseconds as new Date cuts it.
  const ms = fraction.padEnd(3, "0").slice(0, 3);
  return validDate(`${date}T${hour}:${minute}:${second}.${ms}${offset}`);
}

/** Undefined past the time values a Date holds (±8.64e15 ms around 1970). */
function validDate(iso: string): Date | undefined {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? undefined : date;
}

/**
 * The form a legacy plaintext row holds `value` in, for equality lookups during a migration
 * (FORMAT §6.7): its natural text form, as `parseLegacyValue` reads it back — a string as it is,
 * a number as `String(n)` (`-0` as "-0"), a boolean as "true"/"false", a date as its
 * `toISOString()`, a bigint's digits, a decimal's §6.3 text, JSON text as the json type encodes
 * it — and for Bytes columns that text's UTF-8 bytes (a `bytes` field's own bytes). One spelling
 * per value: a legacy row holding another one ("t", " 42", another date format) is not matched.
 * Undefined when that form would be read as ciphertext (text with the `kms1:` prefix, bytes
 * with a §6.1 header), which no legacy row can hold, or might collate equal to it (the prefix in
 * another case, width or accent: `mayCollateAsFieldCiphertextText`); and for `bytes` values that are not
 * well-formed UTF-8 in a String column.
 * @throws ValidationException when the value is not of the declared type (as encodeFieldValue).
 */
export function legacyFormOf(
  field: string,
  type: FieldValueType,
  value: unknown,
  storage: "text" | "bytes",
): string | Uint8Array | undefined {
  // Validated (and, where the text is the payload, canonicalized) as the encryption would.
  const encoded = encodeFieldValue(field, type, value);
  try {
    if (type === "bytes" && storage === "bytes") {
      const bytes = encoded.slice(1);
      return parseFieldCiphertext(bytes) === undefined ? bytes : undefined;
    }
    let text: string;
    switch (type) {
      case "number":
        text = Object.is(value, -0) ? "-0" : String(value);
        break;
      case "boolean":
        text = String(value);
        break;
      case "date":
        text = (value as Date).toISOString();
        break;
      default:
        try {
          text = decoder.decode(encoded.subarray(1));
        } catch {
          return undefined;
        }
    }
    // Compared under the column's collation: a prefix in another case (or width, or accent)
    // could match a stored ciphertext on MySQL.
    if (storage === "text") return mayCollateAsFieldCiphertextText(text) ? undefined : text;
    const bytes = encoder.encode(text);
    return parseFieldCiphertext(bytes) === undefined ? bytes : undefined;
  } finally {
    encoded.fill(0);
  }
}
