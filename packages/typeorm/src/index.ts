export {
  type BlindIndexOptions,
  EncryptedColumn,
  type EncryptedColumnContext,
  type EncryptedColumnOptions,
  type EncryptedColumnSpec,
} from "./encrypted-column.ts";
export { encryptedParameter, encryptedParameters } from "./encrypted-parameter.ts";
export { type EncryptedWhereOptions, encryptedWhere } from "./encrypted-where.ts";
export {
  encryptionOf,
  type FieldEncryptionOptions,
  fieldEncryption,
  TypeormFieldEncryption,
} from "./field-encryption.ts";
export {
  type ReencryptEntitiesCheckpoint,
  type ReencryptEntitiesOptions,
  reencryptEntities,
} from "./reencrypt-entities.ts";
export { type DataKeyRow, dataKeyEntity, TypeormDataKeyStore } from "./typeorm-data-key-store.ts";
