/**
 * Root-key retirement (docs/FORMAT.md §4.2) against a store writer: the settings that retire a
 * root key after `rotateRootKey` are ordinary store rows, so whoever can write the store can
 * delete them (to make a retired, perhaps leaked, root key usable again) or plant them (to
 * retire the live root key). The store here is a MemoryKeyStore whose settings the tests edit
 * directly, as a database writer would edit the settings table.
 */
import { createHmac, hkdfSync } from "node:crypto";
import {
  createKms,
  exportKeyStore,
  importKeyStore,
  type Kms,
  MemoryKeyStore,
  RootKeyError,
  rotateRootKey,
  type StoredKey,
} from "@kms/core";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { ROOT_KEY_SETTINGS, SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import { SealedKeyStore } from "../../src/keystore/sealed-key-store.ts";
import { refusal, rootKeyIdOf } from "./seal-test-support.ts";

const OLD = Uint8Array.from({ length: 32 }, (_, i) => i);
const NEW = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
const NEXT = Uint8Array.from({ length: 32 }, (_, i) => 0xc0 + i);
const FOREIGN = Uint8Array.from({ length: 32 }, (_, i) => 0x40 + i);
const OLD_ID = rootKeyIdOf(OLD);
const NEW_ID = rootKeyIdOf(NEW);
const plaintext = new TextEncoder().encode("retired means retired");

/** A MemoryKeyStore whose settings table a test reads and edits directly. */
class EditableSettingsStore extends MemoryKeyStore {
  readonly settings = new Map<string, string>();

  override async getSetting(name: string): Promise<string | undefined> {
    return this.settings.get(name);
  }

  override async putSettingIfAbsent(name: string, value: string): Promise<string> {
    const existing = this.settings.get(name);
    if (existing !== undefined) return existing;
    this.settings.set(name, value);
    return value;
  }
}

let warnings: string[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  warnings = [];
});

/** Collects the KMS_ROOT_KEY_SETTING_IGNORED warnings instead of printing them. */
function captureWarnings(): void {
  vi.spyOn(process, "emitWarning").mockImplementation(((
    message: string | Error,
    options?: { code?: string },
  ) => {
    if (options?.code === "KMS_ROOT_KEY_SETTING_IGNORED") warnings.push(String(message));
  }) as typeof process.emitWarning);
}

const bytes = (key: Uint8Array) => Uint8Array.from(key);

/** A store with one disabled key, rotated from OLD to NEW. */
async function rotated() {
  const store = new EditableSettingsStore();
  const old = await createKms({ store, rootKey: bytes(OLD) });
  const keyId = (await old.createKey({ description: "k" })).keyMetadata.keyId;
  const blob = (await old.encrypt({ keyId, plaintext })).ciphertextBlob;
  await old.disableKey({ keyId });
  await rotateRootKey({ store, from: bytes(OLD), to: bytes(NEW) });
  return { store, keyId, blob };
}

/**
 * What a holder of the old root key (the reason to rotate) writes into the store: the key
 * enabled again, with material of their choosing wrapped, and the record sealed, under OLD.
 */
async function plantUnderOld(store: MemoryKeyStore, keyId: string): Promise<void> {
  const current = (await store.getKey(keyId))!;
  const forgerHsm = await SoftwareHsm.open(
    RootKeySource.fromBytes(bytes(OLD)),
    new MemoryKeyStore(),
  );
  const forger = new SealedKeyStore(new MemoryKeyStore(), forgerHsm);
  const forged: StoredKey = forger.sealKey(
    {
      ...current,
      keyState: "Enabled",
      versions: current.versions.map((v) => ({
        ...v,
        wrappedMaterial: forgerHsm.wrapMaterial(keyId, v.version, new Uint8Array(32).fill(7)),
      })),
    },
    1000,
  );
  await store.updateKey({ ...forged, revision: current.revision + 1 });
}

/** An instance that forgot step 4 of the rotation: it still passes OLD for unwrapping. */
function lagging(store: MemoryKeyStore): Promise<Kms> {
  return createKms({ store, rootKey: bytes(NEW), unwrapRootKeys: [bytes(OLD)] });
}

/** The sealed retirement value, computed independently from FORMAT §4.1 item 2 and §4.2. */
function sealedRetirement(retired: Uint8Array, successorId: string): string {
  const sealKey = Buffer.from(
    hkdfSync("sha256", retired, new Uint8Array(0), "kms/record-seal/v1", 32),
  );
  const mac = createHmac("sha256", sealKey)
    .update(`kms/root-key-retirement/v1|${rootKeyIdOf(retired)}|${successorId}`)
    .digest("base64url");
  return `r1.${successorId}.${mac}`;
}

describe("a finished rotation (FORMAT §4.2)", () => {
  it("records the retirement sealed under the retired key, and plain for earlier releases", async () => {
    const { store } = await rotated();
    expect(store.settings.get(`root-key-retirement/${OLD_ID}`)).toBe(sealedRetirement(OLD, NEW_ID));
    expect(store.settings.get(`root-key-retired/${OLD_ID}`)).toBe(NEW_ID);
    expect(ROOT_KEY_SETTINGS.retirement(OLD_ID)).toBe(`root-key-retirement/${OLD_ID}`);
  });

  it("known answer (FORMAT §4.2): root key 00 01 … 1f retired by 80 81 … 9f", async () => {
    const { store } = await rotated();
    expect([OLD_ID, NEW_ID]).toStrictEqual(["d5b9671aed4cd28a", "cc28b12a925927e8"]);
    expect(store.settings.get("root-key-retirement/d5b9671aed4cd28a")).toBe(
      "r1.cc28b12a925927e8.cGJCKGlsBUT9nyfiZHubrXaRzL3Bn6G07cj3_k0aGCY",
    );
  });
});

describe("deleting retirement settings", () => {
  it("deleting the plain marker (all earlier releases read) leaves the old key retired", async () => {
    const { store, keyId } = await rotated();
    store.settings.delete(`root-key-retired/${OLD_ID}`);
    await plantUnderOld(store, keyId);

    const error = await refusal((await lagging(store)).encrypt({ keyId, plaintext }));
    expect(error.message).toContain(`sealed under root key ${OLD_ID}`);
    const stale = await refusal(createKms({ store, rootKey: bytes(OLD) }));
    expect(stale.message).toContain(
      `retired from key store memory by a rotation to root key ${NEW_ID}`,
    );
  });

  it("deleting the sealed one leaves the plain one, which an instance holding the successor believes", async () => {
    const { store, keyId } = await rotated();
    store.settings.delete(`root-key-retirement/${OLD_ID}`);
    await plantUnderOld(store, keyId);
    const error = await refusal((await lagging(store)).encrypt({ keyId, plaintext }));
    expect(error.message).toContain(`sealed under root key ${OLD_ID}`);
    await refusal(createKms({ store, rootKey: bytes(OLD), unwrapRootKeys: [bytes(NEW)] }));
  });

  it("deleting the successor does not make the retired key the store's root key again", async () => {
    const { store } = await rotated();
    store.settings.delete(`root-key-successor/${OLD_ID}`);
    // The history now ends at OLD, as if no rotation had happened; its retirement still stands.
    const error = await refusal(createKms({ store, rootKey: bytes(OLD) }));
    expect(error.message).toContain("was retired");
    // Denial of service, not a way in: the new key alone no longer matches the history.
    await refusal(createKms({ store, rootKey: bytes(NEW) }));
  });
});

describe("planting retirement settings", () => {
  it("a planted successor and plain marker naming a key nobody holds do not retire the live root key", async () => {
    captureWarnings();
    const store = new EditableSettingsStore();
    const kms = await createKms({ store, rootKey: bytes(OLD) });
    const keyId = (await kms.createKey({})).keyMetadata.keyId;
    const blob = (await kms.encrypt({ keyId, plaintext })).ciphertextBlob;
    const foreignId = rootKeyIdOf(FOREIGN);
    store.settings.set(`root-key-successor/${OLD_ID}`, foreignId);
    store.settings.set(`root-key-retired/${OLD_ID}`, foreignId);

    const reopened = await createKms({ store, rootKey: bytes(OLD) });
    const out = await reopened.decrypt({ ciphertextBlob: blob });
    expect(Buffer.from(out.plaintext).equals(Buffer.from(plaintext))).toBe(true);
    expect(warnings.join("\n")).toContain(`setting root-key-retired/${OLD_ID} of key store memory`);
  });

  it.each([
    ["junk", () => `r1.${rootKeyIdOf(FOREIGN)}.${"A".repeat(43)}`],
    ["sealed under the would-be successor's key", () => sealedRetirementUnder(FOREIGN, OLD_ID)],
    ["another key's genuine retirement, copied", () => sealedRetirement(NEW, rootKeyIdOf(FOREIGN))],
    ["not in the sealed form", () => rootKeyIdOf(FOREIGN)],
  ])("a planted sealed retirement that does not verify (%s) retires nothing", async (_, value) => {
    captureWarnings();
    const store = new EditableSettingsStore();
    const kms = await createKms({ store, rootKey: bytes(OLD) });
    const keyId = (await kms.createKey({})).keyMetadata.keyId;
    store.settings.set(`root-key-successor/${OLD_ID}`, rootKeyIdOf(FOREIGN));
    store.settings.set(`root-key-retirement/${OLD_ID}`, value());

    const reopened = await createKms({ store, rootKey: bytes(OLD) });
    await reopened.encrypt({ keyId, plaintext });
    expect(warnings.join("\n")).toContain("does not verify under the root key it retires");
  });

  it("a planted sealed retirement stops the rotation from recording one, until it is deleted", async () => {
    const store = new EditableSettingsStore();
    const old = await createKms({ store, rootKey: bytes(OLD) });
    const keyId = (await old.createKey({})).keyMetadata.keyId;
    const planted = `r1.${NEW_ID}.${"A".repeat(43)}`;
    store.settings.set(`root-key-retirement/${OLD_ID}`, planted);
    captureWarnings();

    const error = await refusal(rotateRootKey({ store, from: bytes(OLD), to: bytes(NEW) }));
    expect(error.message).toContain(`setting root-key-retirement/${OLD_ID}`);
    expect(error.message).toContain("delete that setting and run the rotation again");
    // Everything was re-wrapped, and the plain marker written; the planted value counts for
    // nothing, so an instance that cannot confirm the plain marker still opens with OLD.
    expect(store.settings.get(`root-key-retired/${OLD_ID}`)).toBe(NEW_ID);
    await createKms({ store, rootKey: bytes(OLD) });

    store.settings.delete(`root-key-retirement/${OLD_ID}`);
    await rotateRootKey({ store, from: bytes(OLD), to: bytes(NEW) });
    await refusal(createKms({ store, rootKey: bytes(OLD) }));
    await (await createKms({ store, rootKey: bytes(NEW) })).encrypt({ keyId, plaintext });
  });
});

/** A well-formed sealed retirement of `retiredId`, MACed under `key` (not the retired key). */
function sealedRetirementUnder(key: Uint8Array, retiredId: string): string {
  const sealKey = Buffer.from(hkdfSync("sha256", key, new Uint8Array(0), "kms/record-seal/v1", 32));
  const successorId = rootKeyIdOf(key);
  const mac = createHmac("sha256", sealKey)
    .update(`kms/root-key-retirement/v1|${retiredId}|${successorId}`)
    .digest("base64url");
  return `r1.${successorId}.${mac}`;
}

describe("stores rotated by an earlier release (plain marker only)", () => {
  async function legacyRotated() {
    const r = await rotated();
    r.store.settings.delete(`root-key-retirement/${OLD_ID}`);
    return r;
  }

  it("an instance holding the successor still drops the old key; one holding only the old key is warned", async () => {
    const { store } = await legacyRotated();
    const hsm = await SoftwareHsm.open(RootKeySource.fromBytes(bytes(NEW)), store, {
      unwrapRootKeys: [RootKeySource.fromBytes(bytes(OLD))],
    });
    expect(hsm.retiredUnwrapRootKeyIds).toStrictEqual([OLD_ID]);

    captureWarnings();
    await createKms({ store, rootKey: bytes(OLD) });
    expect(warnings.join("\n")).toContain("run rotateRootKey from it to its successor again");
  });

  it("running the rotation again seals the retirement, and never reseals a record planted under the old key", async () => {
    const { store, keyId } = await legacyRotated();
    await rotateRootKey({ store, from: bytes(OLD), to: bytes(NEW) });
    expect(store.settings.get(`root-key-retirement/${OLD_ID}`)).toBe(sealedRetirement(OLD, NEW_ID));
    await refusal(createKms({ store, rootKey: bytes(OLD) }));

    const again = await legacyRotated();
    await plantUnderOld(again.store, again.keyId);
    await refusal(rotateRootKey({ store: again.store, from: bytes(OLD), to: bytes(NEW) }));
    expect(again.store.settings.has(`root-key-retirement/${OLD_ID}`)).toBe(false);
    expect(keyId).not.toBe(again.keyId);
  });
});

describe("one root-key rotation at a time", () => {
  it("a third root key cannot take over while material may still be under the first", async () => {
    const store = new EditableSettingsStore();
    const first = await createKms({ store, rootKey: bytes(OLD) });
    const keyId = (await first.createKey({})).keyMetadata.keyId;
    const blob = (await first.encrypt({ keyId, plaintext })).ciphertextBlob;
    await createKms({ store, rootKey: bytes(NEW), unwrapRootKeys: [bytes(OLD)] });

    const early = await refusal(
      createKms({ store, rootKey: bytes(NEXT), unwrapRootKeys: [bytes(NEW)] }),
    );
    expect(early.message).toContain(`the rotation to it from root key ${OLD_ID} has not finished`);
    await refusal(rotateRootKey({ store, from: bytes(NEW), to: bytes(NEXT) }));
    expect(store.settings.has(`root-key-successor/${NEW_ID}`)).toBe(false);

    await rotateRootKey({ store, from: bytes(OLD), to: bytes(NEW) });
    await rotateRootKey({ store, from: bytes(NEW), to: bytes(NEXT) });
    const latest = await createKms({ store, rootKey: bytes(NEXT) });
    const out = await latest.decrypt({ ciphertextBlob: blob });
    expect(Buffer.from(out.plaintext).equals(Buffer.from(plaintext))).toBe(true);
    for (const retired of [OLD, NEW]) {
      expect(await createKms({ store, rootKey: bytes(retired) }).catch((e) => e)).toBeInstanceOf(
        RootKeyError,
      );
    }
  });
});

describe("snapshots", () => {
  it("carry both retirement settings, so the restored store refuses the old key alike", async () => {
    const { store, blob } = await rotated();
    const snapshot = await exportKeyStore(store);
    expect(snapshot.settings[`root-key-retirement/${OLD_ID}`]).toBe(sealedRetirement(OLD, NEW_ID));
    expect(snapshot.settings[`root-key-retired/${OLD_ID}`]).toBe(NEW_ID);

    const restored = new EditableSettingsStore();
    await importKeyStore(restored, JSON.parse(JSON.stringify(snapshot)));
    restored.settings.delete(`root-key-retired/${OLD_ID}`);
    await refusal(createKms({ store: restored, rootKey: bytes(OLD) }));
    const kms = await createKms({ store: restored, rootKey: bytes(NEW) });
    await expect(kms.decrypt({ ciphertextBlob: blob })).rejects.toThrow(/disabled/i);
  });
});

describe("what retirement settings do not protect against (FORMAT §4.2 items 5 and 6)", () => {
  it("a store an earlier release rotated twice: only the last rotation can be sealed again", async () => {
    captureWarnings();
    const store = new EditableSettingsStore();
    await (await createKms({ store, rootKey: bytes(OLD) })).createKey({});
    await rotateRootKey({ store, from: bytes(OLD), to: bytes(NEW) });
    await rotateRootKey({ store, from: bytes(NEW), to: bytes(NEXT) });
    // As an earlier release left it: plain markers only.
    store.settings.delete(`root-key-retirement/${OLD_ID}`);
    store.settings.delete(`root-key-retirement/${NEW_ID}`);

    const nextId = rootKeyIdOf(NEXT);
    const first = await refusal(rotateRootKey({ store, from: bytes(OLD), to: bytes(NEW) }));
    expect(first.message).toContain(`sealed under root key ${nextId}`);
    await rotateRootKey({ store, from: bytes(NEW), to: bytes(NEXT) });
    const second = await refusal(rotateRootKey({ store, from: bytes(OLD), to: bytes(NEW) }));
    expect(second.message).toContain(`by a rotation to root key ${nextId}`);

    // The first key stays unconfirmed: an instance holding only it opens, warned, and the key it
    // creates is refused by the store's own instances.
    const stale = await createKms({ store, rootKey: bytes(OLD) });
    expect(warnings.join("\n")).toContain(`setting root-key-retired/${OLD_ID}`);
    const planted = (await stale.createKey({})).keyMetadata.keyId;
    const latest = await createKms({ store, rootKey: bytes(NEXT) });
    const error = await refusal(latest.describeKey({ keyId: planted }));
    expect(error.message).toContain(`sealed under root key ${OLD_ID}`);
  });

  it("deleting the last rotation's retirement settings refuses the next rotation until the plain marker is back", async () => {
    const { store } = await rotated();
    store.settings.delete(`root-key-retirement/${OLD_ID}`);
    store.settings.delete(`root-key-retired/${OLD_ID}`);
    const error = await refusal(
      createKms({ store, rootKey: bytes(NEXT), unwrapRootKeys: [bytes(NEW)] }),
    );
    expect(error.message).toContain("has not finished");
    await store.putSettingIfAbsent(`root-key-retired/${OLD_ID}`, NEW_ID);
    await createKms({ store, rootKey: bytes(NEXT), unwrapRootKeys: [bytes(NEW)] });
  });

  it("rewriting root-key-id refuses every instance", async () => {
    const { store } = await rotated();
    store.settings.set("root-key-id", rootKeyIdOf(FOREIGN));
    for (const rootKey of [NEW, OLD]) {
      const error = await refusal(createKms({ store, rootKey: bytes(rootKey) }));
      expect(error.message).toContain("is not the one key store");
    }
  });
});
