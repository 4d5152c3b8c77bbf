/**
 * Persistence for keys and aliases. Records hold key material only wrapped under the root key;
 * a store never sees plaintext material. Every key write is a compare-and-set on `revision`, and
 * every alias update or delete the Kms makes one on the alias's seal, so several processes (or
 * instances on one PostgreSQL) never lose an update: the facade re-reads, re-authorizes and
 * retries on KeyStoreConflictError.
 *
 * Records belong to the store. A write keeps a copy of what it is given (bytes included), never
 * the caller's objects, and a read hands out a record the caller cannot change in place: deeply
 * frozen (the same object on every read is fine) or a fresh copy per read. The bytes of a
 * version are the one exception: a Uint8Array cannot be frozen, so a store may hand out the
 * same one on every read, and callers must not write to it. `describeKeyStoreConformance` from
 * `@kms/core/testing` checks every promise made here.
 */
import type { KeySpec, KeyState, KeyUsage, OriginType, RotationType } from "../types.ts";

/** One backing key (AWS: key material) of a KMS key. Versions only ever accumulate. */
export interface StoredKeyVersion {
  /** 1 for the material created with the key, +1 per rotation. */
  readonly version: number;
  readonly createdAt: number;
  /** Absent for the key's original material. */
  readonly rotationType?: RotationType;
  /** Public identifier of the material (hex), as AWS's KeyMaterialId. */
  readonly keyMaterialId: string;
  /** Key material wrapped under the root key (see docs/FORMAT.md §Wrapped key material). */
  readonly wrappedMaterial: Uint8Array;
  /** DER SubjectPublicKeyInfo for asymmetric keys; public by nature, so stored as is. */
  readonly publicKey?: Uint8Array;
}

export interface StoredRotationSettings {
  readonly enabled: boolean;
  readonly periodInDays: number;
  /** Epoch ms at which automatic rotation is due; set while enabled. */
  readonly nextRotationAt?: number;
  readonly onDemandRotations: number;
}

export interface StoredKey {
  readonly keyId: string;
  /** Compare-and-set counter: 1 on create, +1 on every successful update. */
  readonly revision: number;
  readonly createdAt: number;
  readonly description: string;
  readonly keySpec: KeySpec;
  readonly keyUsage: KeyUsage;
  readonly origin: OriginType;
  readonly multiRegion: boolean;
  readonly keyState: KeyState;
  readonly deletionDate?: number;
  readonly pendingWindowInDays?: number;
  readonly rotation: StoredRotationSettings;
  readonly tags: readonly { readonly tagKey: string; readonly tagValue: string }[];
  /** Key policy document (JSON text); absent until the policy layer sets one. */
  readonly policy?: string;
  /** Grants on this key; absent or empty when none. Stored with the key so CAS covers them. */
  readonly grants?: readonly StoredGrant[];
  /** Ascending by version; never empty for a usable key. */
  readonly versions: readonly StoredKeyVersion[];
  readonly currentVersion: number;
  /**
   * Integrity seal the Kms computes over every other field but `revision` (docs/FORMAT.md
   * §4.1), so metadata edited in the store is refused on load. Opaque ASCII text of at most
   * 256 characters: stores persist it verbatim and never interpret it. Absent on records
   * written before 0.x seals existed (see `KmsOptions.unsealedRecords`).
   */
  readonly seal?: string;
}

/** A grant: permission for one principal to perform some operations on one key. */
export interface StoredGrant {
  readonly grantId: string;
  /** Idempotency name: createGrant with the same name and fields returns the same grant. */
  readonly name?: string;
  readonly granteePrincipal: string;
  readonly retiringPrincipal?: string;
  /** Principal that created the grant. */
  readonly issuingPrincipal: string;
  /** AWS operation names ("Encrypt", "Decrypt", "CreateGrant"…). */
  readonly operations: readonly string[];
  readonly constraints?: {
    readonly encryptionContextEquals?: Readonly<Record<string, string>>;
    readonly encryptionContextSubset?: Readonly<Record<string, string>>;
  };
  readonly createdAt: number;
}

export interface StoredAlias {
  readonly aliasName: string;
  readonly targetKeyId: string;
  readonly createdAt: number;
  readonly updatedAt: number;
  /** Integrity seal over the other fields, as `StoredKey.seal`; stores persist it verbatim. */
  readonly seal?: string;
}

/**
 * One page of a listing ordered by id in code-unit order (JavaScript's `<` on strings, as a
 * binary `COLLATE "C"` column; never a locale order).
 */
export interface ListOptions {
  /** Exclusive lower bound (the last id of the previous page); need not be a stored id. */
  readonly after?: string;
  /**
   * This many items, or fewer only when fewer remain after `after`: callers take a shorter
   * page as the end of the listing, so a store must not stop early (a store that filters by
   * `targetKeyId` after applying the limit hides aliases). 0 lists none.
   */
  readonly limit: number;
}

export interface KeyStore {
  /** Human-readable kind for messages ("memory", "sqlite:/path"). */
  readonly description: string;
  getKey(keyId: string): Promise<StoredKey | undefined>;
  /** Keys ordered by keyId. */
  listKeys(options: ListOptions): Promise<readonly StoredKey[]>;
  /**
   * Inserts a new key (revision must be 1). Once the promise resolves the key is durable.
   * @throws AlreadyExistsError when the key id exists.
   */
  createKey(key: StoredKey): Promise<void>;
  /**
   * Replaces a key if its stored revision is still `key.revision - 1`.
   * @throws KeyStoreConflictError when another writer got there first, NotFoundError when gone.
   */
  updateKey(key: StoredKey): Promise<void>;
  /**
   * Destroys a key and every alias that points to it, if its revision is still `revision`:
   * check, key and aliases in one atomic step, so no reader sees an alias outlive its key and
   * a failed delete leaves the aliases in place.
   * @throws KeyStoreConflictError when the stored revision is another, NotFoundError when gone.
   */
  deleteKey(keyId: string, revision: number): Promise<void>;
  getAlias(aliasName: string): Promise<StoredAlias | undefined>;
  /** Aliases ordered by name, optionally only those pointing to one key. */
  listAliases(
    options: ListOptions & { readonly targetKeyId?: string },
  ): Promise<readonly StoredAlias[]>;
  /** @throws AlreadyExistsError when the name is taken. */
  createAlias(alias: StoredAlias): Promise<void>;
  /**
   * Points an alias at another key; `seal` replaces the stored seal (absent: the alias is
   * stored without one). With `expectedSeal`, the compare-and-set of aliases: the write happens
   * only if the stored seal is still that one (`null`: the alias is still stored without one),
   * checked and written as one atomic step, as updateKey checks its revision. Seals compare
   * verbatim: `""` is a seal, which `null` does not match. Absent, the write is unconditional
   * (stores written before this parameter existed behave so).
   *
   * The Kms always passes the seal of the very alias record it authorized the call on, so that
   * a write based on an older read of the alias (another instance moved, deleted or re-created
   * it since) fails instead of replacing the newer record: the Kms then reads the alias again,
   * authorizes again and retries. A store that ignores `expectedSeal` loses such updates, moves
   * aliases away from keys the caller was never authorized on, and the instance that wrote the
   * newer record then refuses the alias as rolled back.
   * @throws NotFoundError when the alias does not exist; KeyStoreConflictError when
   * `expectedSeal` is given and the stored seal is another.
   */
  updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void>;
  /**
   * Deletes an alias. `expectedSeal` is the compare-and-set, as in updateAlias: the alias is
   * deleted only if its stored seal is still that one (`null`: stored without one), checked and
   * deleted as one atomic step; absent, the delete is unconditional. The Kms always passes the
   * seal of the alias it authorized DeleteAlias on, so that an alias another instance has since
   * moved to a key the caller has no rights on is not deleted on the strength of the old key.
   * @throws NotFoundError when the alias does not exist; KeyStoreConflictError when
   * `expectedSeal` is given and the stored seal is another.
   */
  deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void>;
  getSetting(name: string): Promise<string | undefined>;
  /** Stores `value` unless a value exists; returns whichever value is stored afterwards. */
  putSettingIfAbsent(name: string, value: string): Promise<string>;
  close(): Promise<void>;
}
