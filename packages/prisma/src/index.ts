export { type FieldEncryptionOptions, fieldEncryption } from "./field-encryption.ts";
export type {
  DecimalLike,
  DelegateTypes,
  FieldInputType,
  FieldInputTypes,
  TypedArgs,
} from "./field-input-types.ts";
export type {
  FieldEncryptionExtArgs,
  FieldEncryptionExtension,
  FieldResultType,
  FieldResultTypes,
  FieldTypeMap,
  FieldTypeSpec,
  TypedSchemaDescriptor,
} from "./field-types.ts";
export { type DataKeyDelegate, PrismaDataKeyStore } from "./prisma-data-key-store.ts";
export {
  type PrismaReencryptSource,
  type PrismaReencryptSourceOptions,
  prismaReencryptSource,
  type ReencryptCursor,
  type ReencryptDelegate,
  type ReencryptRowCounter,
  type ReencryptSkippedRow,
} from "./reencrypt-source.ts";
export {
  type BlindIndexDescriptor,
  type DefineModelsOptions,
  defineModels,
  type EncryptedFieldDescriptor,
  type FieldTypesOf,
  type GeneratedPrismaNamespace,
  type ModelConfig,
  type ModelContextDescriptor,
  type ModelDescriptor,
  type NativeTypesDescriptor,
  parseSchema,
  type SchemaDescriptor,
} from "./schema-descriptor.ts";
