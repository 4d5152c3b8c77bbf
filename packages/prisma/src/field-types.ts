import type { FieldValueType, JsonValue } from "@kms/core";
import type { Decimal, Types } from "@prisma/client/runtime/client";
import type { TypedModelOperations } from "./field-input-types.ts";
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
  /** Prisma's Decimal (`Prisma.Decimal`, decimal.js), as for a Decimal column. */
  decimal: Decimal;
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

/** The field value type of a spec, without the `?` of an optional column. */
export type SpecValueType<Spec> = Spec extends `${infer T extends FieldValueType}?`
  ? T
  : Spec & FieldValueType;

/** The JS type of a field declared with `spec` (`null` included for an optional column). */
export type FieldResultType<Spec> =
  | FieldResultTypes[SpecValueType<Spec>]
  | (Spec extends `${FieldValueType}?` ? null : never);

declare const fieldTypes: unique symbol;

/**
 * A schema descriptor that also carries its field type map at the type level (the map has no
 * runtime value). Passed as `schema`, it types the extended client without a type argument.
 */
export type TypedSchemaDescriptor<Map> = SchemaDescriptor & {
  readonly [fieldTypes]?: Map;
};

/** The result component alone: one type-only result field per typed column. */
type FieldResultComponent<Map extends FieldTypeMap> = {
  [Model in keyof Map as Uncapitalize<Model & string>]: {
    [Field in keyof Map[Model]]: () => { compute: () => FieldResultType<Map[Model][Field]> };
  };
};

/**
 * The extension arguments Prisma's `$extends` reads the extended client's type from. `result`:
 * one result field per typed column, overriding the generated scalar type wherever Prisma
 * computes a result (find*, create, update, upsert, delete, createManyAndReturn, nested
 * include/select, the fluent API, `Prisma.Result`). `model`: for each model with a typed column,
 * the operations taking `data` or `where`, those retyped to the declared JS types (see
 * field-input-types.ts); `TypeMap` is the type map of the extended client, `never` when the
 * client is unknown (then Prisma's operations stay). Type-only: the extension registers neither
 * a result nor a model component.
 */
export interface FieldEncryptionExtArgs<Map extends FieldTypeMap, TypeMap = never> {
  result: FieldResultComponent<Map>;
  model: [TypeMap] extends [never] ? Record<never, never> : TypedModelOperations<Map, TypeMap>;
  query: Record<never, never>;
  client: Record<never, never>;
}

/**
 * The type map of the client the extension returns, for the typed operations: Prisma's own
 * `MergeExtArgs` of the client's extension arguments with the result component (the
 * extension's arguments without the typed operations, which are read from this type map).
 */
type ExtendedTypeMap<Client, Map extends FieldTypeMap> = Client extends {
  $extends: Types.Extensions.ExtendsHook<
    "extends",
    infer Cb extends Types.Extensions.TypeMapCbDef,
    infer ExtArgs extends Record<string, unknown>,
    infer TypeMap extends Types.Extensions.TypeMapDef
  >;
}
  ? Types.Utils.Call<
      Cb,
      {
        extArgs: Types.Extensions.MergeExtArgs<TypeMap, ExtArgs, FieldEncryptionExtArgs<Map>>;
      }
    >
  : never;

/**
 * Any client with the same `$extends` hook (so the same type map) as `Client`: lets a named
 * client type (`fieldEncryption<Map, typeof base>`) accept the client Prisma passes.
 */
type SameTypeMap<Client> = Client extends { $extends: infer Hook } ? { $extends: Hook } : never;

/**
 * What `fieldEncryption` returns: a Prisma extension (for `$extends`) whose type names the
 * declared JS types of the encrypted fields. `Client` is the client it is applied to: inferred
 * from `base.$extends(fieldEncryption(…))` (the call's expected type), it lets the typed
 * operations be declared with that client's type map.
 */
export type FieldEncryptionExtension<Map extends FieldTypeMap, Client = unknown> = (
  client: Client | SameTypeMap<Client>,
) => {
  $extends: { extArgs: FieldEncryptionExtArgs<Map, ExtendedTypeMap<Client, Map>> };
};
