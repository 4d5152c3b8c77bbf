/**
 * Rollback floors (docs/FORMAT.md §4.1 item 7), found in review: the process kept one floor per
 * key and per alias incarnation forever, so an alias created and deleted over and over (each
 * time a new createdAt) grew memory without bound. Floors go with the records this process
 * deletes; an alias keeps one floor per name.
 */
import { createKms, MemoryKeyStore, type StoredAlias, type StoredKey } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { describe, expect, it } from "vitest";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import { SealedKeyStore } from "../../src/keystore/sealed-key-store.ts";
import { refusal } from "./seal-test-support.ts";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x61 + i);
const plaintext = new TextEncoder().encode("floors");

async function sealedStore(): Promise<{ raw: MemoryKeyStore; sealed: SealedKeyStore }> {
  const raw = new MemoryKeyStore();
  const hsm = await SoftwareHsm.open(RootKeySource.fromBytes(Uint8Array.from(ROOT)), raw);
  return { raw, sealed: new SealedKeyStore(raw, hsm) };
}

function alias(createdAt: number, targetKeyId = "k-1"): StoredAlias {
  return { aliasName: "alias/churn", targetKeyId, createdAt, updatedAt: createdAt };
}

describe("rollback floors", () => {
  it("do not grow with an alias created and deleted again and again", async () => {
    const { sealed } = await sealedStore();
    for (let t = 1; t <= 3000; t++) {
      await sealed.createAlias(alias(t));
      await sealed.getAlias("alias/churn");
      await sealed.deleteAlias("alias/churn");
    }
    // Before: one floor per incarnation, 3 000. Now: the counters of the last deletions only,
    // for a re-creation within the same millisecond.
    expect(sealed.retainedFloors).toBeLessThanOrEqual(1024);
  });

  it("keep one floor per alias name, whatever the incarnations another instance makes", async () => {
    const { raw, sealed } = await sealedStore();
    const other = new SealedKeyStore(raw, await hsmOf(raw));
    for (let t = 1; t <= 500; t++) {
      await other.createAlias(alias(t));
      await sealed.getAlias("alias/churn");
      await other.deleteAlias("alias/churn");
    }
    expect(sealed.retainedFloors).toBe(1);
  });

  it("go with a key this process destroys", async () => {
    const { sealed } = await sealedStore();
    const before = sealed.retainedFloors;
    const key = await storedKey(sealed, "k-destroyed");
    expect(sealed.retainedFloors).toBe(before + 1);
    await sealed.deleteKey(key.keyId, key.revision);
    expect(sealed.retainedFloors).toBe(before);
  });

  it("still refuse an older record of the alias's current incarnation", async () => {
    const { raw, sealed } = await sealedStore();
    await sealed.createAlias(alias(1, "k-1"));
    const first = (await raw.getAlias("alias/churn"))!;
    await sealed.updateAlias("alias/churn", "k-2", 2);
    await sealed.getAlias("alias/churn");
    await raw.updateAlias("alias/churn", first.targetKeyId, first.updatedAt, first.seal);
    expect((await refusal(sealed.getAlias("alias/churn"))).message).toContain("rolled back");
  });

  it("let another instance accept an alias deleted and created again in the same millisecond", async () => {
    const store = new MemoryKeyStore();
    const clock = new ManualClock();
    const a = await createKms({ store, rootKey: Uint8Array.from(ROOT), clock });
    const b = await createKms({ store, rootKey: Uint8Array.from(ROOT), clock });
    const k1 = (await a.createKey()).keyMetadata.keyId;
    const k2 = (await a.createKey()).keyMetadata.keyId;
    await a.createAlias({ aliasName: "alias/x", targetKeyId: k1 });
    await a.updateAlias({ aliasName: "alias/x", targetKeyId: k2 });
    // B holds the floor of this incarnation (counter 2).
    expect((await b.encrypt({ keyId: "alias/x", plaintext })).keyId).toContain(k2);
    // Same clock tick: the re-created alias has the same name and createdAt, and A seals it
    // with the counter after the deleted one, not 1, which B would take for a rollback.
    await a.deleteAlias({ aliasName: "alias/x" });
    await a.createAlias({ aliasName: "alias/x", targetKeyId: k1 });
    expect((await b.encrypt({ keyId: "alias/x", plaintext })).keyId).toContain(k1);
  });
});

async function hsmOf(raw: MemoryKeyStore): Promise<SoftwareHsm> {
  return SoftwareHsm.open(RootKeySource.fromBytes(Uint8Array.from(ROOT)), raw);
}

async function storedKey(sealed: SealedKeyStore, keyId: string): Promise<StoredKey> {
  await sealed.createKey({
    keyId,
    revision: 1,
    createdAt: 1,
    description: "",
    keySpec: "SYMMETRIC_DEFAULT",
    keyUsage: "ENCRYPT_DECRYPT",
    origin: "AWS_KMS",
    multiRegion: false,
    keyState: "Enabled",
    rotation: { enabled: false, periodInDays: 365, onDemandRotations: 0 },
    tags: [],
    versions: [
      {
        version: 1,
        createdAt: 1,
        keyMaterialId: "ab".repeat(32),
        wrappedMaterial: new Uint8Array(4),
      },
    ],
    currentVersion: 1,
  });
  return (await sealed.getKey(keyId))!;
}
