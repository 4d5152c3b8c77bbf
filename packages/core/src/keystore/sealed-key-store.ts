/**
 * Record seals (docs/FORMAT.md §4.1): a KeyStore decorator that seals every key and alias record
 * it writes with a MAC under the root key, and refuses every record it reads whose seal is
 * missing, malformed, under a root key the HSM does not hold, wrong, or (keys only) older than
 * one this process already saw. The Kms talks to the store only through it, so a store writer
 * without the root key cannot re-enable a key, cancel a deletion, grant itself access or
 * repoint an alias: the record is refused with a RootKeyError instead of obeyed.
 */
import { KeyStoreConflictError, NotFoundError, RootKeyError } from "../errors.ts";
import type { SoftwareHsm } from "../hsm/software-hsm.ts";
import { retryOnConflict } from "../internal/compare-and-set.ts";
import type { KeyStore, ListOptions, StoredAlias, StoredKey } from "./key-store.ts";
import {
  canonicalAliasRecord,
  canonicalKeyRecord,
  formatSeal,
  parseSeal,
  type SealedRecordKind,
  sealCounter,
  sealInput,
} from "./record-seal.ts";

/** What to do with records that carry no seal (written by a release before record seals). */
export type UnsealedRecordsMode = "refuse" | "seal";

export interface SealedKeyStoreOptions {
  /** How messages name a key (the Kms passes its ARN); default `key <id>`. */
  readonly keyName?: (keyId: string) => string;
}

/** An alias incarnation: its name and creation time (both sealed). */
function incarnationOf(aliasName: string, createdAt: number): string {
  return `${aliasName}\u0000${createdAt}`;
}

/** The highest seal counter this process verified or wrote for a record, and when (a tick). */
interface Floor {
  readonly counter: number;
  readonly tick: number;
}

/**
 * An alias's floor: that of its latest incarnation seen (the highest createdAt), since an alias
 * deleted and created again, by any instance, starts over at counter 1. So an older record of
 * that incarnation (an earlier target) is refused; one of an earlier incarnation is not told
 * apart from a re-creation, and leaves the floor as it is. One floor per name, not per
 * incarnation: an alias created and deleted over and over costs no memory per cycle.
 */
interface AliasFloor extends Floor {
  readonly createdAt: number;
}

/**
 * Counters of alias incarnations this process deleted, newest last, for createAlias alone: an
 * alias deleted and created again within the same millisecond is the same incarnation to other
 * instances, which hold its old floor. Bounded: only a re-creation in the same millisecond as
 * the deletion needs one.
 */
const DELETED_ALIAS_COUNTERS = 1024;

/**
 * Last verified record per key: when a key is read again unchanged (same seal, same canonical
 * bytes), the HMAC is skipped. The canonical bytes are still recomputed and compared on every
 * read, so any change to the record is verified in full. Bounded, oldest entry evicted first.
 */
const VERIFIED_CACHE_SIZE = 4096;

/**
 * Whether nothing in a key record can change in place: then having verified this very object
 * once is as good as verifying it again. Stores that cache records hand out the same frozen
 * object on every read, so the common read costs a few isFrozen calls instead of rebuilding the
 * canonical JSON. (The bytes of a version cannot be frozen; only code inside this process could
 * change them, and wrapped material is authenticated again when it is unwrapped.)
 */
function isDeeplyFrozen(key: StoredKey): boolean {
  if (
    !Object.isFrozen(key) ||
    !Object.isFrozen(key.rotation) ||
    !Object.isFrozen(key.tags) ||
    !Object.isFrozen(key.versions)
  ) {
    return false;
  }
  for (const tag of key.tags) if (!Object.isFrozen(tag)) return false;
  for (const version of key.versions) if (!Object.isFrozen(version)) return false;
  if (key.grants === undefined) return true;
  if (!Object.isFrozen(key.grants)) return false;
  for (const grant of key.grants) {
    if (!Object.isFrozen(grant) || !Object.isFrozen(grant.operations)) return false;
    const c = grant.constraints;
    if (c === undefined) continue;
    if (!Object.isFrozen(c)) return false;
    if (c.encryptionContextEquals !== undefined && !Object.isFrozen(c.encryptionContextEquals)) {
      return false;
    }
    if (c.encryptionContextSubset !== undefined && !Object.isFrozen(c.encryptionContextSubset)) {
      return false;
    }
  }
  return true;
}

const UPGRADE_HINT =
  'if the store was written by a release without record seals, open it once with unsealedRecords: "seal"';

export class SealedKeyStore implements KeyStore {
  readonly #raw: KeyStore;
  readonly #hsm: SoftwareHsm;
  readonly #keyName: (keyId: string) => string;
  /** Floors of keys, by key id; dropped when this process deletes the key. */
  readonly #keyFloors = new Map<string, Floor>();
  /** Floors of aliases, by name; dropped when this process deletes the alias. */
  readonly #aliasFloors = new Map<string, AliasFloor>();
  readonly #deletedAliasCounters = new Map<string, number>();
  #tick = 0;
  readonly #verified = new Map<string, { readonly seal: string; readonly canonical: string }>();
  /** Deeply frozen records verified as these very objects, with their seal counter. */
  readonly #verifiedObjects = new WeakMap<StoredKey | StoredAlias, number>();

  constructor(raw: KeyStore, hsm: SoftwareHsm, options: SealedKeyStoreOptions = {}) {
    this.#raw = raw;
    this.#hsm = hsm;
    this.#keyName = options.keyName ?? ((keyId) => `key ${keyId}`);
  }

  get description(): string {
    return this.#raw.description;
  }

  /**
   * How many rollback floors and counters of deleted aliases this store holds in memory (tests
   * check that they stay bounded as keys and aliases come and go).
   */
  get retainedFloors(): number {
    return this.#keyFloors.size + this.#aliasFloors.size + this.#deletedAliasCounters.size;
  }

  // ---- keys ----

  async getKey(keyId: string): Promise<StoredKey | undefined> {
    const since = this.#tick;
    const key = await this.#raw.getKey(keyId);
    if (key === undefined) return undefined;
    // The seal binds the record to its own key id, not to the row it was found in: a store that
    // keeps records as documents under a key of its own could hand out another key's record.
    if (key.keyId !== keyId) {
      throw new RootKeyError(
        `${this.#keyName(keyId)} in key store ${this.description} holds the record of ` +
          `another key (${key.keyId}); the store was altered or mixed with another`,
      );
    }
    this.#verifyKey(key, since);
    return key;
  }

  async listKeys(options: ListOptions): Promise<readonly StoredKey[]> {
    const since = this.#tick;
    const page = await this.#raw.listKeys(options);
    // Fail closed: one bad record fails the page, rather than a page that silently skips it.
    for (const key of page) this.#verifyKey(key, since);
    return page;
  }

  async createKey(key: StoredKey): Promise<void> {
    const sealed = this.sealKey(key, 1);
    await this.#raw.createKey(sealed);
    this.#raiseKey(key.keyId, 1);
  }

  async updateKey(key: StoredKey): Promise<void> {
    // `key` is the record read (and verified) plus the change, so it still carries the seal it
    // replaces; the floor covers callers that built a record without one.
    const counter =
      Math.max(sealCounter(key.seal) ?? 0, this.#keyFloors.get(key.keyId)?.counter ?? 0) + 1;
    await this.#raw.updateKey(this.sealKey(key, counter));
    this.#raiseKey(key.keyId, counter);
  }

  /**
   * Once the key is gone its floor goes too (key ids are never reused): a destroyed key's
   * records are not protected from replay (FORMAT §4.1 item 9), and floors of every key ever
   * destroyed would otherwise stay in memory for the life of the process.
   */
  async deleteKey(keyId: string, revision: number): Promise<void> {
    this.#verified.delete(keyId);
    await this.#raw.deleteKey(keyId, revision);
    this.#keyFloors.delete(keyId);
  }

  // ---- aliases ----

  async getAlias(aliasName: string): Promise<StoredAlias | undefined> {
    const since = this.#tick;
    const alias = await this.#raw.getAlias(aliasName);
    if (alias === undefined) return undefined;
    // As for keys: another alias's record, found under this name, would repoint this alias.
    if (alias.aliasName !== aliasName) {
      throw new RootKeyError(
        `alias ${aliasName} in key store ${this.description} holds the record of ` +
          `another alias (${alias.aliasName}); the store was altered or mixed with another`,
      );
    }
    this.#verifyAlias(alias, since);
    return alias;
  }

  async listAliases(
    options: ListOptions & { readonly targetKeyId?: string },
  ): Promise<readonly StoredAlias[]> {
    const since = this.#tick;
    const page = await this.#raw.listAliases(options);
    const target = options.targetKeyId;
    for (const alias of page) {
      // As for getAlias: a store that indexes records apart from their documents could list
      // another key's alias for this one, and kms:ResourceAliases would then count it.
      if (target !== undefined && alias.targetKeyId !== target) {
        throw new RootKeyError(
          `alias ${alias.aliasName} in key store ${this.description} was listed among the ` +
            `aliases of ${this.#keyName(target)} but points to ${alias.targetKeyId}; the store ` +
            "was altered or mixed with another",
        );
      }
      this.#verifyAlias(alias, since);
    }
    return page;
  }

  /**
   * Counter 1, or one more than this process saw for the same incarnation: an alias deleted and
   * created again within the same millisecond has the same name and createdAt as before, so
   * counting from 1 again would read as a rollback of the record it replaces.
   */
  async createAlias(alias: StoredAlias): Promise<void> {
    const floor = this.#aliasFloors.get(alias.aliasName);
    const previous =
      floor !== undefined && floor.createdAt === alias.createdAt
        ? floor.counter
        : (this.#deletedAliasCounters.get(incarnationOf(alias.aliasName, alias.createdAt)) ?? 0);
    const counter = previous + 1;
    await this.#raw.createAlias(this.sealAlias(alias, counter));
    this.#raiseAlias(alias, counter);
  }

  /**
   * The seal covers createdAt, which updateAlias does not receive: it comes from the current
   * record, verified first. `seal` is ignored: this store seals what it writes. The write is a
   * compare-and-set on `expectedSeal`, the seal of the record the caller authorized the change
   * on (absent: the record read here), so it fails with KeyStoreConflictError when the alias
   * changed since the caller read it (moved by another instance, or deleted and created again),
   * whether before this store reads it again or between that read and the write. A write based
   * on the older record would replace a newer one with a lower seal counter (refused as rolled
   * back by whoever wrote the newer), or move the alias away from a key the caller was never
   * authorized on.
   */
  async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    _seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    const current = await this.getAlias(aliasName);
    if (current === undefined) throw new NotFoundError(`alias ${aliasName} does not exist`);
    if (expectedSeal !== undefined && (current.seal ?? null) !== expectedSeal) {
      throw new KeyStoreConflictError(`alias ${aliasName} changed concurrently`);
    }
    await this.#replaceAlias(current, targetKeyId, updatedAt);
  }

  /**
   * Passes `expectedSeal` on: the raw store deletes only the record the caller authorized. Then
   * drops the alias's floor (records of a deleted incarnation are not protected from replay,
   * FORMAT §4.1 item 9), keeping only its counter for a re-creation in the same millisecond.
   */
  async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    await this.#raw.deleteAlias(aliasName, expectedSeal);
    const floor = this.#aliasFloors.get(aliasName);
    if (floor === undefined) return;
    this.#aliasFloors.delete(aliasName);
    const incarnation = incarnationOf(aliasName, floor.createdAt);
    this.#deletedAliasCounters.delete(incarnation);
    this.#deletedAliasCounters.set(incarnation, floor.counter);
    if (this.#deletedAliasCounters.size > DELETED_ALIAS_COUNTERS) {
      this.#deletedAliasCounters.delete(this.#deletedAliasCounters.keys().next().value!);
    }
  }

  /**
   * Verifies an alias and seals it again, unchanged, under the current root key; read and
   * written again when another writer changed it in between (never with the fields of the
   * record it replaced).
   */
  resealAlias(aliasName: string): Promise<void> {
    return retryOnConflict(
      async () => {
        const current = await this.getAlias(aliasName);
        if (current === undefined) return;
        try {
          await this.#replaceAlias(current, current.targetKeyId, current.updatedAt);
        } catch (error) {
          if (!(error instanceof NotFoundError)) throw error;
        }
      },
      {
        exhausted: (cause) =>
          new KeyStoreConflictError(`alias ${aliasName} is being changed too often to seal`, {
            cause,
          }),
      },
    );
  }

  /** Writes `current` with a new target and time, by compare-and-set on its seal. */
  async #replaceAlias(current: StoredAlias, targetKeyId: string, updatedAt: number): Promise<void> {
    const counter = (sealCounter(current.seal) ?? 0) + 1;
    const { seal } = this.sealAlias({ ...current, targetKeyId, updatedAt }, counter);
    await this.#raw.updateAlias(
      current.aliasName,
      targetKeyId,
      updatedAt,
      seal,
      current.seal ?? null,
    );
    this.#raiseAlias(current, counter);
  }

  // ---- pass-through ----

  getSetting(name: string): Promise<string | undefined> {
    return this.#raw.getSetting(name);
  }

  putSettingIfAbsent(name: string, value: string): Promise<string> {
    return this.#raw.putSettingIfAbsent(name, value);
  }

  close(): Promise<void> {
    return this.#raw.close();
  }

  // ---- sealing ----

  /** `key` with a fresh seal under the current root key and `counter`. */
  sealKey(key: StoredKey, counter: number): StoredKey {
    return { ...key, seal: this.#seal("key", counter, canonicalKeyRecord(key)) };
  }

  /** `alias` with a fresh seal under the current root key and `counter`. */
  sealAlias(alias: StoredAlias, counter: number): StoredAlias {
    return { ...alias, seal: this.#seal("alias", counter, canonicalAliasRecord(alias)) };
  }

  #seal(kind: SealedRecordKind, counter: number, canonical: string): string {
    const mac = this.#hsm.recordSealMac(sealInput(kind, counter, canonical));
    return formatSeal(this.#hsm.rootKeyId, counter, mac);
  }

  /**
   * Raises a key's floor. `tick` moves only when a floor rises, so reads in flight can tell
   * whether the floor they compare against was set before they were issued.
   */
  #raiseKey(keyId: string, counter: number): void {
    const floor = this.#keyFloors.get(keyId);
    if (floor !== undefined && floor.counter >= counter) return;
    this.#keyFloors.set(keyId, { counter, tick: ++this.#tick });
  }

  /**
   * Raises an alias's floor, or moves it to a newer incarnation; a record of an older
   * incarnation leaves it as it is.
   */
  #raiseAlias(alias: StoredAlias, counter: number): void {
    const floor = this.#aliasFloors.get(alias.aliasName);
    if (floor !== undefined) {
      if (alias.createdAt < floor.createdAt) return;
      if (alias.createdAt === floor.createdAt && floor.counter >= counter) return;
    }
    this.#aliasFloors.set(alias.aliasName, {
      createdAt: alias.createdAt,
      counter,
      tick: ++this.#tick,
    });
  }

  /**
   * Refuses a record older than one this process saw. A floor raised after this read was
   * issued may be newer than what the store could answer (a concurrent write of ours landing
   * while the read was in flight): only a floor that was in place before the read is a lower
   * bound for it.
   */
  #checkFloor(floor: Floor | undefined, counter: number, since: number, name: () => string): void {
    if (floor !== undefined && counter < floor.counter && floor.tick <= since) {
      throw new RootKeyError(
        `${name()} in key store ${this.description} was rolled back to an older sealed record ` +
          `(seal counter ${counter}, this process saw ${floor.counter}); the store was altered ` +
          "or mixed with another",
      );
    }
  }

  #verifyKey(key: StoredKey, since: number): void {
    // Only deeply frozen records are remembered, and freezing cannot be undone: a remembered
    // record is still the one verified, with no walk over its grants (a key may hold 50 000).
    let counter = this.#verifiedObjects.get(key);
    if (counter === undefined) {
      counter = this.#check("key", key.seal, canonicalKeyRecord(key), key.keyId, () =>
        this.#keyName(key.keyId),
      );
      if (isDeeplyFrozen(key)) this.#verifiedObjects.set(key, counter);
    }
    this.#checkFloor(this.#keyFloors.get(key.keyId), counter, since, () =>
      this.#keyName(key.keyId),
    );
    this.#raiseKey(key.keyId, counter);
  }

  #verifyAlias(alias: StoredAlias, since: number): void {
    const name = () => `alias ${alias.aliasName}`;
    // An alias's fields are all primitives: a frozen alias cannot change.
    let counter = this.#verifiedObjects.get(alias);
    if (counter === undefined) {
      counter = this.#check("alias", alias.seal, canonicalAliasRecord(alias), undefined, name);
      if (Object.isFrozen(alias)) this.#verifiedObjects.set(alias, counter);
    }
    const floor = this.#aliasFloors.get(alias.aliasName);
    this.#checkFloor(
      floor?.createdAt === alias.createdAt ? floor : undefined,
      counter,
      since,
      name,
    );
    this.#raiseAlias(alias, counter);
  }

  /** Verifies a seal over `canonical`; returns its counter. @throws RootKeyError. */
  #check(
    kind: SealedRecordKind,
    seal: string | undefined,
    canonical: string,
    memoKey: string | undefined,
    name: () => string,
  ): number {
    const refuse = (why: string): never => {
      throw new RootKeyError(
        `${name()} in key store ${this.description} ${why}; the store was altered or mixed ` +
          "with another",
      );
    };
    if (typeof seal !== "string") {
      throw new RootKeyError(
        `${name()} in key store ${this.description} has no record seal: ${UPGRADE_HINT}; ` +
          "otherwise the store was altered",
      );
    }
    const parsed = parseSeal(seal);
    if (parsed === undefined) return refuse("has a malformed record seal");
    if (memoKey !== undefined) {
      const memo = this.#verified.get(memoKey);
      if (memo !== undefined && memo.seal === seal && memo.canonical === canonical) {
        return parsed.counter;
      }
    }
    const valid = this.#hsm.verifyRecordSealMac(
      parsed.rootKeyId,
      sealInput(kind, parsed.counter, canonical),
      parsed.mac,
    );
    if (valid === undefined) {
      return refuse(`is sealed under root key ${parsed.rootKeyId}, which this KMS does not hold`);
    }
    if (!valid) return refuse("does not match its record seal");
    if (memoKey !== undefined) {
      this.#verified.delete(memoKey);
      if (this.#verified.size >= VERIFIED_CACHE_SIZE) {
        this.#verified.delete(this.#verified.keys().next().value!);
      }
      this.#verified.set(memoKey, { seal, canonical });
    }
    return parsed.counter;
  }
}

/** A record left unsealed by an earlier release, reported by {@link sealUnsealedRecords}. */
export type SealedRecord =
  | { readonly kind: "key"; readonly key: StoredKey }
  | { readonly kind: "alias"; readonly alias: StoredAlias };

const PAGE = 100;

/**
 * Fails fast when the first page of keys or aliases holds a record without a seal: a store
 * written by a release before record seals (which writes no record with one), or one whose
 * seals were stripped. Only the first page, so that opening a large store stays cheap; every
 * later read checks its records anyway.
 * @throws RootKeyError naming the `unsealedRecords: "seal"` option.
 */
export async function assertSealedStore(
  raw: KeyStore,
  keyName: (keyId: string) => string,
): Promise<void> {
  const key = (await raw.listKeys({ limit: PAGE })).find((k) => k.seal === undefined);
  const alias =
    key === undefined
      ? (await raw.listAliases({ limit: PAGE })).find((a) => a.seal === undefined)
      : undefined;
  if (key === undefined && alias === undefined) return;
  const what = key !== undefined ? keyName(key.keyId) : `alias ${alias!.aliasName}`;
  throw new RootKeyError(
    `key store ${raw.description} holds records without a record seal (${what}): ` +
      `${UPGRADE_HINT} (then remove the option); otherwise the store was altered`,
  );
}

/**
 * Seals every key and alias that has no seal, once, under the current root key (counter 1),
 * writing through the raw store by compare-and-set for keys. A record that has a seal is never
 * touched, whether or not it verifies: a failing seal stays refused. This trusts the unsealed
 * records as they are now (trust on first use). Calls `onSealed` after each record it sealed.
 */
export async function sealUnsealedRecords(
  raw: KeyStore,
  sealed: SealedKeyStore,
  onSealed: (record: SealedRecord) => Promise<void> | void = () => {},
): Promise<void> {
  for (let after: string | undefined; ; ) {
    const page = await raw.listKeys({ limit: PAGE, ...(after === undefined ? {} : { after }) });
    for (const key of page) {
      if (key.seal === undefined && (await sealKeyRecord(raw, sealed, key))) {
        await onSealed({ kind: "key", key });
      }
    }
    if (page.length < PAGE) break;
    after = page[page.length - 1]!.keyId;
  }
  for (let after: string | undefined; ; ) {
    const page = await raw.listAliases({ limit: PAGE, ...(after === undefined ? {} : { after }) });
    for (const listed of page) {
      if (listed.seal !== undefined) continue;
      const alias = await raw.getAlias(listed.aliasName);
      if (alias === undefined || alias.seal !== undefined) continue;
      const { seal } = sealed.sealAlias(alias, 1);
      try {
        // Only while still unsealed: an update by another instance meanwhile is not undone.
        await raw.updateAlias(alias.aliasName, alias.targetKeyId, alias.updatedAt, seal, null);
      } catch (error) {
        if (error instanceof NotFoundError || error instanceof KeyStoreConflictError) continue;
        throw error;
      }
      await onSealed({ kind: "alias", alias });
    }
    if (page.length < PAGE) break;
    after = page[page.length - 1]!.aliasName;
  }
}

/** Seals one unsealed key by compare-and-set; false when it is gone or got a seal meanwhile. */
function sealKeyRecord(raw: KeyStore, sealed: SealedKeyStore, listed: StoredKey): Promise<boolean> {
  return retryOnConflict(
    async (attempt) => {
      // The listed record first; after a lost write, the one stored now.
      const key = attempt === 0 ? listed : await raw.getKey(listed.keyId);
      if (key === undefined || key.seal !== undefined) return false;
      try {
        await raw.updateKey({ ...sealed.sealKey(key, 1), revision: key.revision + 1 });
        return true;
      } catch (error) {
        if (error instanceof NotFoundError) return false;
        throw error;
      }
    },
    {
      exhausted: (cause) =>
        new KeyStoreConflictError(`key ${listed.keyId} is being changed too often to seal`, {
          cause,
        }),
    },
  );
}
