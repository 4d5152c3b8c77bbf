import { ValidationError } from "@kms/core";
import { type ColumnType, EntityMetadata } from "typeorm";

// TypeORM has no binary column type that every driver takes: PostgreSQL refuses "blob", SQLite
// and MariaDB/MySQL refuse "bytea", and `Buffer` is mapped by the MySQL driver alone. A column's
// type is fixed when a DataSource builds its metadata, which no decorator sees, and TypeORM has
// no hook there. `EntityMetadata.createPropertiesMap` runs at that point, once per entity, after
// its columns exist and before TypeORM validates their types against the driver: a bytes column
// declared without a `columnType` takes the driver's binary type there.

const INSTALLED = Symbol.for("@kms/typeorm.binaryColumnType");

/** Binary column types, in order of preference. */
const BINARY_TYPES: readonly ColumnType[] = ["blob", "bytea"];

/** The value transformers of the bytes columns whose type follows the driver. */
const perDriver = new WeakSet<object>();

interface PropertiesMapFactory {
  createPropertiesMap(this: EntityMetadata): unknown;
}

/**
 * Gives the column of `transformer` the binary type of each DataSource's driver.
 * @throws ValidationException when this TypeORM lacks the method the type is set in.
 */
export function typeBinaryColumnPerDriver(transformer: object): void {
  installBinaryColumnType();
  perDriver.add(transformer);
}

function installBinaryColumnType(): void {
  const marker = EntityMetadata as unknown as Record<symbol, boolean>;
  if (marker[INSTALLED] === true) return;
  const metadata = EntityMetadata.prototype as unknown as PropertiesMapFactory;
  const createPropertiesMap = metadata.createPropertiesMap;
  if (typeof createPropertiesMap !== "function") {
    throw new ValidationError(
      `@kms/typeorm cannot choose the binary column type of bytes storage on this TypeORM version: createPropertiesMap() is missing (supported: typeorm ^1.1.1); give the column a columnType`,
    );
  }
  marker[INSTALLED] = true;
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
}
