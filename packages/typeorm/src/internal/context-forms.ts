import { ValidationError } from "@kms/core";
import type { EntityMetadata, ValueTransformer } from "typeorm";
import { MYSQL_FAMILY } from "./drivers.ts";
import type { ColumnMetadata } from "./entity-descriptor.ts";

/**
 * The text a context column gives back once the database has stored `value`, where that differs
 * from `String(value)`: a value is bound as written and opened as read, so both must be the text
 * the database holds.
 * @throws ValidationException when the database would store the value in a form not known here.
 */
export type ContextForm = (value: string | number | bigint) => string;

/** Column types whose stored text is the database's own: scale, exponent, rounding, time zone. */
const REWRITTEN_TYPES = new Set([
  "decimal",
  "numeric",
  "dec",
  "fixed",
  "money",
  "float",
  "float4",
  "float8",
  "double",
  "double precision",
  "real",
  "date",
  "time",
  "time without time zone",
  "time with time zone",
  "timetz",
  "datetime",
  "timestamp",
  "timestamp without time zone",
  "timestamp with time zone",
  "timestamptz",
  "interval",
  "year",
]);

/**
 * Declared types whose values TypeORM or the driver convert on the way in or out (JSON parsed,
 * booleans made 0/1), whatever column type they end up as (MariaDB's `json` is a longtext).
 */
const CONVERTED_TYPES = new Set([
  "json",
  "jsonb",
  "simple-json",
  "simple-array",
  "boolean",
  "bool",
]);

const INTEGER_TYPES = new Set([
  "int",
  "integer",
  "int2",
  "int4",
  "int8",
  "tinyint",
  "smallint",
  "mediumint",
  "bigint",
  "serial",
  "smallserial",
  "bigserial",
]);

/** Text types that keep the characters they are given (up to their length). */
const TEXT_TYPES = new Set([
  "varchar",
  "character varying",
  "nvarchar",
  "national varchar",
  "varying character",
  "text",
  "tinytext",
  "mediumtext",
  "longtext",
  "clob",
  "string",
]);

const FIXED_LENGTH_TYPES = new Set(["char", "character", "nchar", "national char", "bpchar"]);

/** Drivers whose string columns enforce their length (the others store what they are given). */
const LENGTH_CHECKED = new Set(["postgres", "cockroachdb", "mysql", "mariadb", "aurora-mysql"]);

/**
 * SQLite drivers: they read an integer back as a JavaScript number (better-sqlite3 unless its
 * safe integers are switched on by the application, sqlite3, sql.js), rounded beyond 2^53 − 1.
 */
const SQLITE_FAMILY = new Set([
  "sqlite",
  "better-sqlite3",
  "sqljs",
  "capacitor",
  "cordova",
  "expo",
  "nativescript",
  "react-native",
]);

/**
 * How `column` stores a context value, as a load gives it back: undefined when it keeps the text
 * it is given as it is. An allow-list: integers, uuid, and text types whose rules are known here;
 * every other type (inet, macaddr, json, decimal, timestamps, MariaDB's enum…) may be stored in a
 * form of the database's own, which a value bound as written would not match once read back. A
 * column with a value transformer gives back `from(to(value))`, which a normalizing transformer
 * (`to: (v) => v.toLowerCase()`) makes another value than the one written: that is the value
 * bound, as a load reads it.
 * @throws ValidationException naming the column and its type when it is not on the list.
 */
export function contextFormOf(
  metadata: EntityMetadata,
  column: ColumnMetadata,
  where: string,
): ContextForm | undefined {
  const stored = storedFormOf(metadata, column, where);
  const transformer = column.transformer;
  if (transformer === undefined) return stored;
  const name = `${metadata.name}.${column.propertyPath}`;
  return (value) => {
    const loaded = roundTrip(name, transformer, value);
    return stored === undefined ? String(loaded) : stored(loaded);
  };
}

/**
 * `value` written through `transformer` and read back through it, as TypeORM applies a list of
 * transformers: `to` in order, `from` in reverse.
 * @throws ValidationException when a transformer throws, or what comes back is not a string or
 *   number, which no context can hold.
 */
function roundTrip(
  name: string,
  transformer: ValueTransformer | ValueTransformer[],
  value: string | number | bigint,
): string | number | bigint {
  const list = Array.isArray(transformer) ? transformer : [transformer];
  let loaded: unknown;
  try {
    const written = list.reduce<unknown>((v, t) => t.to(v), value);
    loaded = list.reduceRight<unknown>((v, t) => t.from(v), written);
  } catch (cause) {
    throw new ValidationError(
      `${name} is bound into encrypted values, and its value transformer failed on the value given`,
      { cause },
    );
  }
  if (typeof loaded === "string" || typeof loaded === "number" || typeof loaded === "bigint") {
    return loaded;
  }
  const what =
    loaded === null || loaded === undefined
      ? String(loaded)
      : typeof loaded === "object"
        ? "an object"
        : `a ${typeof loaded}`;
  throw new ValidationError(
    `${name} is bound into encrypted values, and its value transformer gives back ${what} for the value given (from(to(value))): a context column must read back as a string or number`,
  );
}

/** How `column` stores a context value, before any value transformer (see contextFormOf). */
function storedFormOf(
  metadata: EntityMetadata,
  column: ColumnMetadata,
  where: string,
): ContextForm | undefined {
  const { driver, options } = metadata.connection;
  const declared = typeof column.type === "function" ? column.type.name : String(column.type);
  const type = String(driver.normalizeType(column)).toLowerCase();
  if (CONVERTED_TYPES.has(declared.toLowerCase())) {
    throw new ValidationError(
      `${where}, a ${declared.toLowerCase()} column: TypeORM converts its values on the way in or out (JSON, booleans), so the value read back is not the value written; bind a string or integer column`,
    );
  }
  if (REWRITTEN_TYPES.has(type)) {
    throw new ValidationError(
      `${where}, a ${type} column: the database stores such values in a form of its own (scale, exponent, rounding, time zone), which a value bound as written would not match once read back; bind a string or integer column`,
    );
  }
  const name = `${metadata.name}.${column.propertyPath}`;
  if (INTEGER_TYPES.has(type)) {
    const exact = !SQLITE_FAMILY.has(options.type);
    return (value) => integerForm(name, value, exact);
  }
  // PostgreSQL's uuid type, and MariaDB's from 10.7 (TypeORM's "uuid" is a varchar elsewhere),
  // take any case and give back lowercase.
  if (type === "uuid") return uuidForm;
  const text = textFormOf(driver, options.type, column, name, type, where);
  const literal = numberLiteralCheck(options.type, name, type);
  if (literal === undefined) return text;
  return (value) => {
    if (typeof value === "number") literal(value);
    return text === undefined ? String(value) : text(value);
  };
}

/** How a string column (or, where SQLite or PostgreSQL take one, an enum) stores text. */
function textFormOf(
  driver: EntityMetadata["connection"]["driver"],
  driverType: string,
  column: ColumnMetadata,
  name: string,
  type: string,
  where: string,
): ContextForm | undefined {
  const checked = LENGTH_CHECKED.has(driverType);
  const length = checked ? lengthOf(driver, column) : undefined;
  if (FIXED_LENGTH_TYPES.has(type)) {
    // PostgreSQL pads char(n) with spaces and gives the padding back; MariaDB and MySQL pad it
    // and strip trailing spaces on the way out; SQLite keeps the text as written. Both cut
    // trailing spaces beyond n and refuse other characters there.
    const n = length ?? 1;
    if (driverType === "postgres" || driverType === "cockroachdb") {
      return (value) => padded(fitted(name, type, n, String(value)), n);
    }
    if (MYSQL_FAMILY.has(driverType)) {
      return (value) => fitted(name, type, n, String(value)).replace(/ +$/u, "");
    }
    return undefined;
  }
  if (TEXT_TYPES.has(type)) {
    // varchar(n): PostgreSQL and MariaDB/MySQL cut trailing spaces beyond n, and refuse (or, out
    // of strict mode, cut) other characters there.
    if (length === undefined) return undefined;
    return (value) => fitted(name, type, length, String(value));
  }
  // PostgreSQL's enums take a label exactly as declared, as does the CHECK constraint SQLite's
  // enum columns get; MariaDB's and MySQL's match labels without case and store their own.
  if (type === "enum" && !MYSQL_FAMILY.has(driverType)) return undefined;
  throw new ValidationError(
    `${where}, a ${type} column: only columns known to store exactly the text they are given can bind values (varchar, char, text, integer types, uuid${MYSQL_FAMILY.has(driverType) ? "" : ", enum"}); the database may store a ${type} value in a form of its own, which a value bound as written would not match once read back`,
  );
}

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

/**
 * What refuses a number given to a text column of `driverType` that the database would store as
 * other text than `String(value)`; undefined where it stores that text (PostgreSQL's driver sends
 * it as a text parameter). A number reaches SQLite and MySQL/MariaDB as an SQL literal (TypeORM
 * writes it into SQLite's statement; mysql2 escapes it on the client), which the database reads
 * as a number and prints its own way: SQLite stores a REAL with up to 17 digits and an exponent of
 * two digits (1e21 as "1.0e+21", 5e-7 as "5.0e-07", 22960677215.10496 as "22960677215.104961"),
 * and an integer beyond its 64 bits as a REAL; MySQL/MariaDB read an exponent as a DOUBLE, printed
 * as "1e21" or "0.0000005". Strings are sent as they are, so a string is always exact.
 */
function numberLiteralCheck(
  driverType: string,
  name: string,
  type: string,
): ((value: number) => void) | undefined {
  const refuse = (database: string, exact: string): never => {
    throw new ValidationError(
      `${name} is a ${type} column bound into encrypted values, and ${database} stores a number given to it in a text form of its own, which the value bound would not match once read back: give it as a string (a number is stored as written only ${exact})`,
    );
  };
  if (SQLITE_FAMILY.has(driverType)) {
    return (value) => {
      const text = String(value);
      if (!/^-?[0-9]+$/u.test(text)) refuse("SQLite", "as an integer of SQLite's 64-bit range");
      const integer = BigInt(text);
      if (integer > INT64_MAX || integer < INT64_MIN) {
        refuse("SQLite", "as an integer of SQLite's 64-bit range");
      }
    };
  }
  if (MYSQL_FAMILY.has(driverType)) {
    return (value) => {
      if (!Number.isFinite(value) || /e/iu.test(String(value))) {
        refuse("MySQL/MariaDB", "when JavaScript writes it without an exponent");
      }
    };
  }
  return undefined;
}

/** The declared length of a string column, or the driver's default (varchar(255) on MySQL). */
function lengthOf(driver: EntityMetadata["connection"]["driver"], column: ColumnMetadata) {
  const lengthFor = (driver as { getColumnLength?: (c: ColumnMetadata) => string }).getColumnLength;
  const text = typeof lengthFor === "function" ? lengthFor.call(driver, column) : column.length;
  const n = Number(text);
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/**
 * `text` as a string column of `length` characters stores it: trailing spaces beyond the length
 * cut, as PostgreSQL and MariaDB/MySQL cut them.
 * @throws ValidationException when other characters lie beyond the length, which the database
 *   refuses or (MariaDB/MySQL outside strict mode) cuts.
 */
function fitted(name: string, type: string, length: number, text: string): string {
  // UTF-16 units are never fewer than characters: most values need no count.
  if (text.length <= length) return text;
  const characters = [...text];
  if (characters.length <= length) return text;
  if (characters.slice(length).every((c) => c === " ")) return characters.slice(0, length).join("");
  throw new ValidationError(
    `${name} is a ${type}(${length}) column bound into encrypted values: give it at most ${length} characters, or the database refuses or cuts the value (and the values bound to it would not decrypt)`,
  );
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/**
 * An integer as the database gives it back: leading zeros and `-0` dropped.
 * @param exact false where the driver reads integers back as numbers (SQLite's)
 * @throws ValidationException for anything but an integer, and, where not `exact`, for one
 *   beyond ±(2^53 − 1), which comes back rounded: a 64-bit id bound as written would never be
 *   the one a load binds.
 */
function integerForm(name: string, value: string | number | bigint, exact: boolean): string {
  let integer: bigint | undefined;
  if (typeof value === "bigint") integer = value;
  else {
    const text = String(value);
    // A number's text is what the driver sends; 1e21 or 1.5 would be stored as another integer.
    if ((typeof value === "string" || Number.isInteger(value)) && /^-?[0-9]+$/u.test(text)) {
      integer = BigInt(text);
    }
  }
  if (integer === undefined) {
    throw new ValidationError(
      `${name} is an integer column bound into encrypted values: give it an integer (a number, a bigint or a string of decimal digits), which is what the database gives back`,
    );
  }
  if (!exact && (integer > MAX_SAFE || integer < -MAX_SAFE)) {
    throw new ValidationError(
      `${name} is an integer column bound into encrypted values, and SQLite drivers read integers beyond ±${Number.MAX_SAFE_INTEGER} back as rounded numbers: the value given would not be the one a load binds; keep such ids in a text column`,
    );
  }
  return integer.toString();
}

/** A UUID as PostgreSQL and MariaDB give it back: lowercase, 8-4-4-4-12 (other text as is). */
function uuidForm(value: string | number | bigint): string {
  const text = String(value);
  const hex = text.replace(/^\{(.*)\}$/su, "$1").replaceAll("-", "");
  if (!/^[0-9a-f]{32}$/iu.test(hex)) return text;
  const h = hex.toLowerCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** PostgreSQL's char(n): trailing spaces are not significant, and it gives back n characters. */
function padded(text: string, length: number): string {
  const trimmed = text.replace(/ +$/u, "");
  const characters = [...trimmed].length;
  return characters >= length ? trimmed : trimmed + " ".repeat(length - characters);
}
