import {
  type BlindIndexNormalization,
  FIELD_VALUE_TYPES,
  type FieldValueType,
  ValidationError,
} from "@kms/core";
import { Column, type ColumnType, EntityMetadata, type ValueTransformer } from "typeorm";
import { typeBinaryColumnPerDriver } from "./internal/binary-column-type.ts";
import { installQueryGuards } from "./internal/query-guards.ts";
import { Sealed } from "./internal/sealed.ts";

/** Where a column's encryption context comes from (the same vocabulary as @kms/prisma). */
export interface EncryptedColumnContext {
  /** Context keys read from the entity's own properties (same name), e.g. `["tenantId"]`. */
  readonly fromRow?: readonly string[];
  /** Context keys read from the ambient scope (`runWithEncryptionContext`). */
  readonly fromScope?: readonly string[];
  /**
   * Context keys read from the entity like `fromRow`, but bound into each value only, not into
   * its data key: the data key (and the KMS encryption context it is wrapped under) stays per
   * `fromRow`/`fromScope` context, e.g. one per tenant, while a value copied to another row still
   * fails to decrypt. For an immutable id set before the insert, such as a client-chosen UUID.
   */
  readonly rowIdentity?: readonly string[];
}

export interface BlindIndexOptions {
  /** Property (and column) holding the index; default `<property>Index`. Declared for you. */
  readonly column?: string;
  /** Normalizations applied before hashing, in order (e.g. `["trim", "lowercase"]`). */
  readonly normalize?: readonly BlindIndexNormalization[];
  /** Bytes of HMAC-SHA256 kept, 4–32 (default 16). */
  readonly bytes?: number;
  /** Put a unique constraint on the index column. */
  readonly unique?: boolean;
}

export interface EncryptedColumnOptions {
  /** JS type of the value; default "string" (text storage) or "bytes" (bytes storage). */
  readonly type?: FieldValueType;
  /**
   * "text" (default): `kms1:` + base64url in a text/varchar column, the same form @kms/prisma
   * writes to String columns. "bytes": raw ciphertext in a binary column.
   */
  readonly storage?: "text" | "bytes";
  /** AES-SIV under a per-(column, context) key: equality lookups and unique constraints work. */
  readonly deterministic?: boolean;
  /** A keyed hash in a separate column, for equality lookups on a randomized column. */
  readonly blindIndex?: BlindIndexOptions;
  readonly context?: EncryptedColumnContext;
  readonly nullable?: boolean;
  /** Unique constraint on the ciphertext column (needs `deterministic`). */
  readonly unique?: boolean;
  /** Database column name (default: TypeORM's naming strategy). */
  readonly name?: string;
  /** varchar length of deterministic or unique text columns (default 512). */
  readonly length?: number;
  /**
   * Database type override. Defaults: "text" (randomized text), varchar(`length`)
   * (deterministic or unique text), and for bytes the driver's binary type, chosen when the
   * DataSource builds its metadata: "blob" on SQLite and MariaDB/MySQL, "bytea" on PostgreSQL.
   */
  readonly columnType?: ColumnType;
}

/** The normalized description of one encrypted property. */
export interface EncryptedColumnSpec {
  readonly property: string;
  readonly mode: "randomized" | "deterministic";
  readonly type: FieldValueType;
  readonly storage: "text" | "bytes";
  readonly blindIndex:
    | {
        readonly column: string;
        readonly bytes: number;
        readonly normalize: readonly BlindIndexNormalization[];
        /**
         * The property's `type`, which the engine's `blindIndex` reads: each form of a value (a
         * decimal as `"1.5"` or `1.5`) gives one index (FORMAT §6.5).
         */
        readonly type: FieldValueType;
      }
    | undefined;
  readonly context: {
    readonly fromRow: readonly string[];
    readonly fromScope: readonly string[];
    readonly rowIdentity: readonly string[];
  };
}

// Brands, not `instanceof`: the query guards are installed once per TypeORM, by the first copy of
// @kms/typeorm loaded against it (two versions installed, dev hot reload, a test runner's module
// isolation), and must recognise the stand-ins and transformers of every copy. `Symbol.for` gives
// every copy the same keys.
const UNSEALED_VALUE: unique symbol = Symbol.for("@kms/typeorm.unsealedValue");
const ENCRYPTED_COLUMN: unique symbol = Symbol.for("@kms/typeorm.encryptedColumnTransformer");
const BLIND_INDEX: unique symbol = Symbol.for("@kms/typeorm.blindIndexTransformer");

function branded(value: unknown, brand: symbol): boolean {
  return (
    typeof value === "object" &&
    value !== null &&
    (value as Record<symbol, unknown>)[brand] === true
  );
}

/**
 * A plaintext value that reached an encrypted column outside the subscriber (a plain value in
 * a find, a listener-less query builder). It carries no way to print the value; the subscriber's
 * beforeQuery hook refuses any query that would send one to the database. Turning it into a
 * string or a number throws too: TypeORM pastes some operands into the SQL text itself (a
 * `Raw("…")` string is one), and "[object Object]" there would reach the database as a bad
 * statement instead of a clear refusal.
 */
export class UnsealedValue {
  readonly model: string;
  readonly property: string;
  /** Set when `property` is the blind index column of this encrypted property. */
  readonly indexOf: string | undefined;

  constructor(model: string, property: string, indexOf?: string) {
    this.model = model;
    this.property = property;
    this.indexOf = indexOf;
  }

  get [UNSEALED_VALUE](): true {
    return true;
  }

  toJSON(): never {
    throw unsealedError(this);
  }

  toString(): never {
    throw unsealedError(this);
  }

  valueOf(): never {
    throw unsealedError(this);
  }

  [Symbol.toPrimitive](): never {
    throw unsealedError(this);
  }
}

/** Whether `value` is an UnsealedValue of any loaded copy of @kms/typeorm. */
export function isUnsealedValue(value: unknown): value is UnsealedValue {
  return branded(value, UNSEALED_VALUE);
}

export function unsealedError(value: UnsealedValue): ValidationError {
  if (value.indexOf !== undefined) {
    return new ValidationError(
      `${value.model}.${value.property} is the blind index of ${value.model}.${value.indexOf}: a value given for it would reach the query as plaintext; look ${value.indexOf} up with encryptedWhere() (or compare encryptedParameter() in a QueryBuilder condition)`,
    );
  }
  return new ValidationError(
    `${value.model}.${value.property} is encrypted: a plaintext value reached a query; write through repository/entity-manager methods with listeners on, and look values up with encryptedWhere()`,
  );
}

// The specs live on TypeORM's EntityMetadata, beside the query guards, not in this module: the
// guards of the first copy loaded must find the columns that every later copy declares. Every
// copy reads the specs the others wrote: a field of EncryptedColumnSpec keeps its meaning.
const SPECS = Symbol.for("@kms/typeorm.encryptedColumnSpecs");

/** Encrypted properties by declaring class, shared by every copy of @kms/typeorm. */
function registry(): WeakMap<object, Map<string, EncryptedColumnSpec>> {
  const slot = EntityMetadata as unknown as {
    [SPECS]?: WeakMap<object, Map<string, EncryptedColumnSpec>>;
  };
  slot[SPECS] ??= new WeakMap();
  return slot[SPECS];
}

const BASE64URL = /^[A-Za-z0-9_-]+$/;
const NORMALIZATIONS: readonly string[] = ["lowercase", "trim", "nfkc"];

function fail(where: string, rule: string): never {
  throw new ValidationError(`${where}: ${rule}`);
}

/**
 * The value transformer of an encrypted column. Its brand tells the query guards that an
 * operand is about to meet an encrypted column, and which one.
 */
export class EncryptedColumnTransformer implements ValueTransformer {
  readonly model: string;
  readonly property: string;

  constructor(model: string, property: string) {
    this.model = model;
    this.property = property;
  }

  get [ENCRYPTED_COLUMN](): true {
    return true;
  }

  to(value: unknown): unknown {
    if (value === null || value === undefined) return value;
    if (value instanceof Sealed) return value.stored;
    return new UnsealedValue(this.model, this.property);
  }

  from(value: unknown): unknown {
    return value;
  }
}

/** Whether `transformer` is the EncryptedColumnTransformer of any loaded copy of @kms/typeorm. */
export function isEncryptedColumnTransformer(
  transformer: unknown,
): transformer is Pick<EncryptedColumnTransformer, "model" | "property"> {
  return branded(transformer, ENCRYPTED_COLUMN);
}

/**
 * The value transformer of a blind index column. The column holds an HMAC, but it is an
 * ordinary string column to TypeORM: without this, a plain value or an operator written against
 * it (`findBy({ phoneIndex: "+1 555…" })`, `Raw`, `Like`) would go to the database and its
 * logs as the plaintext it was meant to hide. Only indexes computed by the subscriber or by
 * `encryptedWhere` (sealed) pass; the query guards refuse anything else before the query runs.
 */
export class BlindIndexTransformer implements ValueTransformer {
  readonly model: string;
  /** The index column's property. */
  readonly property: string;
  /** The encrypted property it indexes. */
  readonly indexOf: string;

  /** The last index string given to `to()` and the stand-in returned for it. */
  #last: { readonly index: string; readonly standIn: UnsealedValue } | undefined;
  readonly #indexLength: number;

  constructor(model: string, property: string, indexOf: string, bytes = 16) {
    this.model = model;
    this.property = property;
    this.indexOf = indexOf;
    this.#indexLength = Math.ceil((bytes * 4) / 3);
  }

  get [BLIND_INDEX](): true {
    return true;
  }

  to(value: unknown): unknown {
    if (value === null || value === undefined) return value;
    if (value instanceof Sealed) return value.stored;
    // TypeORM's change detection compares to(stored index) with to(index on the entity), one
    // call after the other: equal strings must give the same stand-in, or an index loaded
    // without the property it indexes would always look changed and save() would try to write
    // it. Only strings shaped like an index are remembered, never a plaintext given by mistake.
    if (typeof value === "string" && this.#last?.index === value) return this.#last.standIn;
    const standIn = new UnsealedValue(this.model, this.property, this.indexOf);
    if (typeof value === "string" && value.length === this.#indexLength && BASE64URL.test(value)) {
      this.#last = { index: value, standIn };
    }
    return standIn;
  }

  from(value: unknown): unknown {
    return value;
  }
}

/** Whether `transformer` is the BlindIndexTransformer of any loaded copy of @kms/typeorm. */
export function isBlindIndexTransformer(
  transformer: unknown,
): transformer is Pick<BlindIndexTransformer, "model" | "property" | "indexOf"> {
  return branded(transformer, BLIND_INDEX);
}

function stringList(where: string, name: string, value: unknown): readonly string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string" && v.length > 0)) {
    fail(where, `"${name}" must be an array of property names`);
  }
  return Object.freeze([...value]);
}

/**
 * Declares an encrypted column: the database column (text, varchar, blob or bytea), its blind
 * index column when asked for, and the field specification the subscriber from
 * `fieldEncryption()` uses to encrypt on insert/update and decrypt on load.
 * @throws ValidationException when an option is invalid (checked when the class is defined), or
 *   when this TypeORM lacks a method the query guards (or the bytes column type) wrap.
 */
export function EncryptedColumn(options: EncryptedColumnOptions = {}): PropertyDecorator {
  return (target: object, propertyKey: string | symbol): void => {
    const owner = (target as { constructor: { name: string } }).constructor;
    const property = String(propertyKey);
    const where = `${owner.name}.${property}`;
    if (typeof propertyKey !== "string") fail(where, "encrypted properties must have string names");
    const storage = options.storage ?? "text";
    if (storage !== "text" && storage !== "bytes") fail(where, `"storage" must be text or bytes`);
    const type = options.type ?? (storage === "bytes" ? "bytes" : "string");
    if (!FIELD_VALUE_TYPES.includes(type)) {
      fail(where, `"type" must be one of ${FIELD_VALUE_TYPES.join(", ")}`);
    }
    const mode = options.deterministic === true ? "deterministic" : "randomized";
    if (options.unique === true && mode !== "deterministic") {
      fail(where, `a unique constraint needs deterministic: true (randomized values never repeat)`);
    }
    const length = options.length ?? 512;
    if (!Number.isInteger(length) || length < 64) fail(where, `"length" must be an integer ≥ 64`);
    let blindIndex: EncryptedColumnSpec["blindIndex"];
    if (options.blindIndex !== undefined) {
      const b = options.blindIndex;
      const bytes = b.bytes ?? 16;
      if (!Number.isInteger(bytes) || bytes < 4 || bytes > 32) {
        fail(where, `blind index "bytes" must be an integer 4–32`);
      }
      const normalize = stringList(where, "normalize", b.normalize);
      for (const n of normalize) {
        if (!NORMALIZATIONS.includes(n)) fail(where, `"normalize" steps are lowercase, trim, nfkc`);
      }
      const column = b.column ?? `${property}Index`;
      if (column === property) fail(where, `the blind index needs its own column`);
      blindIndex = Object.freeze({
        column,
        bytes,
        normalize: normalize as readonly BlindIndexNormalization[],
        type,
      });
      Column({
        type: String,
        length: 64,
        nullable: true,
        unique: b.unique === true,
        transformer: new BlindIndexTransformer(owner.name, column, property, bytes),
      })(target, column);
    }
    const context = Object.freeze({
      fromRow: stringList(where, "context.fromRow", options.context?.fromRow),
      fromScope: stringList(where, "context.fromScope", options.context?.fromScope),
      rowIdentity: stringList(where, "context.rowIdentity", options.context?.rowIdentity),
    });
    for (const key of context.rowIdentity) {
      // Both lists would set the same context key, and the key could not be both in the data
      // key's context and out of it.
      for (const list of ["fromRow", "fromScope"] as const) {
        if (context[list].includes(key)) {
          fail(where, `"${key}" is in both context.${list} and context.rowIdentity`);
        }
      }
    }
    const spec: EncryptedColumnSpec = Object.freeze({
      property,
      mode,
      type,
      storage,
      blindIndex,
      context,
    });
    const declared = registry();
    let specs = declared.get(owner);
    if (specs === undefined) {
      specs = new Map();
      declared.set(owner, specs);
    }
    specs.set(property, spec);
    const columnType: ColumnType =
      options.columnType ??
      (storage === "bytes"
        ? "blob"
        : mode === "deterministic" || options.unique === true
          ? String
          : "text");
    const transformer = new EncryptedColumnTransformer(owner.name, property);
    // "blob" stands in until a DataSource's driver is known (PostgreSQL has only "bytea").
    if (storage === "bytes" && options.columnType === undefined) {
      typeBinaryColumnPerDriver(transformer);
    }
    Column({
      type: columnType,
      ...(columnType === String ? { length } : {}),
      nullable: options.nullable === true,
      unique: options.unique === true,
      ...(options.name === undefined ? {} : { name: options.name }),
      transformer,
    })(target, property);
    installQueryGuards();
  };
}

/** Encrypted properties declared on `target` and its base classes. */
export function encryptedSpecsOf(target: unknown): readonly EncryptedColumnSpec[] {
  const out = new Map<string, EncryptedColumnSpec>();
  let current: unknown = target;
  const chain: object[] = [];
  while (typeof current === "function" && current !== Function.prototype) {
    chain.unshift(current);
    current = Object.getPrototypeOf(current);
  }
  const specs = registry();
  for (const cls of chain) {
    for (const [property, spec] of specs.get(cls) ?? []) out.set(property, spec);
  }
  return [...out.values()];
}
