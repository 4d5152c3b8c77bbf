export { aliasArn, DEFAULT_IDENTITY, type KmsIdentity, keyArn } from "./arn.ts";
export {
  type AuditHead,
  type AuditLogProblem,
  type AuditLogVerification,
  assertExtendsAuditHead,
  canonicalize as canonicalizeAuditEvent,
  chainAuditEvents,
  hashEvent as hashAuditEvent,
  type VerifyOptions as VerifyAuditLogOptions,
  verifyAuditLog,
} from "./audit/audit-chain.ts";
export type {
  AuditEvent,
  AuditJsonObject,
  AuditJsonValue,
  AuditReadOptions,
  AuditResource,
  AuditSink,
  AuditUserIdentity,
  UnchainedAuditEvent,
} from "./audit/audit-sink.ts";
export { GENESIS_HASH, parseStoredAuditEvent } from "./audit/audit-sink.ts";
export type {
  AuditTrailVerification,
  AuditTrailVerifyOptions,
} from "./audit/audit-trail-verification.ts";
export type { KeyLastUsage, KeyLastUsageOperation } from "./audit/auditor.ts";
export { JsonlAuditSink, type JsonlAuditSinkOptions } from "./audit/jsonl-audit-sink.ts";
export { MemoryAuditSink, type MemoryAuditSinkOptions } from "./audit/memory-audit-sink.ts";
export {
  type CachedDataKey,
  DataKeyCache,
  type DataKeyCacheKeyParts,
  type DataKeyCacheOptions,
  type DataKeyUsage,
  dataKeyCacheKey,
} from "./caching/data-key-cache.ts";
export { type Clock, DAY_MS, systemClock } from "./clock.ts";
export {
  BLOB_FORMAT_VERSION,
  BLOB_OVERHEAD,
} from "./envelope/ciphertext-blob.ts";
export {
  decodeEncryptionContext,
  encodeEncryptionContext,
  MAX_ENCRYPTION_CONTEXT_BYTES,
} from "./envelope/encryption-context.ts";
export {
  AccessDeniedError,
  AlreadyExistsError,
  ConflictError,
  DisabledError,
  DryRunOperationError,
  IncorrectKeyError,
  InvalidAliasNameError,
  InvalidArnError,
  InvalidCiphertextError,
  InvalidGrantIdError,
  InvalidGrantTokenError,
  InvalidKeyUsageError,
  InvalidMacError,
  InvalidMarkerError,
  InvalidSignatureError,
  InvalidStateError,
  isKmsError,
  KeyStoreConflictError,
  KmsError,
  type KmsErrorCode,
  KmsInternalError,
  LimitExceededError,
  MalformedPolicyDocumentError,
  NotFoundError,
  RootKeyError,
  TagError,
  UnsupportedOperationError,
  ValidationError,
} from "./errors.ts";
export type { FieldBinding } from "./field/binding.ts";
export { currentEncryptionContext, runWithEncryptionContext } from "./field/context-scope.ts";
export {
  assertDataKeyId,
  type DataKeyRecord,
  type DataKeyStore,
  MemoryDataKeyStore,
} from "./field/data-key-store.ts";
export {
  type BlindIndexNormalization,
  type BlindIndexSpec,
  type DataKeyCacheLimits,
  type DecryptItem,
  type EncryptCallOptions,
  FieldEncryptionEngine,
  type FieldEncryptionEngineOptions,
  type FieldSpec,
  type StoredValueInfo,
} from "./field/field-encryption-engine.ts";
export {
  DETERMINISTIC_OVERHEAD,
  type FieldCiphertextMode,
  isFieldCiphertextText,
  mayCollateAsFieldCiphertextText,
  RANDOMIZED_OVERHEAD,
  TEXT_PREFIX as FIELD_TEXT_PREFIX,
} from "./field/field-format.ts";
export {
  type ReencryptCheckpoint,
  type ReencryptOptions,
  type ReencryptRow,
  type ReencryptSource,
  reencryptFields,
  type StoredFieldValue,
} from "./field/reencrypt-job.ts";
export {
  FIELD_VALUE_TYPES,
  type FieldValue,
  type FieldValueType,
  type JsonValue,
} from "./field/value-codec.ts";
export {
  type PassphraseOptions,
  ROOT_KEY_LENGTH,
  type RootKeyFileOptions,
  RootKeySource,
} from "./hsm/root-key.ts";
export {
  type RootKeyRotationProgress,
  type RootKeyRotationResult,
  type RotateRootKeyOptions,
  rotateRootKey,
} from "./hsm/root-key-rotation.ts";
export {
  ROOT_KEY_SETTINGS,
  rootKeyHistory,
  type SoftwareHsmOptions,
  wrappingRootKeyId,
} from "./hsm/software-hsm.ts";
export { findRepeatedJsonName } from "./internal/json-names.ts";
export {
  DATA_KEY_PAIR_SPECS,
  KEY_SPEC_TABLE,
  type KeyFamily,
  type KeySpecInfo,
  maxOaepPlaintextBytes,
} from "./key-specs.ts";
export {
  KEY_STATE_TABLE,
  type KeyStateOperation,
  type KeyStateOutcome,
} from "./key-state-table.ts";
export type {
  DecryptDataKeyRequest,
  EncryptDataKeyRequest,
  EncryptDataKeyResult,
  EncryptedDataKey,
  Keyring,
} from "./keyring/keyring.ts";
export { KMS_PROVIDER_ID, KmsKeyring, type KmsKeyringOptions } from "./keyring/kms-keyring.ts";
export { MultiKeyring, type MultiKeyringOptions } from "./keyring/multi-keyring.ts";
export {
  RawAesKeyring,
  type RawAesKeyringOptions,
  type RawKeyName,
} from "./keyring/raw-aes-keyring.ts";
export { RawRsaKeyring, type RawRsaKeyringOptions } from "./keyring/raw-rsa-keyring.ts";
export type {
  KeyStore,
  ListOptions,
  StoredAlias,
  StoredGrant,
  StoredKey,
  StoredKeyVersion,
  StoredRotationSettings,
} from "./keystore/key-store.ts";
export { MemoryKeyStore } from "./keystore/memory-key-store.ts";
export {
  exportKeyStore,
  importKeyStore,
  type KeySnapshot,
  type KeyStoreSnapshot,
  type KeyVersionSnapshot,
  SNAPSHOT_FORMAT,
} from "./keystore/snapshot.ts";
export { parseStoredGrants, parseStoredTags } from "./keystore/stored-json.ts";
export {
  type AuditTrail,
  createKms,
  type GetKeyLastUsageResponse,
  Kms,
  type KmsOptions,
} from "./kms.ts";
export type { KmsLike } from "./kms-like.ts";
export type { DecryptPolicy } from "./message/decrypt-policy.ts";
export {
  type DecryptFileOptions,
  decryptFile,
  type EncryptFileOptions,
  encryptFile,
  type FileProgress,
  type FileResult,
  partialOutputsOf,
} from "./message/file.ts";
export {
  DEFAULT_FRAME_LENGTH,
  DEFAULT_MESSAGE_FRAME_LENGTH,
  MAX_FRAME_LENGTH,
  type MessageSuite,
  RESERVED_CONTEXT_PREFIX,
} from "./message/format.ts";
export { type DecryptedMessage, decryptMessage, encryptMessage } from "./message/message.ts";
export { createDecryptStream, createEncryptStream } from "./message/node-stream.ts";
export type {
  DecryptMessageOptions,
  DecryptStreamOptions,
  EncryptMessageOptions,
  EncryptStreamOptions,
  MessageInfo,
} from "./message/options.ts";
export { decryptTransformStream, encryptTransformStream } from "./message/web-stream.ts";
export { MAX_SIGN_MESSAGE_BYTES, MAX_SIGNATURE_BYTES } from "./operations/asymmetric.ts";
export {
  type CreateGrantRequest,
  type CreateGrantResponse,
  GRANT_OPERATIONS,
  type GrantConstraints,
  type GrantListEntry,
  type GrantOperation,
  type ListGrantsRequest,
  type ListGrantsResponse,
  type ListRetirableGrantsRequest,
  MAX_GRANT_TOKENS,
  type RetireGrantRequest,
  type RevokeGrantRequest,
} from "./operations/grants.ts";
export { MAX_MAC_MESSAGE_BYTES } from "./operations/mac.ts";
export {
  type GetKeyPolicyRequest,
  type GetKeyPolicyResponse,
  KEY_POLICY_NAME,
  type ListKeyPoliciesRequest,
  type ListKeyPoliciesResponse,
  type PutKeyPolicyRequest,
} from "./operations/policies.ts";
export { MAX_ON_DEMAND_ROTATIONS } from "./operations/rotation.ts";
export { MAX_PLAINTEXT_BYTES } from "./operations/symmetric.ts";
export { MAX_TAGS_PER_KEY } from "./operations/tags.ts";
export type { AuditOptions, ExplainResult } from "./policy/call-guard.ts";
export {
  defaultKeyPolicy,
  MAX_KEY_POLICY_BYTES,
  type PolicyDocument,
  parsePolicy,
} from "./policy/policy-document.ts";
export { currentRequestId, runWithRequestId } from "./request-id-scope.ts";
export type {
  AliasListEntry,
  AliasRequest,
  CallOptions,
  CreateKeyRequest,
  CreateKeyResponse,
  DataKeyPairSpec,
  DataKeySpec,
  DecryptRequest,
  DecryptResponse,
  DeriveSharedSecretRequest,
  DeriveSharedSecretResponse,
  DescribeKeyRequest,
  DescribeKeyResponse,
  EnableKeyRotationRequest,
  EncryptionAlgorithm,
  EncryptionContext,
  EncryptRequest,
  EncryptResponse,
  GenerateDataKeyPairRequest,
  GenerateDataKeyPairResponse,
  GenerateDataKeyPairWithoutPlaintextResponse,
  GenerateDataKeyRequest,
  GenerateDataKeyResponse,
  GenerateDataKeyWithoutPlaintextResponse,
  GenerateMacRequest,
  GenerateMacResponse,
  GenerateRandomRequest,
  GenerateRandomResponse,
  GetKeyRotationStatusResponse,
  GetPublicKeyRequest,
  GetPublicKeyResponse,
  KeyAgreementAlgorithm,
  KeyIdRequest,
  KeyListEntry,
  KeyMetadata,
  KeyRotation,
  KeySpec,
  KeyState,
  KeyUsage,
  ListAliasesRequest,
  ListAliasesResponse,
  ListKeyRotationsRequest,
  ListKeyRotationsResponse,
  ListKeysResponse,
  ListResourceTagsRequest,
  ListResourceTagsResponse,
  MacAlgorithm,
  MaintenanceReport,
  MessageType,
  OriginType,
  Page,
  PageRequest,
  ReEncryptRequest,
  ReEncryptResponse,
  RotateKeyOnDemandResponse,
  RotationType,
  ScheduleKeyDeletionRequest,
  ScheduleKeyDeletionResponse,
  SigningAlgorithm,
  SignRequest,
  SignResponse,
  Tag,
  TagResourceRequest,
  UntagResourceRequest,
  UpdateKeyDescriptionRequest,
  VerifyMacRequest,
  VerifyMacResponse,
  VerifyRequest,
  VerifyResponse,
} from "./types.ts";
