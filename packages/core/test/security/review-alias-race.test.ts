/**
 * Two Kms instances on one store updating one alias (found in adversarial review). Aliases had
 * no compare-and-set: an update based on an older read landed over a newer one with a lower
 * seal counter, so the instance that had written the newer record refused the alias from then
 * on as "rolled back", and the late writer moved the alias away from a key it had never been
 * authorized on.
 */
import {
  createKms,
  type KeyStore,
  KeyStoreConflictError,
  MemoryKeyStore,
  type StoredAlias,
} from "@kms/core";
import { describe, expect, it } from "vitest";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x91 + i);

/** `store`, with updateAlias held at a gate while `armed`, so a write can be made to land late. */
function gated(store: KeyStore) {
  let reached: () => void = () => {};
  let release: () => void = () => {};
  const atGate = new Promise<void>((r) => {
    reached = r;
  });
  const open = new Promise<void>((r) => {
    release = r;
  });
  const wrapper: KeyStore = {
    description: store.description,
    getKey: (id) => store.getKey(id),
    listKeys: (o) => store.listKeys(o),
    createKey: (k) => store.createKey(k),
    updateKey: (k) => store.updateKey(k),
    deleteKey: (id, r) => store.deleteKey(id, r),
    getAlias: (n) => store.getAlias(n),
    listAliases: (o) => store.listAliases(o),
    createAlias: (a: StoredAlias) => store.createAlias(a),
    async updateAlias(...args: Parameters<KeyStore["updateAlias"]>) {
      reached();
      await open;
      return store.updateAlias(...args);
    },
    deleteAlias: (n) => store.deleteAlias(n),
    getSetting: (n) => store.getSetting(n),
    putSettingIfAbsent: (n, v) => store.putSettingIfAbsent(n, v),
    close: () => store.close(),
  };
  return { store: wrapper, atGate, release: () => release() };
}

describe("concurrent updateAlias on two instances", () => {
  it("a late write based on an older record is refused; the newer instance keeps its alias", async () => {
    const shared = new MemoryKeyStore();
    const b = await createKms({ store: shared, rootKey: Uint8Array.from(ROOT), audit: false });
    const k1 = (await b.createKey()).keyMetadata.keyId;
    const k2 = (await b.createKey()).keyMetadata.keyId;
    const k3 = (await b.createKey()).keyMetadata.keyId;
    await b.createAlias({ aliasName: "alias/x", targetKeyId: k1 });

    const gate = gated(shared);
    const a = await createKms({ store: gate.store, rootKey: Uint8Array.from(ROOT), audit: false });
    // A reads the alias (on k1), is authorized on k1 and k3, and its write waits.
    const late = a.updateAlias({ aliasName: "alias/x", targetKeyId: k3 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await gate.atGate;
    // Meanwhile B moves the alias twice.
    await b.updateAlias({ aliasName: "alias/x", targetKeyId: k2 });
    await b.updateAlias({ aliasName: "alias/x", targetKeyId: k1 });
    gate.release();

    expect(await late).toBeInstanceOf(KeyStoreConflictError);
    // B still uses its alias, which points where B left it.
    expect((await b.describeKey({ keyId: "alias/x" })).keyMetadata.keyId).toBe(k1);
    expect((await a.describeKey({ keyId: "alias/x" })).keyMetadata.keyId).toBe(k1);
    // A retried on a fresh read succeeds.
    await a.updateAlias({ aliasName: "alias/x", targetKeyId: k3 });
    expect((await b.describeKey({ keyId: "alias/x" })).keyMetadata.keyId).toBe(k3);
  });

  it("an alias deleted and created again under the write is not overwritten", async () => {
    const shared = new MemoryKeyStore();
    const b = await createKms({ store: shared, rootKey: Uint8Array.from(ROOT), audit: false });
    const k1 = (await b.createKey()).keyMetadata.keyId;
    const k2 = (await b.createKey()).keyMetadata.keyId;
    await b.createAlias({ aliasName: "alias/y", targetKeyId: k1 });
    const gate = gated(shared);
    const a = await createKms({ store: gate.store, rootKey: Uint8Array.from(ROOT), audit: false });
    const late = a.updateAlias({ aliasName: "alias/y", targetKeyId: k2 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await gate.atGate;
    await b.deleteAlias({ aliasName: "alias/y" });
    await new Promise((r) => setTimeout(r, 2));
    await b.createAlias({ aliasName: "alias/y", targetKeyId: k1 });
    gate.release();
    expect(await late).toBeInstanceOf(KeyStoreConflictError);
    // The re-created alias is intact (a write sealed over the old creation time was refused
    // on every later read).
    expect((await b.describeKey({ keyId: "alias/y" })).keyMetadata.keyId).toBe(k1);
  });
});
