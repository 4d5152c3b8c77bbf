import { AlreadyExistsError, KeyStoreConflictError, NotFoundError } from "../errors.ts";
import type {
  KeyStore,
  ListOptions,
  StoredAlias,
  StoredKey,
  StoredKeyVersion,
} from "./key-store.ts";
import { deepFreeze } from "./stored-json.ts";

function page<T>(sorted: readonly T[], id: (item: T) => string, options: ListOptions): T[] {
  const out: T[] = [];
  for (const item of sorted) {
    if (out.length >= options.limit) break;
    if (options.after !== undefined && id(item) <= options.after) continue;
    out.push(item);
  }
  return out;
}

/** The store's own copy of a version: bytes cannot be frozen, so they are copied. */
function copyVersion(v: StoredKeyVersion): StoredKeyVersion {
  return Object.freeze({
    ...v,
    wrappedMaterial: new Uint8Array(v.wrappedMaterial),
    ...(v.publicKey === undefined ? {} : { publicKey: new Uint8Array(v.publicKey) }),
  });
}

function freezeKey(key: StoredKey): StoredKey {
  return Object.freeze({
    ...key,
    rotation: Object.freeze({ ...key.rotation }),
    tags: Object.freeze(key.tags.map((t) => Object.freeze({ ...t }))),
    versions: Object.freeze(key.versions.map(copyVersion)),
    ...(key.grants === undefined ? {} : { grants: deepFreeze(structuredClone(key.grants)) }),
  });
}

/**
 * Keys and aliases in a Map: the default when no store is configured, and the reference the
 * conformance suite is checked against. Records are frozen so that code mutating a record it
 * read (instead of writing a new one) fails loudly in tests.
 */
export class MemoryKeyStore implements KeyStore {
  readonly description = "memory";
  readonly #keys = new Map<string, StoredKey>();
  readonly #aliases = new Map<string, StoredAlias>();
  readonly #settings = new Map<string, string>();

  async getKey(keyId: string): Promise<StoredKey | undefined> {
    return this.#keys.get(keyId);
  }

  async listKeys(options: ListOptions): Promise<readonly StoredKey[]> {
    const sorted = [...this.#keys.values()].sort((a, b) => (a.keyId < b.keyId ? -1 : 1));
    return page(sorted, (k) => k.keyId, options);
  }

  async createKey(key: StoredKey): Promise<void> {
    if (this.#keys.has(key.keyId)) throw new AlreadyExistsError(`key ${key.keyId} already exists`);
    this.#keys.set(key.keyId, freezeKey(key));
  }

  async updateKey(key: StoredKey): Promise<void> {
    const current = this.#keys.get(key.keyId);
    if (current === undefined) throw new NotFoundError(`key ${key.keyId} does not exist`);
    if (current.revision !== key.revision - 1) {
      throw new KeyStoreConflictError(`key ${key.keyId} changed concurrently`);
    }
    this.#keys.set(key.keyId, freezeKey(key));
  }

  async deleteKey(keyId: string, revision: number): Promise<void> {
    const current = this.#keys.get(keyId);
    if (current === undefined) throw new NotFoundError(`key ${keyId} does not exist`);
    if (current.revision !== revision) {
      throw new KeyStoreConflictError(`key ${keyId} changed concurrently`);
    }
    this.#keys.delete(keyId);
    for (const [name, alias] of this.#aliases) {
      if (alias.targetKeyId === keyId) this.#aliases.delete(name);
    }
  }

  async getAlias(aliasName: string): Promise<StoredAlias | undefined> {
    return this.#aliases.get(aliasName);
  }

  async listAliases(
    options: ListOptions & { readonly targetKeyId?: string },
  ): Promise<readonly StoredAlias[]> {
    const sorted = [...this.#aliases.values()]
      .filter((a) => options.targetKeyId === undefined || a.targetKeyId === options.targetKeyId)
      .sort((a, b) => (a.aliasName < b.aliasName ? -1 : 1));
    return page(sorted, (a) => a.aliasName, options);
  }

  async createAlias(alias: StoredAlias): Promise<void> {
    if (this.#aliases.has(alias.aliasName)) {
      throw new AlreadyExistsError(`alias ${alias.aliasName} already exists`);
    }
    this.#aliases.set(alias.aliasName, Object.freeze({ ...alias }));
  }

  async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    const current = this.#aliases.get(aliasName);
    if (current === undefined) throw new NotFoundError(`alias ${aliasName} does not exist`);
    if (expectedSeal !== undefined && (current.seal ?? null) !== expectedSeal) {
      throw new KeyStoreConflictError(`alias ${aliasName} changed concurrently`);
    }
    const { seal: _previous, ...rest } = current;
    this.#aliases.set(
      aliasName,
      Object.freeze({ ...rest, targetKeyId, updatedAt, ...(seal === undefined ? {} : { seal }) }),
    );
  }

  async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    const current = this.#aliases.get(aliasName);
    if (current === undefined) throw new NotFoundError(`alias ${aliasName} does not exist`);
    if (expectedSeal !== undefined && (current.seal ?? null) !== expectedSeal) {
      throw new KeyStoreConflictError(`alias ${aliasName} changed concurrently`);
    }
    this.#aliases.delete(aliasName);
  }

  async getSetting(name: string): Promise<string | undefined> {
    return this.#settings.get(name);
  }

  async putSettingIfAbsent(name: string, value: string): Promise<string> {
    const existing = this.#settings.get(name);
    if (existing !== undefined) return existing;
    this.#settings.set(name, value);
    return value;
  }

  async close(): Promise<void> {}
}
