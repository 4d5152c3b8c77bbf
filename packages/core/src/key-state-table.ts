/**
 * How a KMS key's state affects each AWS KMS API operation that uses an existing key.
 *
 * Source: "Key states of AWS KMS keys", key state table,
 * https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html
 * (rows and footnotes [1]-[15] as published in the awsdocs/aws-kms-developer-guide
 * archive, doc_source/key-state.md, 2023). Rows for operations added after that
 * archive (DeriveSharedSecret, GetKeyLastUsage, ListKeyRotations, RotateKeyOnDemand)
 * and for ListRetirableGrants (not in the table) are derived from the error lists in
 * the AWS KMS API Reference and are marked "(unconfirmed)".
 *
 * Scope: symmetric encryption keys (SYMMETRIC_DEFAULT) with AWS_KMS origin, single-Region.
 * Only the key-state dimension is modelled: key usage / key spec checks
 * (InvalidKeyUsageException, UnsupportedOperationException for e.g. Sign on a symmetric
 * key) are separate and happen regardless of this table.
 *
 * Footnotes quoted from the AWS table:
 *   [1] DisabledException: <key ARN> is disabled.
 *   [2] DisabledException: <key ARN> is pending deletion (or pending replica deletion).
 *   [3] KMSInvalidStateException: <key ARN> is pending deletion (or pending replica deletion).
 *   [4] KMSInvalidStateException: <key ARN> is not pending deletion (or pending replica deletion).
 *   [5] KMSInvalidStateException: <key ARN> is pending import.
 *   [6] UnsupportedOperationException: <key ARN> origin is EXTERNAL which is not valid for
 *       this operation.
 *   [7] If the KMS key has imported key material or is in a custom key store:
 *       UnsupportedOperationException.
 *   [8] If the KMS key has imported key material: KMSInvalidStateException.
 *   [9] If the KMS key cannot or does not have imported key material:
 *       UnsupportedOperationException.
 *   [10] If the source KMS key is pending deletion, the command succeeds. If the destination
 *        KMS key is pending deletion, the command fails with KMSInvalidStateException.
 *
 * "[2] or [3]" cells (cryptographic operations on a key pending deletion): AWS does not say
 * when each applies; KMSInvalidStateException ([3]) is used, matching error reports from
 * real AWS ("... is pending deletion. (Error Code: KMSInvalidStateException)").
 *
 * PendingImport can only occur for EXTERNAL-origin keys, so that column is never reached by an
 * AWS_KMS key; it records AWS's documented outcome for completeness. "N/A" cells (the key types
 * that operation accepts could not be PendingImport in the archived table) use
 * KMSInvalidStateException by analogy with [5] (unconfirmed).
 */

/** Key states a KMS key can be in (AWS KMS names). */
export type KeyState = "Enabled" | "Disabled" | "PendingDeletion" | "PendingImport";

/**
 * What an operation does to a key in a given state: proceed, or raise the named AWS exception.
 * "UnsupportedOperationException" appears only where the AWS table documents it (footnotes
 * [6], [7], [9]).
 */
export type KeyStateOutcome =
  | "ok"
  | "DisabledException"
  | "KMSInvalidStateException"
  | "UnsupportedOperationException";

/** AWS KMS operations that use an existing KMS key, in camelCase. */
export type KeyStateOperation =
  | "cancelKeyDeletion"
  | "createAlias"
  | "createGrant"
  | "decrypt"
  | "deleteAlias"
  | "deleteImportedKeyMaterial"
  | "deriveSharedSecret"
  | "describeKey"
  | "disableKey"
  | "disableKeyRotation"
  | "enableKey"
  | "enableKeyRotation"
  | "encrypt"
  | "generateDataKey"
  | "generateDataKeyPair"
  | "generateDataKeyPairWithoutPlaintext"
  | "generateDataKeyWithoutPlaintext"
  | "generateMac"
  | "getKeyLastUsage"
  | "getKeyPolicy"
  | "getKeyRotationStatus"
  | "getParametersForImport"
  | "getPublicKey"
  | "importKeyMaterial"
  | "listAliases"
  | "listGrants"
  | "listKeyPolicies"
  | "listKeyRotations"
  | "listResourceTags"
  | "listRetirableGrants"
  | "putKeyPolicy"
  | "reEncrypt"
  | "reEncryptSource"
  | "replicateKey"
  | "retireGrant"
  | "revokeGrant"
  | "rotateKeyOnDemand"
  | "scheduleKeyDeletion"
  | "sign"
  | "tagResource"
  | "untagResource"
  | "updateAlias"
  | "updateKeyDescription"
  | "updatePrimaryRegion"
  | "verify"
  | "verifyMac";

type Row = Readonly<Record<KeyState, KeyStateOutcome>>;

/** Allowed in every state. */
const ALWAYS: Row = {
  Enabled: "ok",
  Disabled: "ok",
  PendingDeletion: "ok",
  PendingImport: "ok",
};

/** Cryptographic use: Enabled only; [1], [2] or [3] (see header), [5]. */
const CRYPTO: Row = {
  Enabled: "ok",
  Disabled: "DisabledException",
  PendingDeletion: "KMSInvalidStateException",
  PendingImport: "KMSInvalidStateException",
};

/** Management allowed unless pending deletion: [3]; PendingImport succeeds. */
const NOT_PENDING_DELETION: Row = {
  Enabled: "ok",
  Disabled: "ok",
  PendingDeletion: "KMSInvalidStateException",
  PendingImport: "ok",
};

/** Enable/DisableKey: [3] when pending deletion, [5] when pending import. */
const ENABLE_DISABLE: Row = {
  Enabled: "ok",
  Disabled: "ok",
  PendingDeletion: "KMSInvalidStateException",
  PendingImport: "KMSInvalidStateException",
};

/**
 * Automatic-rotation settings. Enabled is "? [7]": succeeds for an AWS_KMS key outside a custom
 * key store, which is this table's scope. Disabled is "[1] or [7]" and PendingDeletion
 * "[3] or [7]"; for an AWS_KMS key [7] does not apply, leaving [1] and [3]. PendingImport is [6].
 */
const ROTATION_SETTING: Row = {
  Enabled: "ok",
  Disabled: "DisabledException",
  PendingDeletion: "KMSInvalidStateException",
  PendingImport: "UnsupportedOperationException",
};

/**
 * Import-related operations. For Enabled/Disabled the table has "? [9]" and for PendingDeletion
 * "[8] or [9]"; an AWS_KMS key cannot have imported key material, so [9] applies:
 * UnsupportedOperationException. PendingImport succeeds.
 */
const IMPORT_ONLY: Row = {
  Enabled: "UnsupportedOperationException",
  Disabled: "UnsupportedOperationException",
  PendingDeletion: "UnsupportedOperationException",
  PendingImport: "ok",
};

export const KEY_STATE_TABLE: Readonly<
  Record<KeyStateOperation, Readonly<Record<KeyState, KeyStateOutcome>>>
> = {
  /** [4] unless pending deletion. After success the key state is Disabled. */
  cancelKeyDeletion: {
    Enabled: "KMSInvalidStateException",
    Disabled: "KMSInvalidStateException",
    PendingDeletion: "ok",
    PendingImport: "KMSInvalidStateException",
  },
  /** The target key's state: [3] when pending deletion. */
  createAlias: NOT_PENDING_DELETION,
  createGrant: CRYPTO,
  decrypt: CRYPTO,
  deleteAlias: ALWAYS,
  /**
   * Table: Enabled/Disabled/PendingDeletion "[9]", PendingImport succeeds with no effect.
   * An AWS_KMS key has no imported material, so [9] gives UnsupportedOperationException.
   */
  deleteImportedKeyMaterial: IMPORT_ONLY,
  /**
   * (unconfirmed) Not in the archived table. Errors listed in API_DeriveSharedSecret include
   * DisabledException and KMSInvalidStateException; modelled like Sign/Verify ([1], [2] or [3],
   * N/A for PendingImport).
   */
  deriveSharedSecret: CRYPTO,
  describeKey: ALWAYS,
  disableKey: ENABLE_DISABLE,
  disableKeyRotation: ROTATION_SETTING,
  enableKey: ENABLE_DISABLE,
  enableKeyRotation: ROTATION_SETTING,
  encrypt: CRYPTO,
  generateDataKey: CRYPTO,
  generateDataKeyPair: CRYPTO,
  generateDataKeyPairWithoutPlaintext: CRYPTO,
  generateDataKeyWithoutPlaintext: CRYPTO,
  /** PendingImport is N/A in the table (HMAC keys); see header. */
  generateMac: CRYPTO,
  /**
   * (unconfirmed) Not in the archived table. API_GetKeyLastUsage lists no DisabledException or
   * KMSInvalidStateException, so it is modelled as allowed in every state.
   */
  getKeyLastUsage: ALWAYS,
  getKeyPolicy: ALWAYS,
  /**
   * "? [7]" in Enabled, Disabled and PendingDeletion: succeeds for an AWS_KMS key outside a
   * custom key store. PendingImport is [6] in the archived table (imported keys could not rotate
   * then; AWS has since added on-demand rotation for them, so this cell may have changed).
   */
  getKeyRotationStatus: {
    Enabled: "ok",
    Disabled: "ok",
    PendingDeletion: "ok",
    PendingImport: "UnsupportedOperationException",
  },
  getParametersForImport: IMPORT_ONLY,
  /** PendingImport is N/A in the table (asymmetric keys); see header. */
  getPublicKey: CRYPTO,
  importKeyMaterial: IMPORT_ONLY,
  listAliases: ALWAYS,
  listGrants: ALWAYS,
  listKeyPolicies: ALWAYS,
  /**
   * (unconfirmed) Not in the archived table. API_ListKeyRotations lists no DisabledException;
   * like GetKeyRotationStatus it is a read of rotation history, so it is allowed in every state.
   * PendingImport: RotationsListEntry has ImportState PENDING_IMPORT, suggesting keys awaiting
   * import can be listed.
   */
  listKeyRotations: ALWAYS,
  listResourceTags: ALWAYS,
  /**
   * (unconfirmed) Not in the table: it takes a RetiringPrincipal, not a KeyId, so no single
   * key's state can block it.
   */
  listRetirableGrants: ALWAYS,
  putKeyPolicy: ALWAYS,
  /**
   * The destination key (encrypt side). The AWS row carries footnote [10]: a source key that is
   * pending deletion still succeeds, so the source side has its own row, reEncryptSource.
   */
  reEncrypt: CRYPTO,
  /** ReEncrypt's source key (decrypt side): footnote [10], PendingDeletion succeeds. */
  reEncryptSource: {
    Enabled: "ok",
    Disabled: "DisabledException",
    PendingDeletion: "ok",
    PendingImport: "KMSInvalidStateException",
  },
  /** Multi-Region primary keys only; the state outcomes are those of the table row. */
  replicateKey: CRYPTO,
  retireGrant: ALWAYS,
  revokeGrant: ALWAYS,
  /**
   * (unconfirmed) Not in the archived table. API_RotateKeyOnDemand lists DisabledException and
   * KMSInvalidStateException; modelled like EnableKeyRotation for Disabled ([1]) and
   * PendingDeletion ([3]). PendingImport: KMSInvalidStateException by analogy with [5], since
   * imported keys now support on-demand rotation and [6] may no longer apply.
   */
  rotateKeyOnDemand: {
    Enabled: "ok",
    Disabled: "DisabledException",
    PendingDeletion: "KMSInvalidStateException",
    PendingImport: "KMSInvalidStateException",
  },
  /** [3] when already pending deletion. */
  scheduleKeyDeletion: NOT_PENDING_DELETION,
  /** PendingImport is N/A in the table (asymmetric keys); see header. */
  sign: CRYPTO,
  tagResource: NOT_PENDING_DELETION,
  untagResource: NOT_PENDING_DELETION,
  /**
   * PendingDeletion is "? [10]": allowed when the alias's current key is pending deletion,
   * KMSInvalidStateException when the new target key is. This row is keyed on the new target
   * key's state (the current key's state never blocks the update).
   */
  updateAlias: NOT_PENDING_DELETION,
  updateKeyDescription: NOT_PENDING_DELETION,
  /** Multi-Region keys only; the state outcomes are those of the table row. */
  updatePrimaryRegion: CRYPTO,
  /** PendingImport is N/A in the table (asymmetric keys); see header. */
  verify: CRYPTO,
  /** PendingImport is N/A in the table (HMAC keys); see header. */
  verifyMac: CRYPTO,
};
