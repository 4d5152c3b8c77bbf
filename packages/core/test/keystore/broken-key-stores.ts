/**
 * Key stores that each break one promise of the KeyStore contract, built on MemoryKeyStore the
 * way a DynamoDB or Redis store gets it wrong. The conformance suite must fail every one of them
 * (conformance-catches-broken-stores.test.ts checks it); a broken store the suite passes is a
 * promise the suite does not check.
 */
import {
  KeyStoreConflictError,
  type ListOptions,
  MemoryKeyStore,
  NotFoundError,
  type StoredAlias,
  type StoredKey,
} from "@kms/core";

type AliasListOptions = ListOptions & { readonly targetKeyId?: string };

const ALL = 1_000_000;

/** Lets other pending callers run, as a second network round trip would. */
const roundTrip = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const byCodeUnit = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);

/** Ignores the expected revision: last writer wins (a blind PutItem). */
class IgnoresKeyRevision extends MemoryKeyStore {
  override async updateKey(key: StoredKey): Promise<void> {
    const current = await super.getKey(key.keyId);
    if (current === undefined) throw new NotFoundError(`key ${key.keyId} does not exist`);
    await super.updateKey({ ...key, revision: current.revision + 1 });
  }
}

/** Deletes whatever revision is stored. */
class IgnoresDeleteRevision extends MemoryKeyStore {
  override async deleteKey(keyId: string, _revision: number): Promise<void> {
    const current = await super.getKey(keyId);
    await super.deleteKey(keyId, current?.revision ?? 0);
  }
}

/** Checks the revision, then writes in a second request: two writers can both pass the check. */
class CheckThenWriteKey extends MemoryKeyStore {
  override async updateKey(key: StoredKey): Promise<void> {
    const current = await super.getKey(key.keyId);
    if (current === undefined) throw new NotFoundError(`key ${key.keyId} does not exist`);
    if (current.revision !== key.revision - 1) throw new KeyStoreConflictError("conflict");
    await roundTrip();
    await super.updateKey({
      ...key,
      revision: ((await super.getKey(key.keyId))?.revision ?? 0) + 1,
    });
  }
}

/** Maps a failed condition to NotFoundError, as if the item were gone. */
class ConflictAsNotFound extends MemoryKeyStore {
  override async updateKey(key: StoredKey): Promise<void> {
    await asNotFound(super.updateKey(key));
  }
  override async deleteKey(keyId: string, revision: number): Promise<void> {
    await asNotFound(super.deleteKey(keyId, revision));
  }
  override async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    await asNotFound(super.updateAlias(aliasName, targetKeyId, updatedAt, seal, expectedSeal));
  }
  override async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    await asNotFound(super.deleteAlias(aliasName, expectedSeal));
  }
}

async function asNotFound(write: Promise<void>): Promise<void> {
  try {
    await write;
  } catch (error) {
    if (error instanceof KeyStoreConflictError) throw new NotFoundError("not found");
    throw error;
  }
}

/** A conditional write on a missing item fails its condition: reported as a conflict. */
class NotFoundAsConflict extends MemoryKeyStore {
  override async updateKey(key: StoredKey): Promise<void> {
    await asConflict(super.updateKey(key));
  }
  override async deleteKey(keyId: string, revision: number): Promise<void> {
    await asConflict(super.deleteKey(keyId, revision));
  }
  override async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    if (expectedSeal === undefined) return super.deleteAlias(aliasName);
    await asConflict(super.deleteAlias(aliasName, expectedSeal));
  }
}

async function asConflict(write: Promise<void>): Promise<void> {
  try {
    await write;
  } catch (error) {
    if (error instanceof NotFoundError) throw new KeyStoreConflictError("condition failed");
    throw error;
  }
}

/** Deletes the key but leaves its aliases behind. */
class DeleteKeyKeepsAliases extends MemoryKeyStore {
  override async deleteKey(keyId: string, revision: number): Promise<void> {
    const aliases = await super.listAliases({ limit: ALL, targetKeyId: keyId });
    await super.deleteKey(keyId, revision);
    for (const alias of aliases) await super.createAlias(alias);
  }
}

/** Deletes the key, then its aliases in a second request: readers see aliases of a gone key. */
class DeleteKeyThenAliases extends MemoryKeyStore {
  override async deleteKey(keyId: string, revision: number): Promise<void> {
    const aliases = await super.listAliases({ limit: ALL, targetKeyId: keyId });
    await super.deleteKey(keyId, revision);
    for (const alias of aliases) await super.createAlias(alias);
    await new Promise((resolve) => setTimeout(resolve, 5));
    for (const alias of aliases) await super.deleteAlias(alias.aliasName);
  }
}

/** Keeps the very objects the caller wrote (hands out fresh copies of them on reads). */
class KeepsCallersRecords extends MemoryKeyStore {
  readonly #keys = new Map<string, StoredKey>();
  readonly #aliases = new Map<string, StoredAlias>();

  override async getKey(keyId: string): Promise<StoredKey | undefined> {
    const kept = this.#keys.get(keyId);
    return (await super.getKey(keyId)) && kept && structuredClone(kept);
  }
  override async listKeys(options: ListOptions): Promise<readonly StoredKey[]> {
    return (await super.listKeys(options)).map((k) => structuredClone(this.#keys.get(k.keyId)!));
  }
  override async createKey(key: StoredKey): Promise<void> {
    await super.createKey(key);
    this.#keys.set(key.keyId, key);
  }
  override async updateKey(key: StoredKey): Promise<void> {
    await super.updateKey(key);
    this.#keys.set(key.keyId, key);
  }
  override async getAlias(aliasName: string): Promise<StoredAlias | undefined> {
    const stored = await super.getAlias(aliasName);
    const kept = this.#aliases.get(aliasName);
    return stored && kept ? { ...kept } : stored;
  }
  override async createAlias(alias: StoredAlias): Promise<void> {
    await super.createAlias(alias);
    this.#aliases.set(alias.aliasName, alias);
  }
  override async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    await super.updateAlias(aliasName, targetKeyId, updatedAt, seal, expectedSeal);
    this.#aliases.delete(aliasName);
  }
  override async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    await super.deleteAlias(aliasName, expectedSeal);
    this.#aliases.delete(aliasName);
  }
}

/** Caches one unfrozen object per record (dropped on writes) and hands it to every reader. */
class SharesMutableRecords extends MemoryKeyStore {
  readonly #keys = new Map<string, StoredKey>();
  readonly #aliases = new Map<string, StoredAlias>();

  #key(stored: StoredKey): StoredKey {
    let cached = this.#keys.get(stored.keyId);
    if (cached === undefined) {
      cached = structuredClone(stored);
      this.#keys.set(stored.keyId, cached);
    }
    return cached;
  }
  #alias(stored: StoredAlias): StoredAlias {
    let cached = this.#aliases.get(stored.aliasName);
    if (cached === undefined) {
      cached = { ...stored };
      this.#aliases.set(stored.aliasName, cached);
    }
    return cached;
  }
  override async getKey(keyId: string): Promise<StoredKey | undefined> {
    const stored = await super.getKey(keyId);
    return stored && this.#key(stored);
  }
  override async listKeys(options: ListOptions): Promise<readonly StoredKey[]> {
    return (await super.listKeys(options)).map((k) => this.#key(k));
  }
  override async updateKey(key: StoredKey): Promise<void> {
    await super.updateKey(key);
    this.#keys.delete(key.keyId);
  }
  override async deleteKey(keyId: string, revision: number): Promise<void> {
    await super.deleteKey(keyId, revision);
    this.#keys.delete(keyId);
    this.#aliases.clear();
  }
  override async getAlias(aliasName: string): Promise<StoredAlias | undefined> {
    const stored = await super.getAlias(aliasName);
    return stored && this.#alias(stored);
  }
  override async listAliases(options: AliasListOptions): Promise<readonly StoredAlias[]> {
    return (await super.listAliases(options)).map((a) => this.#alias(a));
  }
  override async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    await super.updateAlias(aliasName, targetKeyId, updatedAt, seal, expectedSeal);
    this.#aliases.delete(aliasName);
  }
  override async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    await super.deleteAlias(aliasName, expectedSeal);
    this.#aliases.delete(aliasName);
  }
}

/** Pages from a full listing with `page`, the bug under test. */
abstract class PagesBadly extends MemoryKeyStore {
  protected abstract page<T>(
    sorted: readonly T[],
    id: (item: T) => string,
    options: AliasListOptions,
    target?: (item: T) => string,
  ): T[];

  override async listKeys(options: ListOptions): Promise<readonly StoredKey[]> {
    const all = await super.listKeys({ limit: ALL });
    return this.page(all, (k) => k.keyId, options);
  }
  override async listAliases(options: AliasListOptions): Promise<readonly StoredAlias[]> {
    const all = await super.listAliases({ limit: ALL });
    return this.page(
      all,
      (a) => a.aliasName,
      options,
      (a) => a.targetKeyId,
    );
  }
}

/** Treats `after` as inclusive: the last item of a page starts the next one again. */
class PagesInclusive extends PagesBadly {
  protected page<T>(
    sorted: readonly T[],
    id: (item: T) => string,
    o: AliasListOptions,
    target?: (item: T) => string,
  ): T[] {
    return sorted
      .filter((x) => o.after === undefined || id(x) >= o.after)
      .filter((x) => o.targetKeyId === undefined || target?.(x) === o.targetKeyId)
      .slice(0, o.limit);
  }
}

/** Sorts by code unit but compares the bound by locale (a `localeCompare` cursor). */
class PagesByLocale extends PagesBadly {
  protected page<T>(
    sorted: readonly T[],
    id: (item: T) => string,
    o: AliasListOptions,
    target?: (item: T) => string,
  ): T[] {
    return sorted
      .filter((x) => o.after === undefined || id(x).localeCompare(o.after) > 0)
      .filter((x) => o.targetKeyId === undefined || target?.(x) === o.targetKeyId)
      .slice(0, o.limit);
  }
}

/** Applies the target filter after the limit (DynamoDB Limit + FilterExpression): short pages. */
class FiltersAfterLimit extends PagesBadly {
  protected page<T>(
    sorted: readonly T[],
    id: (item: T) => string,
    o: AliasListOptions,
    target?: (item: T) => string,
  ): T[] {
    return sorted
      .filter((x) => o.after === undefined || byCodeUnit(id(x), o.after) > 0)
      .slice(0, o.limit)
      .filter((x) => o.targetKeyId === undefined || target?.(x) === o.targetKeyId);
  }
}

/** Returns one item fewer than asked while more remain: every page looks like the last. */
class ShortPages extends PagesBadly {
  protected page<T>(
    sorted: readonly T[],
    id: (item: T) => string,
    o: AliasListOptions,
    target?: (item: T) => string,
  ): T[] {
    return sorted
      .filter((x) => o.after === undefined || byCodeUnit(id(x), o.after) > 0)
      .filter((x) => o.targetKeyId === undefined || target?.(x) === o.targetKeyId)
      .slice(0, Math.max(0, o.limit - 1));
  }
}

/** Drops `expectedSeal`: alias writes are unconditional. */
class IgnoresAliasSeal extends MemoryKeyStore {
  override async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
  ): Promise<void> {
    await super.updateAlias(aliasName, targetKeyId, updatedAt, seal);
  }
  override async deleteAlias(aliasName: string): Promise<void> {
    await super.deleteAlias(aliasName);
  }
}

/** Reads `expectedSeal: null` as "no condition" rather than "stored without a seal". */
class NullSealUnconditional extends MemoryKeyStore {
  override async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    await super.updateAlias(aliasName, targetKeyId, updatedAt, seal, expectedSeal ?? undefined);
  }
  override async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    await super.deleteAlias(aliasName, expectedSeal ?? undefined);
  }
}

/** Stores an empty alias seal as none (an attribute left out because it is empty). */
class EmptyAliasSealAsNone extends MemoryKeyStore {
  override async createAlias(alias: StoredAlias): Promise<void> {
    const { seal, ...rest } = alias;
    await super.createAlias(seal === "" ? rest : alias);
  }
  override async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    const expected = expectedSeal === "" ? null : expectedSeal;
    await super.updateAlias(aliasName, targetKeyId, updatedAt, seal || undefined, expected);
  }
  override async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    await super.deleteAlias(aliasName, expectedSeal === "" ? null : expectedSeal);
  }
}

/** Overwrites a setting: last writer wins. */
class SettingsOverwrite extends MemoryKeyStore {
  readonly #settings = new Map<string, string>();
  override async getSetting(name: string): Promise<string | undefined> {
    return this.#settings.get(name);
  }
  override async putSettingIfAbsent(name: string, value: string): Promise<string> {
    this.#settings.set(name, value);
    return value;
  }
}

/** Reads, then writes in a second request: racing writers each keep their own value. */
class SettingsCheckThenWrite extends MemoryKeyStore {
  readonly #settings = new Map<string, string>();
  override async getSetting(name: string): Promise<string | undefined> {
    return this.#settings.get(name);
  }
  override async putSettingIfAbsent(name: string, value: string): Promise<string> {
    const existing = this.#settings.get(name);
    if (existing !== undefined) return existing;
    await roundTrip();
    this.#settings.set(name, value);
    return value;
  }
}

export interface BrokenKeyStore {
  readonly name: string;
  /** The promise it breaks. */
  readonly breaks: string;
  /** Title of a conformance case that must fail for it (the case written for that promise). */
  readonly caughtBy: string;
  readonly open: () => MemoryKeyStore;
}

const broken = (
  name: string,
  breaks: string,
  caughtBy: string,
  open: () => MemoryKeyStore,
): BrokenKeyStore => ({ name, breaks, caughtBy, open });

export const brokenKeyStores: readonly BrokenKeyStore[] = [
  broken(
    "IgnoresKeyRevision",
    "updateKey is a compare-and-set on revision",
    "rejects a stale revision with KeyStoreConflictError and keeps the stored record",
    () => new IgnoresKeyRevision(),
  ),
  broken(
    "IgnoresDeleteRevision",
    "deleteKey is a compare-and-set on revision",
    "rejects a stale revision with KeyStoreConflictError and keeps the key",
    () => new IgnoresDeleteRevision(),
  ),
  broken(
    "CheckThenWriteKey",
    "updateKey checks and writes in one atomic step",
    "lets exactly one of N parallel updates with the same expected revision win",
    () => new CheckThenWriteKey(),
  ),
  broken(
    "ConflictAsNotFound",
    "a lost compare-and-set is KeyStoreConflictError",
    "updates an alias only while its stored seal is expectedSeal (compare-and-set)",
    () => new ConflictAsNotFound(),
  ),
  broken(
    "NotFoundAsConflict",
    "a missing record is NotFoundError",
    "rejects an update of a key that does not exist with NotFoundError",
    () => new NotFoundAsConflict(),
  ),
  broken(
    "DeleteKeyKeepsAliases",
    "deleteKey removes the key's aliases",
    "deletes every alias that targets the key and no other alias",
    () => new DeleteKeyKeepsAliases(),
  ),
  broken(
    "DeleteKeyThenAliases",
    "deleteKey removes the aliases in the same step",
    "removes the key and its aliases in one step: no reader sees an alias outlive its key",
    () => new DeleteKeyThenAliases(),
  ),
  broken(
    "KeepsCallersRecords",
    "the store keeps its own copy of what it is given",
    "keeps what was written when the caller then changes the record it passed",
    () => new KeepsCallersRecords(),
  ),
  broken(
    "SharesMutableRecords",
    "records handed out cannot be changed in place",
    "hands out records a caller cannot change in place (frozen, or a copy per read)",
    () => new SharesMutableRecords(),
  ),
  broken(
    "PagesInclusive",
    "after is an exclusive bound (no duplicates)",
    "pages with after (exclusive) and limit until the end",
    () => new PagesInclusive(),
  ),
  broken(
    "PagesByLocale",
    "the bound is compared in the listing's code-unit order (no gaps)",
    "fills every page unless the listing ended, from any bound",
    () => new PagesByLocale(),
  ),
  broken(
    "FiltersAfterLimit",
    "alias pages are full unless the listing ended, with a target filter too",
    "fills every alias page unless the listing ended, with and without a target filter",
    () => new FiltersAfterLimit(),
  ),
  broken(
    "ShortPages",
    "pages are full unless the listing ended",
    "fills every page unless the listing ended, from any bound",
    () => new ShortPages(),
  ),
  broken(
    "IgnoresAliasSeal",
    "alias writes are a compare-and-set on expectedSeal",
    "deletes an alias only while its stored seal is expectedSeal (compare-and-set)",
    () => new IgnoresAliasSeal(),
  ),
  broken(
    "NullSealUnconditional",
    "expectedSeal null means stored without a seal, not no condition",
    "updates an alias only while its stored seal is expectedSeal (compare-and-set)",
    () => new NullSealUnconditional(),
  ),
  broken(
    "EmptyAliasSealAsNone",
    "an alias seal is kept verbatim, the empty one too",
    "keeps an empty alias seal apart from an absent one, also as expectedSeal",
    () => new EmptyAliasSealAsNone(),
  ),
  broken(
    "SettingsOverwrite",
    "putSettingIfAbsent: the first writer wins",
    "keeps the first value written: first writer wins",
    () => new SettingsOverwrite(),
  ),
  broken(
    "SettingsCheckThenWrite",
    "putSettingIfAbsent is one atomic step",
    "agrees on one value when writers race",
    () => new SettingsCheckThenWrite(),
  ),
];
