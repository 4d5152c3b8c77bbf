import type { FieldValueType, JsonValue } from "@kms/core";
import type { SchemaDescriptor } from "./schema-descriptor.ts";

/**
 * Compile-time typing of encrypted fields. Prisma generates `string` for a `String` column that
 * the extension reads and writes as a number, a date or JSON; a field type map says what each
 * such column really holds, and `fieldEncryption` turns it into a type-only result extension so
 * the extended client's results carry the declared JS types. Nothing here exists at runtime:
 * decryption stays in the query hook and no per-row getter is added.
 */

/** The JS type the extension returns for each declared field type. */
export interface FieldResultTypes {
  string: string;
  /** A copy of the plaintext bytes (`Uint8Array<ArrayBuffer>`, like Prisma's own Bytes). */
  bytes: ReturnType<Uint8Array["slice"]>;
  number: number;
  boolean: boolean;
  date: Date;
  bigint: bigint;
  /** Decimals are returned in their exact string form. */
  decimal: string;
  json: JsonValue;
}

/**
 * A field's declared type as written in a type map: the field value type, with a trailing `?`
 * when the column is optional (`String?`), as in schema.prisma.
 */
export type FieldTypeSpec = FieldValueType | `${FieldValueType}?`;

/**
 * Model name (as in schema.prisma) → encrypted field → declared type, e.g.
 * `{ User: { profile: "json?"; score: "number?" }; Post: { publishedAt: "date" } }`.
 * Fields left out keep Prisma's generated type.
 */
export type FieldTypeMap = {
  readonly [model: string]: { readonly [field: string]: FieldTypeSpec };
};

/** The JS type of a field declared with `spec` (`null` included for an optional column). */
export type FieldResultType<Spec> = Spec extends `${infer T extends FieldValueType}?`
  ? FieldResultTypes[T] | null
  : Spec extends FieldValueType
    ? FieldResultTypes[Spec]
    : never;

declare const fieldTypes: unique symbol;

/**
 * A schema descriptor that also carries its field type map at the type level (the map has no
 * runtime value). Passed as `schema`, it types the extended client without a type argument.
 */
export type TypedSchemaDescriptor<Map> = SchemaDescriptor & {
  readonly [fieldTypes]?: Map;
};

/**
 * The extension arguments Prisma's `$extends` reads the extended client's type from: one result
 * field per typed column, overriding the generated scalar type wherever Prisma computes a
 * result (find*, create, update, upsert, delete, createManyAndReturn, nested include/select,
 * the fluent API, `Prisma.Result`). Type-only: the extension registers no result component.
 */
export interface FieldEncryptionExtArgs<Map extends FieldTypeMap> {
  result: {
    [Model in keyof Map as Uncapitalize<Model & string>]: {
      [Field in keyof Map[Model]]: () => { compute: () => FieldResultType<Map[Model][Field]> };
    };
  };
  model: Record<never, never>;
  query: Record<never, never>;
  client: Record<never, never>;
}

/**
 * What `fieldEncryption` returns: a Prisma extension (for `$extends`) whose type names the
 * declared JS types of the encrypted fields.
 */
export type FieldEncryptionExtension<Map extends FieldTypeMap> = (client: unknown) => {
  $extends: { extArgs: FieldEncryptionExtArgs<Map> };
};
