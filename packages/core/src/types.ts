/**
 * Public request and response shapes. Names follow the AWS KMS API in camelCase; binary values
 * are Uint8Array; dates are Date.
 */
import type { KeyState } from "./key-state-table.ts";

export type { KeyState };

export type KeySpec =
  | "SYMMETRIC_DEFAULT"
  | "RSA_2048"
  | "RSA_3072"
  | "RSA_4096"
  | "ECC_NIST_P256"
  | "ECC_NIST_P384"
  | "ECC_NIST_P521"
  | "ECC_SECG_P256K1"
  | "ECC_NIST_EDWARDS25519"
  | "HMAC_224"
  | "HMAC_256"
  | "HMAC_384"
  | "HMAC_512"
  | "ML_DSA_44"
  | "ML_DSA_65"
  | "ML_DSA_87";

export type KeyUsage = "ENCRYPT_DECRYPT" | "SIGN_VERIFY" | "GENERATE_VERIFY_MAC" | "KEY_AGREEMENT";

export type EncryptionAlgorithm = "SYMMETRIC_DEFAULT" | "RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256";

export type SigningAlgorithm =
  | "RSASSA_PSS_SHA_256"
  | "RSASSA_PSS_SHA_384"
  | "RSASSA_PSS_SHA_512"
  | "RSASSA_PKCS1_V1_5_SHA_256"
  | "RSASSA_PKCS1_V1_5_SHA_384"
  | "RSASSA_PKCS1_V1_5_SHA_512"
  | "ECDSA_SHA_256"
  | "ECDSA_SHA_384"
  | "ECDSA_SHA_512"
  | "ED25519_SHA_512"
  | "ED25519_PH_SHA_512"
  | "ML_DSA_SHAKE_256";

export type MacAlgorithm = "HMAC_SHA_224" | "HMAC_SHA_256" | "HMAC_SHA_384" | "HMAC_SHA_512";

export type KeyAgreementAlgorithm = "ECDH";

export type DataKeySpec = "AES_128" | "AES_256";

export type OriginType = "AWS_KMS" | "EXTERNAL";

export type RotationType = "AUTOMATIC" | "ON_DEMAND";

/** Encryption context: non-secret string pairs bound into the ciphertext's authenticated data. */
export type EncryptionContext = Readonly<Record<string, string>>;

export interface Tag {
  readonly tagKey: string;
  readonly tagValue: string;
}

/** Who is calling and from where; adapters fill it from the request. */
export interface CallOptions {
  /** Principal the call runs as; defaults to the Kms's default principal. */
  readonly principal?: string;
  /** Correlates the call with the caller's own logs; generated when absent. */
  readonly requestId?: string;
  readonly sourceIp?: string;
  readonly viaService?: string;
  /**
   * The access key the caller signed the request with, when a server authenticated it that way
   * (`@kms/server` sets it): recorded as the audit event's `userIdentity.accessKeyId`, as
   * CloudTrail does. 1–128 characters. Authorization does not read it.
   */
  readonly accessKeyId?: string;
}

export interface KeyMetadata {
  readonly awsAccountId: string;
  readonly keyId: string;
  readonly arn: string;
  readonly creationDate: Date;
  readonly enabled: boolean;
  readonly description: string;
  readonly keyUsage: KeyUsage;
  readonly keyState: KeyState;
  readonly deletionDate?: Date;
  readonly origin: OriginType;
  readonly keyManager: "CUSTOMER";
  /** Deprecated in AWS in favour of keySpec; kept because the SDK still returns it. */
  readonly customerMasterKeySpec: KeySpec;
  readonly keySpec: KeySpec;
  readonly encryptionAlgorithms?: readonly EncryptionAlgorithm[];
  readonly signingAlgorithms?: readonly SigningAlgorithm[];
  readonly macAlgorithms?: readonly MacAlgorithm[];
  readonly keyAgreementAlgorithms?: readonly KeyAgreementAlgorithm[];
  readonly multiRegion: boolean;
  readonly currentKeyMaterialId?: string;
}

export interface CreateKeyRequest {
  readonly description?: string;
  readonly keyUsage?: KeyUsage;
  readonly keySpec?: KeySpec;
  /** Deprecated AWS alias of keySpec. */
  readonly customerMasterKeySpec?: KeySpec;
  readonly origin?: OriginType;
  readonly multiRegion?: boolean;
  readonly tags?: readonly Tag[];
  readonly policy?: string;
  readonly bypassPolicyLockoutSafetyCheck?: boolean;
}
export interface CreateKeyResponse {
  readonly keyMetadata: KeyMetadata;
}

export interface KeyIdRequest {
  /**
   * Key id or key ARN; an alias name or alias ARN too where AWS takes one (`describeKey`,
   * `getPublicKey` and the cryptographic operations), else refused with `NotFoundError`.
   */
  readonly keyId: string;
}

export interface DescribeKeyRequest extends KeyIdRequest {
  readonly grantTokens?: readonly string[];
}
export interface DescribeKeyResponse {
  readonly keyMetadata: KeyMetadata;
}

export interface PageRequest {
  /** 1–1000; default 100. */
  readonly limit?: number;
  readonly marker?: string;
}
export interface Page {
  readonly nextMarker?: string;
  readonly truncated: boolean;
}

export interface KeyListEntry {
  readonly keyId: string;
  readonly keyArn: string;
}
export interface ListKeysResponse extends Page {
  readonly keys: readonly KeyListEntry[];
}

export interface UpdateKeyDescriptionRequest extends KeyIdRequest {
  readonly description: string;
}

export interface AliasRequest {
  readonly aliasName: string;
  readonly targetKeyId: string;
}
export interface AliasListEntry {
  readonly aliasName: string;
  readonly aliasArn: string;
  readonly targetKeyId?: string;
  readonly creationDate: Date;
  readonly lastUpdatedDate: Date;
}
export interface ListAliasesRequest extends PageRequest {
  readonly keyId?: string;
}
export interface ListAliasesResponse extends Page {
  readonly aliases: readonly AliasListEntry[];
}

export interface KeyStateResponse {
  readonly keyId: string;
}
export interface ScheduleKeyDeletionRequest extends KeyIdRequest {
  /** 7–30 days; default 30. */
  readonly pendingWindowInDays?: number;
}
export interface ScheduleKeyDeletionResponse {
  readonly keyId: string;
  readonly deletionDate: Date;
  readonly keyState: KeyState;
  readonly pendingWindowInDays: number;
}

export interface EnableKeyRotationRequest extends KeyIdRequest {
  /** 90–2560 days; default 365. */
  readonly rotationPeriodInDays?: number;
}
export interface GetKeyRotationStatusResponse {
  readonly keyRotationEnabled: boolean;
  readonly keyId: string;
  readonly rotationPeriodInDays?: number;
  readonly nextRotationDate?: Date;
  readonly onDemandRotationStartDate?: Date;
}
export interface RotateKeyOnDemandResponse {
  readonly keyId: string;
}
export interface ListKeyRotationsRequest extends KeyIdRequest, PageRequest {}
export interface KeyRotation {
  readonly keyId: string;
  readonly keyMaterialId: string;
  readonly rotationDate: Date;
  readonly rotationType: RotationType;
}
export interface ListKeyRotationsResponse extends Page {
  readonly rotations: readonly KeyRotation[];
}

export interface EncryptRequest extends KeyIdRequest {
  readonly plaintext: Uint8Array;
  readonly encryptionContext?: EncryptionContext;
  readonly encryptionAlgorithm?: EncryptionAlgorithm;
  readonly grantTokens?: readonly string[];
  /** Check authorization and validity only: DryRunOperationError when it would succeed. */
  readonly dryRun?: boolean;
}
export interface EncryptResponse {
  readonly ciphertextBlob: Uint8Array;
  /** The key's ARN. */
  readonly keyId: string;
  readonly encryptionAlgorithm: EncryptionAlgorithm;
}

export interface DecryptRequest {
  readonly ciphertextBlob: Uint8Array;
  readonly encryptionContext?: EncryptionContext;
  /** When given, the ciphertext must have been made under this key (IncorrectKeyException). */
  readonly keyId?: string;
  readonly encryptionAlgorithm?: EncryptionAlgorithm;
  readonly grantTokens?: readonly string[];
  /** Check authorization and validity only: DryRunOperationError when it would succeed. */
  readonly dryRun?: boolean;
}
export interface DecryptResponse {
  readonly plaintext: Uint8Array;
  readonly keyId: string;
  readonly encryptionAlgorithm: EncryptionAlgorithm;
  readonly keyMaterialId?: string;
}

export interface ReEncryptRequest {
  readonly ciphertextBlob: Uint8Array;
  readonly sourceEncryptionContext?: EncryptionContext;
  readonly sourceKeyId?: string;
  readonly destinationKeyId: string;
  readonly destinationEncryptionContext?: EncryptionContext;
  readonly sourceEncryptionAlgorithm?: EncryptionAlgorithm;
  readonly destinationEncryptionAlgorithm?: EncryptionAlgorithm;
  readonly grantTokens?: readonly string[];
  /** Check authorization and validity only: DryRunOperationError when it would succeed. */
  readonly dryRun?: boolean;
}
export interface ReEncryptResponse {
  readonly ciphertextBlob: Uint8Array;
  readonly sourceKeyId: string;
  readonly keyId: string;
  readonly sourceEncryptionAlgorithm: EncryptionAlgorithm;
  readonly destinationEncryptionAlgorithm: EncryptionAlgorithm;
  /** The key material that had encrypted the data; present for a symmetric source (as AWS). */
  readonly sourceKeyMaterialId?: string;
  /** The key material that encrypted it again; present for a symmetric destination (as AWS). */
  readonly destinationKeyMaterialId?: string;
}

export interface GenerateDataKeyRequest extends KeyIdRequest {
  readonly keySpec?: DataKeySpec;
  /** 1–1024; exclusive with keySpec. */
  readonly numberOfBytes?: number;
  readonly encryptionContext?: EncryptionContext;
  readonly grantTokens?: readonly string[];
  /** Check authorization and validity only: DryRunOperationError when it would succeed. */
  readonly dryRun?: boolean;
}
export interface GenerateDataKeyResponse {
  readonly ciphertextBlob: Uint8Array;
  readonly plaintext: Uint8Array;
  readonly keyId: string;
  /** The key material that encrypted the data key (the key's current version). */
  readonly keyMaterialId?: string;
}
export interface GenerateDataKeyWithoutPlaintextResponse {
  readonly ciphertextBlob: Uint8Array;
  readonly keyId: string;
  /** The key material that encrypted the data key (the key's current version). */
  readonly keyMaterialId?: string;
}

export interface GenerateRandomRequest {
  /** 1–1024. */
  readonly numberOfBytes: number;
}
export interface GenerateRandomResponse {
  readonly plaintext: Uint8Array;
}

export interface TagResourceRequest extends KeyIdRequest {
  readonly tags: readonly Tag[];
}
export interface UntagResourceRequest extends KeyIdRequest {
  readonly tagKeys: readonly string[];
}
export interface ListResourceTagsRequest extends KeyIdRequest, PageRequest {}
export interface ListResourceTagsResponse extends Page {
  readonly tags: readonly Tag[];
}

/** What one `runMaintenance()` pass did. */
export interface MaintenanceReport {
  readonly rotatedKeyIds: readonly string[];
  readonly deletedKeyIds: readonly string[];
}

/** How `message` is to be read by sign/verify (AWS MessageType). */
export type MessageType = "RAW" | "DIGEST" | "EXTERNAL_MU";

export interface SignRequest extends KeyIdRequest {
  /** Up to 4096 bytes (RAW); a digest of the algorithm's length (DIGEST); 64-byte μ (EXTERNAL_MU). */
  readonly message: Uint8Array;
  /** Default RAW. */
  readonly messageType?: MessageType;
  readonly signingAlgorithm: SigningAlgorithm;
  readonly grantTokens?: readonly string[];
  /** Check authorization and validity only: DryRunOperationError when it would succeed. */
  readonly dryRun?: boolean;
}
export interface SignResponse {
  /** The key's ARN. */
  readonly keyId: string;
  /** DER-encoded for ECDSA (as AWS returns it). */
  readonly signature: Uint8Array;
  readonly signingAlgorithm: SigningAlgorithm;
}

export interface VerifyRequest extends SignRequest {
  readonly signature: Uint8Array;
}
export interface VerifyResponse {
  readonly keyId: string;
  /** Always true: an invalid signature raises InvalidSignatureError, as AWS does. */
  readonly signatureValid: true;
  readonly signingAlgorithm: SigningAlgorithm;
}

export interface GetPublicKeyRequest extends KeyIdRequest {
  readonly grantTokens?: readonly string[];
}
export interface GetPublicKeyResponse {
  readonly keyId: string;
  /** DER SubjectPublicKeyInfo (RFC 5280). */
  readonly publicKey: Uint8Array;
  /** Deprecated in AWS in favour of keySpec. */
  readonly customerMasterKeySpec: KeySpec;
  readonly keySpec: KeySpec;
  readonly keyUsage: KeyUsage;
  readonly encryptionAlgorithms?: readonly EncryptionAlgorithm[];
  readonly signingAlgorithms?: readonly SigningAlgorithm[];
  readonly keyAgreementAlgorithms?: readonly KeyAgreementAlgorithm[];
}

export interface GenerateMacRequest extends KeyIdRequest {
  /** 1–4096 bytes. */
  readonly message: Uint8Array;
  readonly macAlgorithm: MacAlgorithm;
  readonly grantTokens?: readonly string[];
  /** Check authorization and validity only: DryRunOperationError when it would succeed. */
  readonly dryRun?: boolean;
}
export interface GenerateMacResponse {
  readonly keyId: string;
  readonly mac: Uint8Array;
  readonly macAlgorithm: MacAlgorithm;
}

export interface VerifyMacRequest extends GenerateMacRequest {
  readonly mac: Uint8Array;
}
export interface VerifyMacResponse {
  readonly keyId: string;
  /** Always true: a mismatch raises InvalidMacError, as AWS does. */
  readonly macValid: true;
  readonly macAlgorithm: MacAlgorithm;
}

export type DataKeyPairSpec =
  | "RSA_2048"
  | "RSA_3072"
  | "RSA_4096"
  | "ECC_NIST_P256"
  | "ECC_NIST_P384"
  | "ECC_NIST_P521"
  | "ECC_SECG_P256K1"
  | "ECC_NIST_EDWARDS25519";

export interface GenerateDataKeyPairRequest extends KeyIdRequest {
  readonly keyPairSpec: DataKeyPairSpec;
  readonly encryptionContext?: EncryptionContext;
  readonly grantTokens?: readonly string[];
  /** Check authorization and validity only: DryRunOperationError when it would succeed. */
  readonly dryRun?: boolean;
}
export interface GenerateDataKeyPairWithoutPlaintextResponse {
  /** The PKCS#8 DER private key encrypted under the symmetric KMS key; decrypt() opens it. */
  readonly privateKeyCiphertextBlob: Uint8Array;
  /** DER SubjectPublicKeyInfo. */
  readonly publicKey: Uint8Array;
  readonly keyId: string;
  readonly keyPairSpec: DataKeyPairSpec;
  /** The key material that encrypted the private key (the key's current version). */
  readonly keyMaterialId?: string;
}
export interface GenerateDataKeyPairResponse extends GenerateDataKeyPairWithoutPlaintextResponse {
  /** PKCS#8 DER private key. */
  readonly privateKeyPlaintext: Uint8Array;
}

export interface DeriveSharedSecretRequest extends KeyIdRequest {
  readonly keyAgreementAlgorithm: KeyAgreementAlgorithm;
  /** The peer's public key, DER SubjectPublicKeyInfo on the same curve. */
  readonly publicKey: Uint8Array;
  readonly grantTokens?: readonly string[];
  /** Check authorization and validity only: DryRunOperationError when it would succeed. */
  readonly dryRun?: boolean;
}
export interface DeriveSharedSecretResponse {
  readonly keyId: string;
  /** The raw ECDH shared secret (x-coordinate); derive keys from it with a KDF. */
  readonly sharedSecret: Uint8Array;
  readonly keyAgreementAlgorithm: KeyAgreementAlgorithm;
  readonly keyOrigin: OriginType;
}
