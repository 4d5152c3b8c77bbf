import {
  createKms,
  type KeyStore,
  type ListOptions,
  MemoryKeyStore,
  ROOT_KEY_LENGTH,
  RootKeyError,
  RootKeySource,
  type StoredAlias,
  type StoredKey,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { describe, expect, test } from "vitest";

/** A store that behaves like the memory store but is not one, as a durable store would be. */
class WrappedStore implements KeyStore {
  readonly description = "wrapped-memory";
  readonly #inner = new MemoryKeyStore();
  getKey(keyId: string) {
    return this.#inner.getKey(keyId);
  }
  listKeys(options: ListOptions) {
    return this.#inner.listKeys(options);
  }
  createKey(key: StoredKey) {
    return this.#inner.createKey(key);
  }
  updateKey(key: StoredKey) {
    return this.#inner.updateKey(key);
  }
  deleteKey(keyId: string, revision: number) {
    return this.#inner.deleteKey(keyId, revision);
  }
  getAlias(aliasName: string) {
    return this.#inner.getAlias(aliasName);
  }
  listAliases(options: ListOptions & { readonly targetKeyId?: string }) {
    return this.#inner.listAliases(options);
  }
  createAlias(alias: StoredAlias) {
    return this.#inner.createAlias(alias);
  }
  updateAlias(aliasName: string, targetKeyId: string, updatedAt: number) {
    return this.#inner.updateAlias(aliasName, targetKeyId, updatedAt);
  }
  deleteAlias(aliasName: string) {
    return this.#inner.deleteAlias(aliasName);
  }
  getSetting(name: string) {
    return this.#inner.getSetting(name);
  }
  putSettingIfAbsent(name: string, value: string) {
    return this.#inner.putSettingIfAbsent(name, value);
  }
  close() {
    return this.#inner.close();
  }
}

describe("createKms", () => {
  test("with no options: a working KMS on a memory store", async () => {
    const kms = await createKms();
    const { keyId } = (await kms.createKey()).keyMetadata;
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: new Uint8Array([9]) });
    expect(Array.from((await kms.decrypt({ ciphertextBlob })).plaintext)).toEqual([9]);
    expect(kms.identity).toEqual({ partition: "aws", region: "local", account: "000000000000" });
  });

  test("a non-memory store without a root key → RootKeyError naming the store", async () => {
    const store = new WrappedStore();
    expect(store).not.toBeInstanceOf(MemoryKeyStore);
    const error = await createKms({ store, clock: new ManualClock() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RootKeyError);
    expect((error as RootKeyError).code).toBe("RootKeyError");
    expect((error as RootKeyError).message).toContain("wrapped-memory");
    expect((error as RootKeyError).message).toContain("rootKey");
  });

  test("a plain object store (not a class) without a root key → RootKeyError", async () => {
    const inner = new MemoryKeyStore();
    const store: KeyStore = {
      description: "object-store",
      getKey: (id) => inner.getKey(id),
      listKeys: (o) => inner.listKeys(o),
      createKey: (k) => inner.createKey(k),
      updateKey: (k) => inner.updateKey(k),
      deleteKey: (id, r) => inner.deleteKey(id, r),
      getAlias: (n) => inner.getAlias(n),
      listAliases: (o) => inner.listAliases(o),
      createAlias: (a) => inner.createAlias(a),
      updateAlias: (n, t, u) => inner.updateAlias(n, t, u),
      deleteAlias: (n) => inner.deleteAlias(n),
      getSetting: (n) => inner.getSetting(n),
      putSettingIfAbsent: (n, v) => inner.putSettingIfAbsent(n, v),
      close: () => inner.close(),
    };
    await expect(createKms({ store })).rejects.toBeInstanceOf(RootKeyError);
  });

  test("the same store with a root key works, and reopens with the same key", async () => {
    const store = new WrappedStore();
    const rootKey = new Uint8Array(ROOT_KEY_LENGTH).fill(3);
    const kms = await createKms({ store, rootKey });
    const { keyId } = (await kms.createKey()).keyMetadata;
    const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext: new Uint8Array([1, 2]) });
    const reopened = await createKms({ store, rootKey: RootKeySource.fromBytes(rootKey) });
    expect(Array.from((await reopened.decrypt({ ciphertextBlob })).plaintext)).toEqual([1, 2]);
  });

  test("the same store with another root key → RootKeyError", async () => {
    const store = new WrappedStore();
    await createKms({ store, rootKey: new Uint8Array(ROOT_KEY_LENGTH).fill(3) });
    await expect(
      createKms({ store, rootKey: new Uint8Array(ROOT_KEY_LENGTH).fill(4) }),
    ).rejects.toBeInstanceOf(RootKeyError);
  });
});
