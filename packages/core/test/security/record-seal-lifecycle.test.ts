/**
 * Record seals (docs/FORMAT.md §4.1) across a store's life: the one-time upgrade of a store
 * written before seals (`unsealedRecords`), root-key rotation, and snapshot export/restore.
 * Tampering with single records: record-seal.test.ts.
 */
import {
  createKms,
  exportKeyStore,
  importKeyStore,
  type KeyStore,
  type Kms,
  MemoryAuditSink,
  MemoryKeyStore,
  rotateRootKey,
  type StoredAlias,
  type StoredKey,
  ValidationError,
} from "@kms/core";
import { describe, expect, it } from "vitest";
import { parseSeal, sealRootKeyId } from "../../src/keystore/record-seal.ts";
import { refusal, rootKeyIdOf } from "./seal-test-support.ts";

const OLD = Uint8Array.from({ length: 32 }, (_, i) => 0x10 + i);
const NEW = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
const plaintext = new TextEncoder().encode("sealed across upgrades");

function omitSeal<T extends { readonly seal?: string }>(record: T): Omit<T, "seal"> {
  const { seal: _seal, ...rest } = record;
  return rest;
}

async function allKeys(store: KeyStore): Promise<readonly StoredKey[]> {
  return store.listKeys({ limit: 1000 });
}

async function allAliases(store: KeyStore): Promise<readonly StoredAlias[]> {
  return store.listAliases({ limit: 1000 });
}

interface Populated {
  readonly store: MemoryKeyStore;
  readonly kms: Kms;
  readonly keyIds: readonly string[];
  readonly blobs: ReadonlyMap<string, Uint8Array>;
}

/** Three keys (one with two versions), two aliases, a ciphertext per key, under `root`. */
async function populated(root: Uint8Array = OLD): Promise<Populated> {
  const store = new MemoryKeyStore();
  const kms = await createKms({ store, rootKey: Uint8Array.from(root) });
  const keyIds: string[] = [];
  const blobs = new Map<string, Uint8Array>();
  for (const description of ["a", "b", "c"]) {
    const keyId = (await kms.createKey({ description })).keyMetadata.keyId;
    keyIds.push(keyId);
    blobs.set(keyId, (await kms.encrypt({ keyId, plaintext })).ciphertextBlob);
  }
  await kms.rotateKeyOnDemand({ keyId: keyIds[0]! });
  await kms.createAlias({ aliasName: "alias/a", targetKeyId: keyIds[0]! });
  await kms.createAlias({ aliasName: "alias/c", targetKeyId: keyIds[2]! });
  return { store, kms, keyIds, blobs };
}

async function expectDecryptsAll(kms: Kms, p: Populated): Promise<void> {
  for (const [keyId, blob] of p.blobs) {
    const out = await kms.decrypt({ ciphertextBlob: blob, keyId });
    expect(Buffer.from(out.plaintext).equals(Buffer.from(plaintext))).toBe(true);
  }
  await kms.encrypt({ keyId: "alias/a", plaintext });
  await kms.encrypt({ keyId: "alias/c", plaintext });
}

/** Strips every seal, as a store last written by a release before record seals would hold it. */
async function stripSeals(store: MemoryKeyStore): Promise<void> {
  for (const key of await allKeys(store)) {
    await store.updateKey({ ...omitSeal(key), revision: key.revision + 1 });
  }
  for (const alias of await allAliases(store)) {
    await store.updateAlias(alias.aliasName, alias.targetKeyId, alias.updatedAt);
  }
}

describe("stores without seals (unsealedRecords)", () => {
  it('are refused by default, naming unsealedRecords: "seal"', async () => {
    const p = await populated();
    await stripSeals(p.store);
    const error = await refusal(createKms({ store: p.store, rootKey: Uint8Array.from(OLD) }));
    expect(error.message).toContain('unsealedRecords: "seal"');
    expect(error.message).toContain("key store memory");
    // Explicit "refuse" is the default.
    await refusal(
      createKms({ store: p.store, rootKey: Uint8Array.from(OLD), unsealedRecords: "refuse" }),
    );
    // Opening wrote nothing.
    for (const key of await allKeys(p.store)) expect(key.seal).toBeUndefined();
  });

  it("an unsealed alias alone is refused when opening too", async () => {
    const p = await populated();
    const alias = (await p.store.getAlias("alias/c"))!;
    await p.store.updateAlias(alias.aliasName, alias.targetKeyId, alias.updatedAt);
    const error = await refusal(createKms({ store: p.store, rootKey: Uint8Array.from(OLD) }));
    expect(error.message).toContain("alias alias/c");
  });

  it('"seal" seals every record once, audits each, and the store then opens without it', async () => {
    const p = await populated();
    await stripSeals(p.store);
    const before = await allKeys(p.store);
    const sink = new MemoryAuditSink();
    const upgraded = await createKms({
      store: p.store,
      rootKey: Uint8Array.from(OLD),
      unsealedRecords: "seal",
      audit: sink,
    });

    const keys = await allKeys(p.store);
    const aliases = await allAliases(p.store);
    for (const record of [...keys, ...aliases]) {
      const seal = parseSeal(record.seal ?? "");
      expect(seal).toMatchObject({ rootKeyId: rootKeyIdOf(OLD), counter: 1 });
    }
    // Only the seal changed: the records are trusted as they were.
    expect(keys.map(omitSeal).map((k) => ({ ...k, revision: 0 }))).toStrictEqual(
      before.map((k) => ({ ...k, revision: 0 })),
    );

    const events = await upgraded.audit.events();
    const sealEvents = events.filter((e) => e.eventName === "SealRecord");
    expect(sealEvents).toHaveLength(keys.length + aliases.length);
    expect(events).toHaveLength(sealEvents.length);
    expect(sealEvents.every((e) => e.eventType === "AwsServiceEvent")).toBe(true);
    const resources = sealEvents.flatMap((e) => e.resources ?? []).map((r) => r.ARN);
    for (const keyId of p.keyIds) expect(resources.join(" ")).toContain(keyId);
    expect(JSON.stringify(sealEvents)).toContain("alias/a");
    expect(JSON.stringify(sealEvents)).toContain("alias/c");
    await expectDecryptsAll(upgraded, p);

    // Reopened without the option: nothing left to seal, nothing refused, nothing audited.
    const reopenedSink = new MemoryAuditSink();
    const reopened = await createKms({
      store: p.store,
      rootKey: Uint8Array.from(OLD),
      audit: reopenedSink,
    });
    expect(await reopened.audit.events()).toHaveLength(0);
    await expectDecryptsAll(reopened, p);

    // Opening again with "seal" reseals nothing.
    const again = await createKms({
      store: p.store,
      rootKey: Uint8Array.from(OLD),
      unsealedRecords: "seal",
      audit: new MemoryAuditSink(),
    });
    expect((await again.audit.events()).filter((e) => e.eventName === "SealRecord")).toHaveLength(
      0,
    );
    expect((await allKeys(p.store)).map((k) => k.seal)).toStrictEqual(keys.map((k) => k.seal));
  });

  it('"seal" never reseals a record whose seal fails: it stays refused', async () => {
    const p = await populated();
    const [edited, unsealed] = p.keyIds as [string, string, string];
    const record = (await p.store.getKey(edited))!;
    // Edited in the store with its seal kept: must not be "upgraded" into a valid one.
    await p.store.updateKey({ ...record, keyState: "Disabled", revision: record.revision + 1 });
    const plain = (await p.store.getKey(unsealed))!;
    await p.store.updateKey({ ...omitSeal(plain), revision: plain.revision + 1 });

    const sink = new MemoryAuditSink();
    const kms = await createKms({
      store: p.store,
      rootKey: Uint8Array.from(OLD),
      unsealedRecords: "seal",
      audit: sink,
    });
    expect((await p.store.getKey(edited))!.seal).toBe(record.seal);
    expect((await kms.audit.events()).filter((e) => e.eventName === "SealRecord")).toHaveLength(1);
    const error = await refusal(kms.encrypt({ keyId: edited, plaintext }));
    expect(error.message).toContain("does not match its record seal");
    await kms.encrypt({ keyId: unsealed, plaintext });
  });

  it("an invalid option value is a ValidationError, before anything is read or written", async () => {
    const p = await populated();
    await stripSeals(p.store);
    for (const value of ["yes", "SEAL", "", true, 1, null]) {
      const opening = createKms({
        store: p.store,
        rootKey: Uint8Array.from(OLD),
        unsealedRecords: value as never,
      });
      await expect(opening).rejects.toBeInstanceOf(ValidationError);
      await expect(opening).rejects.toThrow(/"unsealedRecords" expected "refuse" or "seal"/);
    }
    for (const key of await allKeys(p.store)) expect(key.seal).toBeUndefined();
  });
});

describe("root-key rotation", () => {
  it("during rotation old seals verify; after it every seal names the new root key", async () => {
    const p = await populated(OLD);
    const oldId = rootKeyIdOf(OLD);
    const newId = rootKeyIdOf(NEW);
    const oldRecord = (await p.store.getKey(p.keyIds[1]!))!;
    expect(sealRootKeyId(oldRecord.seal)).toBe(oldId);

    // Step 2 of the procedure: an instance on the new root key, the old one for unwrapping.
    const switched = await createKms({
      store: p.store,
      rootKey: Uint8Array.from(NEW),
      unwrapRootKeys: [Uint8Array.from(OLD)],
    });
    await expectDecryptsAll(switched, p);
    // Its writes are sealed under the new key, next to records still under the old one.
    await switched.updateKeyDescription({ keyId: p.keyIds[2]!, description: "switched" });
    expect(sealRootKeyId((await p.store.getKey(p.keyIds[2]!))!.seal)).toBe(newId);
    expect(sealRootKeyId((await p.store.getKey(p.keyIds[1]!))!.seal)).toBe(oldId);
    await expectDecryptsAll(switched, p);
    // The instance still on the old root key does not hold the new one: it refuses that record.
    const error = await refusal(p.kms.describeKey({ keyId: p.keyIds[2]! }));
    expect(error.message).toContain(`sealed under root key ${newId}, which this KMS does not hold`);

    const result = await rotateRootKey({ store: p.store, from: OLD, to: NEW });
    expect(result.toRootKeyId).toBe(newId);
    for (const record of [...(await allKeys(p.store)), ...(await allAliases(p.store))]) {
      expect(sealRootKeyId(record.seal)).toBe(newId);
    }
    // Aliases were resealed unchanged.
    expect((await p.store.getAlias("alias/a"))!.targetKeyId).toBe(p.keyIds[0]);

    // Old key dropped: everything works under the new root key alone…
    const fresh = await createKms({ store: p.store, rootKey: Uint8Array.from(NEW) });
    await expectDecryptsAll(fresh, p);
    // …and a record sealed under the old one (a pre-rotation copy put back) is refused.
    await p.store.updateKey({
      ...oldRecord,
      revision: (await p.store.getKey(oldRecord.keyId))!.revision + 1,
    });
    const refused = await refusal(fresh.encrypt({ keyId: oldRecord.keyId, plaintext }));
    expect(refused.message).toContain(
      `sealed under root key ${oldId}, which this KMS does not hold`,
    );
  });

  it("refuses to rotate a store holding an edited record, and writes nothing", async () => {
    const p = await populated(OLD);
    const record = (await p.store.getKey(p.keyIds[1]!))!;
    await p.store.updateKey({ ...record, description: "edited", revision: record.revision + 1 });
    await refusal(rotateRootKey({ store: p.store, from: OLD, to: NEW }));
    // The edited record was not resealed under the new key.
    expect((await p.store.getKey(p.keyIds[1]!))!.seal).toBe(record.seal);
  });

  it("refuses to rotate an unsealed store unless told to seal it", async () => {
    const p = await populated(OLD);
    await stripSeals(p.store);
    const error = await refusal(rotateRootKey({ store: p.store, from: OLD, to: NEW }));
    expect(error.message).toContain('unsealedRecords: "seal"');
    await expect(
      rotateRootKey({ store: p.store, from: OLD, to: NEW, unsealedRecords: null as never }),
    ).rejects.toBeInstanceOf(ValidationError);

    await rotateRootKey({ store: p.store, from: OLD, to: NEW, unsealedRecords: "seal" });
    for (const record of [...(await allKeys(p.store)), ...(await allAliases(p.store))]) {
      expect(sealRootKeyId(record.seal)).toBe(rootKeyIdOf(NEW));
    }
    await expectDecryptsAll(await createKms({ store: p.store, rootKey: Uint8Array.from(NEW) }), p);
  });
});

describe("snapshots", () => {
  it("carry seals: the restored store opens without unsealedRecords and decrypts", async () => {
    const p = await populated();
    const snapshot = await exportKeyStore(p.store);
    expect(snapshot.keys.every((k) => typeof k.seal === "string")).toBe(true);
    expect(snapshot.aliases.every((a) => typeof a.seal === "string")).toBe(true);
    const target = new MemoryKeyStore();
    await importKeyStore(target, JSON.parse(JSON.stringify(snapshot)));
    const restored = await createKms({ store: target, rootKey: Uint8Array.from(OLD) });
    await expectDecryptsAll(restored, p);
    // Revisions restart at 1 on restore (the seal does not cover them); writes go on from there.
    await restored.updateKeyDescription({ keyId: p.keyIds[0]!, description: "restored" });
  });

  async function restoredFrom(
    p: Populated,
    change: (snapshot: SnapshotJson) => void,
  ): Promise<{ opening: Promise<Kms> }> {
    const snapshot = JSON.parse(JSON.stringify(await exportKeyStore(p.store))) as SnapshotJson;
    change(snapshot);
    const store = new MemoryKeyStore();
    await importKeyStore(store, snapshot);
    return { opening: createKms({ store, rootKey: Uint8Array.from(OLD) }) };
  }

  type KeyJson = SnapshotJson["keys"][number];
  const keyEdits: readonly [string, (k: KeyJson) => void][] = [
    [
      "its state",
      (k) => {
        k.keyState = "Enabled";
      },
    ],
    [
      "its description",
      (k) => {
        k.description = "edited";
      },
    ],
    ["its material", (k) => void k.versions.reverse()],
  ];

  it.each(keyEdits)(
    "a key edited in the snapshot JSON (%s) is refused on use",
    async (_name, change) => {
      const p = await populated();
      const keyId = p.keyIds[0]!;
      await p.kms.disableKey({ keyId });
      const { opening } = await restoredFrom(p, (s) =>
        change(s.keys.find((k) => k.keyId === keyId)!),
      );
      const kms = await opening;
      const error = await refusal(kms.decrypt({ ciphertextBlob: p.blobs.get(keyId)! }));
      expect(error.message).toContain(keyId);
      await refusal(kms.encrypt({ keyId: "alias/a", plaintext }));
      // The other keys and alias restored untouched still work.
      await kms.decrypt({ ciphertextBlob: p.blobs.get(p.keyIds[1]!)! });
      await kms.encrypt({ keyId: "alias/c", plaintext });
    },
  );

  it("an alias repointed in the snapshot JSON is refused on use", async () => {
    const p = await populated();
    const { opening } = await restoredFrom(p, (s) => {
      s.aliases.find((a) => a.aliasName === "alias/c")!.targetKeyId = p.keyIds[1]!;
    });
    const kms = await opening;
    const error = await refusal(kms.encrypt({ keyId: "alias/c", plaintext }));
    expect(error.message).toContain("alias alias/c");
    await kms.encrypt({ keyId: p.keyIds[1]!, plaintext });
  });

  it("a seal removed in the snapshot JSON stops the restored store from opening", async () => {
    const p = await populated();
    const { opening } = await restoredFrom(p, (s) => void delete s.keys[1]!.seal);
    const error = await refusal(opening);
    expect(error.message).toContain("without a record seal");
  });
});

/** A snapshot as JSON.parse returns it, mutable. */
interface SnapshotJson {
  keys: {
    keyId: string;
    keyState: string;
    description: string;
    versions: unknown[];
    seal?: string;
  }[];
  aliases: { aliasName: string; targetKeyId: string }[];
}
