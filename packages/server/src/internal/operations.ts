/**
 * The AWS KMS operations this server serves, each wired to the Kms facade method of the same
 * name, with its request and response shapes as in the AWS SDK's model (client-kms
 * models_0.d.ts). One table, so that an operation cannot be reachable without its shapes.
 */
import type { CallOptions, Kms } from "@kms/core";
import {
  blob,
  boolean,
  integer,
  list,
  m,
  type StructureShape,
  string,
  stringList,
  stringMap,
  structure,
  timestamp,
} from "./shapes.ts";

export interface OperationSpec {
  readonly input: StructureShape;
  /** Undefined for operations that answer with an empty object. */
  readonly output: StructureShape | undefined;
  readonly call: (
    kms: Kms,
    request: Record<string, unknown>,
    options: CallOptions,
  ) => Promise<unknown>;
}

/** The decoded request goes to the facade as is: its own validation decides what is acceptable. */
function req<T>(request: Record<string, unknown>): T {
  return request as unknown as T;
}

const RECIPIENT = "Nitro Enclaves attestation (Recipient) needs AWS KMS";
const CUSTOM_KEY_STORE = "custom key stores need AWS KMS";
const SERVICE_PRINCIPAL = "service principals need AWS KMS";
const DRY_RUN_MODIFIERS = "DryRunModifiers is not implemented";

const grantTokens = m("GrantTokens", stringList);
const dryRun = m("DryRun", boolean);
const keyId = m("KeyId", string);
const limit = m("Limit", integer);
const marker = m("Marker", string);
const nextMarker = m("NextMarker", string);
const truncated = m("Truncated", boolean);
const encryptionContext = m("EncryptionContext", stringMap);
const recipient = m("Recipient", string, { unsupported: RECIPIENT });
const keyMaterialId = m("KeyMaterialId", string);

const Tag = structure("Tag", [m("TagKey", string), m("TagValue", string)]);

const KeyMetadata = structure("KeyMetadata", [
  // AWS spells the account id member with an uppercase acronym; core has awsAccountId.
  { wire: "AWSAccountId", field: "awsAccountId", shape: string },
  keyId,
  m("Arn", string),
  m("CreationDate", timestamp),
  m("Enabled", boolean),
  m("Description", string),
  m("KeyUsage", string),
  m("KeyState", string),
  m("DeletionDate", timestamp),
  m("ValidTo", timestamp),
  m("Origin", string),
  m("ExpirationModel", string),
  m("KeyManager", string),
  m("CustomerMasterKeySpec", string),
  m("KeySpec", string),
  m("EncryptionAlgorithms", stringList),
  m("SigningAlgorithms", stringList),
  m("KeyAgreementAlgorithms", stringList),
  m("MultiRegion", boolean),
  m("PendingDeletionWindowInDays", integer),
  m("MacAlgorithms", stringList),
  m("CurrentKeyMaterialId", string),
]);

const keyMetadataResponse = (name: string): StructureShape =>
  structure(name, [m("KeyMetadata", KeyMetadata)]);

const keyIdOnly = (name: string): StructureShape => structure(name, [keyId]);

const GrantConstraints = structure("GrantConstraints", [
  m("EncryptionContextSubset", stringMap),
  m("EncryptionContextEquals", stringMap),
  m("SourceArn", string, { unsupported: "SourceArn constraints need AWS KMS" }),
]);

const GrantListEntry = structure("GrantListEntry", [
  keyId,
  m("GrantId", string),
  m("Name", string),
  m("CreationDate", timestamp),
  m("GranteePrincipal", string),
  m("RetiringPrincipal", string),
  m("IssuingAccount", string),
  m("Operations", stringList),
  m("Constraints", GrantConstraints),
]);

const ListGrantsResponse = structure("ListGrantsResponse", [
  m("Grants", list(GrantListEntry)),
  nextMarker,
  truncated,
]);

const dataKeyPairRequest = (name: string, withRecipient: boolean): StructureShape =>
  structure(name, [
    encryptionContext,
    keyId,
    m("KeyPairSpec", string),
    grantTokens,
    ...(withRecipient ? [recipient] : []),
    dryRun,
  ]);

const dataKeyRequest = (name: string, withRecipient: boolean): StructureShape =>
  structure(name, [
    keyId,
    encryptionContext,
    m("NumberOfBytes", integer),
    m("KeySpec", string),
    grantTokens,
    ...(withRecipient ? [recipient] : []),
    dryRun,
  ]);

function op(
  input: StructureShape,
  output: StructureShape | undefined,
  call: OperationSpec["call"],
): OperationSpec {
  return { input, output, call };
}

export const OPERATIONS: ReadonlyMap<string, OperationSpec> = new Map<string, OperationSpec>([
  // Keys
  [
    "CreateKey",
    op(
      structure("CreateKeyRequest", [
        m("Policy", string),
        m("Description", string),
        m("KeyUsage", string),
        m("CustomerMasterKeySpec", string),
        m("KeySpec", string),
        m("Origin", string),
        m("CustomKeyStoreId", string, { unsupported: CUSTOM_KEY_STORE }),
        m("BypassPolicyLockoutSafetyCheck", boolean),
        m("Tags", list(Tag)),
        m("MultiRegion", boolean),
        m("XksKeyId", string, { unsupported: CUSTOM_KEY_STORE }),
      ]),
      keyMetadataResponse("CreateKeyResponse"),
      (kms, r, o) => kms.createKey(req(r), o),
    ),
  ],
  [
    "DescribeKey",
    op(
      structure("DescribeKeyRequest", [keyId, grantTokens]),
      keyMetadataResponse("DescribeKeyResponse"),
      (kms, r, o) => kms.describeKey(req(r), o),
    ),
  ],
  [
    "ListKeys",
    op(
      structure("ListKeysRequest", [limit, marker]),
      structure("ListKeysResponse", [
        m("Keys", list(structure("KeyListEntry", [keyId, m("KeyArn", string)]))),
        nextMarker,
        truncated,
      ]),
      (kms, r, o) => kms.listKeys(req(r), o),
    ),
  ],
  [
    "UpdateKeyDescription",
    op(
      structure("UpdateKeyDescriptionRequest", [keyId, m("Description", string)]),
      undefined,
      (kms, r, o) => kms.updateKeyDescription(req(r), o),
    ),
  ],
  [
    "EnableKey",
    op(keyIdOnly("EnableKeyRequest"), undefined, (kms, r, o) => kms.enableKey(req(r), o)),
  ],
  [
    "DisableKey",
    op(keyIdOnly("DisableKeyRequest"), undefined, (kms, r, o) => kms.disableKey(req(r), o)),
  ],
  [
    "ScheduleKeyDeletion",
    op(
      structure("ScheduleKeyDeletionRequest", [keyId, m("PendingWindowInDays", integer)]),
      structure("ScheduleKeyDeletionResponse", [
        keyId,
        m("DeletionDate", timestamp),
        m("KeyState", string),
        m("PendingWindowInDays", integer),
      ]),
      (kms, r, o) => kms.scheduleKeyDeletion(req(r), o),
    ),
  ],
  [
    "CancelKeyDeletion",
    op(keyIdOnly("CancelKeyDeletionRequest"), keyIdOnly("CancelKeyDeletionResponse"), (kms, r, o) =>
      kms.cancelKeyDeletion(req(r), o),
    ),
  ],

  // Aliases
  [
    "CreateAlias",
    op(
      structure("CreateAliasRequest", [m("AliasName", string), m("TargetKeyId", string)]),
      undefined,
      (kms, r, o) => kms.createAlias(req(r), o),
    ),
  ],
  [
    "UpdateAlias",
    op(
      structure("UpdateAliasRequest", [m("AliasName", string), m("TargetKeyId", string)]),
      undefined,
      (kms, r, o) => kms.updateAlias(req(r), o),
    ),
  ],
  [
    "DeleteAlias",
    op(structure("DeleteAliasRequest", [m("AliasName", string)]), undefined, (kms, r, o) =>
      kms.deleteAlias(req(r), o),
    ),
  ],
  [
    "ListAliases",
    op(
      structure("ListAliasesRequest", [keyId, limit, marker]),
      structure("ListAliasesResponse", [
        m(
          "Aliases",
          list(
            structure("AliasListEntry", [
              m("AliasName", string),
              m("AliasArn", string),
              m("TargetKeyId", string),
              m("CreationDate", timestamp),
              m("LastUpdatedDate", timestamp),
            ]),
          ),
        ),
        nextMarker,
        truncated,
      ]),
      (kms, r, o) => kms.listAliases(req(r), o),
    ),
  ],

  // Rotation
  [
    "EnableKeyRotation",
    op(
      structure("EnableKeyRotationRequest", [keyId, m("RotationPeriodInDays", integer)]),
      undefined,
      (kms, r, o) => kms.enableKeyRotation(req(r), o),
    ),
  ],
  [
    "DisableKeyRotation",
    op(keyIdOnly("DisableKeyRotationRequest"), undefined, (kms, r, o) =>
      kms.disableKeyRotation(req(r), o),
    ),
  ],
  [
    "GetKeyRotationStatus",
    op(
      keyIdOnly("GetKeyRotationStatusRequest"),
      structure("GetKeyRotationStatusResponse", [
        m("KeyRotationEnabled", boolean),
        keyId,
        m("RotationPeriodInDays", integer),
        m("NextRotationDate", timestamp),
        m("OnDemandRotationStartDate", timestamp),
      ]),
      (kms, r, o) => kms.getKeyRotationStatus(req(r), o),
    ),
  ],
  [
    "RotateKeyOnDemand",
    op(keyIdOnly("RotateKeyOnDemandRequest"), keyIdOnly("RotateKeyOnDemandResponse"), (kms, r, o) =>
      kms.rotateKeyOnDemand(req(r), o),
    ),
  ],
  [
    "ListKeyRotations",
    op(
      structure("ListKeyRotationsRequest", [
        keyId,
        // What core lists is exactly AWS's ROTATIONS_ONLY (the default).
        m("IncludeKeyMaterial", string, { onlyValue: "ROTATIONS_ONLY" }),
        limit,
        marker,
      ]),
      structure("ListKeyRotationsResponse", [
        m(
          "Rotations",
          list(
            structure("RotationsListEntry", [
              keyId,
              keyMaterialId,
              m("KeyMaterialDescription", string),
              m("ImportState", string),
              m("KeyMaterialState", string),
              m("ExpirationModel", string),
              m("ValidTo", timestamp),
              m("RotationDate", timestamp),
              m("RotationType", string),
            ]),
          ),
        ),
        nextMarker,
        truncated,
      ]),
      (kms, r, o) => kms.listKeyRotations(req(r), o),
    ),
  ],

  // Symmetric encryption and data keys
  [
    "Encrypt",
    op(
      structure("EncryptRequest", [
        keyId,
        m("Plaintext", blob),
        encryptionContext,
        grantTokens,
        m("EncryptionAlgorithm", string),
        dryRun,
      ]),
      structure("EncryptResponse", [
        m("CiphertextBlob", blob),
        keyId,
        m("EncryptionAlgorithm", string),
      ]),
      (kms, r, o) => kms.encrypt(req(r), o),
    ),
  ],
  [
    "Decrypt",
    op(
      structure("DecryptRequest", [
        m("CiphertextBlob", blob),
        encryptionContext,
        grantTokens,
        keyId,
        m("EncryptionAlgorithm", string),
        recipient,
        dryRun,
        m("DryRunModifiers", stringList, { unsupported: DRY_RUN_MODIFIERS }),
      ]),
      structure("DecryptResponse", [
        keyId,
        m("Plaintext", blob),
        m("EncryptionAlgorithm", string),
        keyMaterialId,
      ]),
      (kms, r, o) => kms.decrypt(req(r), o),
    ),
  ],
  [
    "ReEncrypt",
    op(
      structure("ReEncryptRequest", [
        m("CiphertextBlob", blob),
        m("SourceEncryptionContext", stringMap),
        m("SourceKeyId", string),
        m("DestinationKeyId", string),
        m("DestinationEncryptionContext", stringMap),
        m("SourceEncryptionAlgorithm", string),
        m("DestinationEncryptionAlgorithm", string),
        grantTokens,
        dryRun,
        m("DryRunModifiers", stringList, { unsupported: DRY_RUN_MODIFIERS }),
      ]),
      structure("ReEncryptResponse", [
        m("CiphertextBlob", blob),
        m("SourceKeyId", string),
        keyId,
        m("SourceEncryptionAlgorithm", string),
        m("DestinationEncryptionAlgorithm", string),
        m("SourceKeyMaterialId", string),
        m("DestinationKeyMaterialId", string),
      ]),
      (kms, r, o) => kms.reEncrypt(req(r), o),
    ),
  ],
  [
    "GenerateDataKey",
    op(
      dataKeyRequest("GenerateDataKeyRequest", true),
      structure("GenerateDataKeyResponse", [
        m("CiphertextBlob", blob),
        m("Plaintext", blob),
        keyId,
        keyMaterialId,
      ]),
      (kms, r, o) => kms.generateDataKey(req(r), o),
    ),
  ],
  [
    "GenerateDataKeyWithoutPlaintext",
    op(
      dataKeyRequest("GenerateDataKeyWithoutPlaintextRequest", false),
      structure("GenerateDataKeyWithoutPlaintextResponse", [
        m("CiphertextBlob", blob),
        keyId,
        keyMaterialId,
      ]),
      (kms, r, o) => kms.generateDataKeyWithoutPlaintext(req(r), o),
    ),
  ],
  [
    "GenerateRandom",
    op(
      structure("GenerateRandomRequest", [
        m("NumberOfBytes", integer),
        m("CustomKeyStoreId", string, { unsupported: CUSTOM_KEY_STORE }),
        recipient,
      ]),
      structure("GenerateRandomResponse", [m("Plaintext", blob)]),
      (kms, r, o) => kms.generateRandom(req(r), o),
    ),
  ],

  // Asymmetric keys, MACs, key agreement
  [
    "Sign",
    op(
      structure("SignRequest", [
        keyId,
        m("Message", blob),
        m("MessageType", string),
        grantTokens,
        m("SigningAlgorithm", string),
        dryRun,
      ]),
      structure("SignResponse", [keyId, m("Signature", blob), m("SigningAlgorithm", string)]),
      (kms, r, o) => kms.sign(req(r), o),
    ),
  ],
  [
    "Verify",
    op(
      structure("VerifyRequest", [
        keyId,
        m("Message", blob),
        m("MessageType", string),
        m("Signature", blob),
        m("SigningAlgorithm", string),
        grantTokens,
        dryRun,
      ]),
      structure("VerifyResponse", [
        keyId,
        m("SignatureValid", boolean),
        m("SigningAlgorithm", string),
      ]),
      (kms, r, o) => kms.verify(req(r), o),
    ),
  ],
  [
    "GetPublicKey",
    op(
      structure("GetPublicKeyRequest", [keyId, grantTokens]),
      structure("GetPublicKeyResponse", [
        keyId,
        m("PublicKey", blob),
        m("CustomerMasterKeySpec", string),
        m("KeySpec", string),
        m("KeyUsage", string),
        m("EncryptionAlgorithms", stringList),
        m("SigningAlgorithms", stringList),
        m("KeyAgreementAlgorithms", stringList),
      ]),
      (kms, r, o) => kms.getPublicKey(req(r), o),
    ),
  ],
  [
    "GenerateMac",
    op(
      structure("GenerateMacRequest", [
        m("Message", blob),
        keyId,
        m("MacAlgorithm", string),
        grantTokens,
        dryRun,
      ]),
      structure("GenerateMacResponse", [m("Mac", blob), m("MacAlgorithm", string), keyId]),
      (kms, r, o) => kms.generateMac(req(r), o),
    ),
  ],
  [
    "VerifyMac",
    op(
      structure("VerifyMacRequest", [
        m("Message", blob),
        keyId,
        m("MacAlgorithm", string),
        m("Mac", blob),
        grantTokens,
        dryRun,
      ]),
      structure("VerifyMacResponse", [keyId, m("MacValid", boolean), m("MacAlgorithm", string)]),
      (kms, r, o) => kms.verifyMac(req(r), o),
    ),
  ],
  [
    "GenerateDataKeyPair",
    op(
      dataKeyPairRequest("GenerateDataKeyPairRequest", true),
      structure("GenerateDataKeyPairResponse", [
        m("PrivateKeyCiphertextBlob", blob),
        m("PrivateKeyPlaintext", blob),
        m("PublicKey", blob),
        keyId,
        m("KeyPairSpec", string),
        keyMaterialId,
      ]),
      (kms, r, o) => kms.generateDataKeyPair(req(r), o),
    ),
  ],
  [
    "GenerateDataKeyPairWithoutPlaintext",
    op(
      dataKeyPairRequest("GenerateDataKeyPairWithoutPlaintextRequest", false),
      structure("GenerateDataKeyPairWithoutPlaintextResponse", [
        m("PrivateKeyCiphertextBlob", blob),
        m("PublicKey", blob),
        keyId,
        m("KeyPairSpec", string),
        keyMaterialId,
      ]),
      (kms, r, o) => kms.generateDataKeyPairWithoutPlaintext(req(r), o),
    ),
  ],
  [
    "DeriveSharedSecret",
    op(
      structure("DeriveSharedSecretRequest", [
        keyId,
        m("KeyAgreementAlgorithm", string),
        m("PublicKey", blob),
        grantTokens,
        dryRun,
        recipient,
      ]),
      structure("DeriveSharedSecretResponse", [
        keyId,
        m("SharedSecret", blob),
        m("KeyAgreementAlgorithm", string),
        m("KeyOrigin", string),
      ]),
      (kms, r, o) => kms.deriveSharedSecret(req(r), o),
    ),
  ],

  // Tags
  [
    "TagResource",
    op(structure("TagResourceRequest", [keyId, m("Tags", list(Tag))]), undefined, (kms, r, o) =>
      kms.tagResource(req(r), o),
    ),
  ],
  [
    "UntagResource",
    op(
      structure("UntagResourceRequest", [keyId, m("TagKeys", stringList)]),
      undefined,
      (kms, r, o) => kms.untagResource(req(r), o),
    ),
  ],
  [
    "ListResourceTags",
    op(
      structure("ListResourceTagsRequest", [keyId, limit, marker]),
      structure("ListResourceTagsResponse", [m("Tags", list(Tag)), nextMarker, truncated]),
      (kms, r, o) => kms.listResourceTags(req(r), o),
    ),
  ],

  // Key policies
  [
    "PutKeyPolicy",
    op(
      structure("PutKeyPolicyRequest", [
        keyId,
        m("PolicyName", string),
        m("Policy", string),
        m("BypassPolicyLockoutSafetyCheck", boolean),
      ]),
      undefined,
      (kms, r, o) => kms.putKeyPolicy(req(r), o),
    ),
  ],
  [
    "GetKeyPolicy",
    op(
      structure("GetKeyPolicyRequest", [keyId, m("PolicyName", string)]),
      structure("GetKeyPolicyResponse", [m("Policy", string), m("PolicyName", string)]),
      (kms, r, o) => kms.getKeyPolicy(req(r), o),
    ),
  ],
  [
    "ListKeyPolicies",
    op(
      structure("ListKeyPoliciesRequest", [keyId, limit, marker]),
      structure("ListKeyPoliciesResponse", [m("PolicyNames", stringList), nextMarker, truncated]),
      (kms, r, o) => kms.listKeyPolicies(req(r), o),
    ),
  ],

  // Grants
  [
    "CreateGrant",
    op(
      structure("CreateGrantRequest", [
        keyId,
        m("GranteePrincipal", string),
        m("RetiringPrincipal", string),
        m("Operations", stringList),
        m("Constraints", GrantConstraints),
        grantTokens,
        m("Name", string),
        dryRun,
        m("GranteeServicePrincipal", string, { unsupported: SERVICE_PRINCIPAL }),
        m("RetiringServicePrincipal", string, { unsupported: SERVICE_PRINCIPAL }),
      ]),
      structure("CreateGrantResponse", [m("GrantToken", string), m("GrantId", string)]),
      (kms, r, o) => kms.createGrant(req(r), o),
    ),
  ],
  [
    "ListGrants",
    op(
      structure("ListGrantsRequest", [
        limit,
        marker,
        keyId,
        m("GrantId", string),
        m("GranteePrincipal", string),
        m("GranteeServicePrincipal", string, { unsupported: SERVICE_PRINCIPAL }),
      ]),
      ListGrantsResponse,
      (kms, r, o) => kms.listGrants(req(r), o),
    ),
  ],
  [
    "ListRetirableGrants",
    op(
      structure("ListRetirableGrantsRequest", [
        limit,
        marker,
        m("RetiringPrincipal", string),
        m("RetiringServicePrincipal", string, { unsupported: SERVICE_PRINCIPAL }),
      ]),
      ListGrantsResponse,
      (kms, r, o) => kms.listRetirableGrants(req(r), o),
    ),
  ],
  [
    "RetireGrant",
    op(
      structure("RetireGrantRequest", [
        m("GrantToken", string),
        keyId,
        m("GrantId", string),
        dryRun,
      ]),
      undefined,
      (kms, r, o) => kms.retireGrant(req(r), o),
    ),
  ],
  [
    "RevokeGrant",
    op(
      structure("RevokeGrantRequest", [keyId, m("GrantId", string), dryRun]),
      undefined,
      (kms, r, o) => kms.revokeGrant(req(r), o),
    ),
  ],

  // Audit
  [
    "GetKeyLastUsage",
    op(
      keyIdOnly("GetKeyLastUsageRequest"),
      structure("GetKeyLastUsageResponse", [
        keyId,
        m(
          "KeyLastUsage",
          structure("KeyLastUsageData", [
            m("Operation", string),
            m("Timestamp", timestamp),
            m("CloudTrailEventId", string),
            m("KmsRequestId", string),
          ]),
        ),
        m("TrackingStartDate", timestamp),
        m("KeyCreationDate", timestamp),
      ]),
      async (kms, r, o) => {
        const response = await kms.getKeyLastUsage(req(r), o);
        // AWS answers an empty KeyLastUsage, not none, for a key unused since tracking began.
        return { ...response, keyLastUsage: response.keyLastUsage ?? {} };
      },
    ),
  ],
]);

/**
 * AWS KMS operations this server does not implement: answered with
 * UnsupportedOperationException (which the SDK has a class for) rather than
 * UnknownOperationException, so a caller learns the operation exists but is not served here.
 */
export const UNSUPPORTED_OPERATIONS: ReadonlySet<string> = new Set([
  "ConnectCustomKeyStore",
  "CreateCustomKeyStore",
  "Decapsulate",
  "DeleteCustomKeyStore",
  "DeleteImportedKeyMaterial",
  "DescribeCustomKeyStores",
  "DisconnectCustomKeyStore",
  "Encapsulate",
  "GetParametersForImport",
  "ImportKeyMaterial",
  "ReplicateKey",
  "UpdateCustomKeyStore",
  "UpdatePrimaryRegion",
]);
