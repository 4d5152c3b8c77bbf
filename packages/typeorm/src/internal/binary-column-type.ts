import { ValidationError } from "@kms/core";
import { type ColumnType, EntityMetadata } from "typeorm";

// TypeORM has no binary column type that every driver takes: PostgreSQL refuses "blob", SQLite
// and MariaDB/MySQL refuse "bytea", and `Buffer` is mapped by the MySQL driver alone. A column's
// type is fixed when a DataSource builds its metadata, which no decorator sees, and TypeORM has
// no hook there. `EntityMetadata.createPropertiesMap` runs at that point, once per entity, after
// its columns exist and before TypeORM validates their types against the driver: a bytes column
// declared without a `columnType` takes the driver's binary type there.

// The set of transformers lives on TypeORM's EntityMetadata, beside the wrapper, not in this
// module: when two copies of @kms/typeorm run against one TypeORM (two versions installed, dev
// hot reload, a test runner's module isolation), only the first installs the wrapper, and the
// columns of every later copy must land in the set that wrapper reads.
const TRANSFORMERS = Symbol.for("@kms/typeorm.binaryColumnTransformers");

/** Binary column types, in order of preference. */
const BINARY_TYPES: readonly ColumnType[] = ["blob", "bytea"];

interface PropertiesMapFactory {
  createPropertiesMap(this: EntityMetadata): unknown;
}

/**
 * Gives the column of `transformer` the binary type of each DataSource's driver.
 * @throws ValidationException when this TypeORM lacks the method the type is set in.
 */
export function typeBinaryColumnPerDriver(transformer: object): void {
  binaryColumnTransformers().add(transformer);
}

/** The value transformers of the bytes columns whose type follows the driver. */
function binaryColumnTransformers(): WeakSet<object> {
  const slot = EntityMetadata as unknown as { [TRANSFORMERS]?: WeakSet<object> };
  const installed = slot[TRANSFORMERS];
  if (installed !== undefined) return installed;
  const metadata = EntityMetadata.prototype as unknown as PropertiesMapFactory;
  const createPropertiesMap = metadata.createPropertiesMap;
  if (typeof createPropertiesMap !== "function") {
    throw new ValidationError(
      `@kms/typeorm cannot choose the binary column type of bytes storage on this TypeORM version: createPropertiesMap() is missing (supported: typeorm ^1.1.1); give the column a columnType`,
    );
  }
  const perDriver = new WeakSet<object>();
  slot[TRANSFORMERS] = perDriver;
  metadata.createPropertiesMap = function typedCreatePropertiesMap(this: EntityMetadata) {
    const supported = this.dataSource.driver.supportedDataTypes;
    const type = BINARY_TYPES.find((t) => supported.includes(t));
    if (type !== undefined) {
      for (const column of this.columns) {
        const transformer = column.transformer;
        if (transformer !== undefined && perDriver.has(transformer)) column.type = type;
      }
    }
    return createPropertiesMap.call(this);
  };
  return perDriver;
}
