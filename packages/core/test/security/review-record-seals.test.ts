/**
 * Record seals (docs/FORMAT.md §4.1) and root-key rotation, found in review: a record read under
 * another record's name, an alias re-created within one millisecond, and a retired root key
 * still accepted for unwrapping and seals.
 */
import {
  AccessDeniedError,
  createKms,
  type ListOptions,
  MemoryKeyStore,
  rotateRootKey,
  type StoredAlias,
  type StoredKey,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { describe, expect, it } from "vitest";
import { RootKeySource } from "../../src/hsm/root-key.ts";
import { SoftwareHsm } from "../../src/hsm/software-hsm.ts";
import { sealRootKeyId } from "../../src/keystore/record-seal.ts";
import { SealedKeyStore } from "../../src/keystore/sealed-key-store.ts";
import { refusal, rootKeyIdOf } from "./seal-test-support.ts";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x40 + i);
const OLD = Uint8Array.from({ length: 32 }, (_, i) => 0x10 + i);
const NEW = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
const MALLORY = "arn:aws:iam::111122223333:user/mallory";
const plaintext = new TextEncoder().encode("review");

/**
 * A store that keeps each record as a document under a name of its own, as a key-value or
 * document database would. A writer of that database can put one record's document under
 * another record's name; `plant` does that.
 */
class DocumentKeyStore extends MemoryKeyStore {
  readonly #keys = new Map<string, StoredKey>();
  readonly #aliases = new Map<string, StoredAlias>();
  /** Extra entries of the by-target index: key id → alias names listed for it. */
  readonly #targetIndex = new Map<string, string[]>();

  async plantKey(under: string, from: string): Promise<void> {
    this.#keys.set(under, (await super.getKey(from))!);
  }

  async plantAlias(under: string, from: string): Promise<void> {
    this.#aliases.set(under, (await super.getAlias(from))!);
  }

  /** Lists alias `from`'s record among the aliases of key `keyId`, as a forged index entry. */
  indexAlias(keyId: string, from: string): void {
    this.#targetIndex.set(keyId, [...(this.#targetIndex.get(keyId) ?? []), from]);
  }

  override async listAliases(
    options: ListOptions & { readonly targetKeyId?: string },
  ): Promise<readonly StoredAlias[]> {
    const listed = [...(await super.listAliases(options))];
    const extra =
      options.targetKeyId === undefined ? [] : this.#targetIndex.get(options.targetKeyId);
    for (const name of extra ?? []) listed.push((await super.getAlias(name))!);
    return listed.sort((a, b) => (a.aliasName < b.aliasName ? -1 : 1));
  }

  override async getKey(keyId: string): Promise<StoredKey | undefined> {
    return this.#keys.get(keyId) ?? super.getKey(keyId);
  }

  override async getAlias(aliasName: string): Promise<StoredAlias | undefined> {
    return this.#aliases.get(aliasName) ?? super.getAlias(aliasName);
  }
}

function policyFor(principal: string): string {
  return JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "Admin",
        Effect: "Allow",
        Principal: { AWS: "arn:aws:iam::000000000000:root" },
        Action: "kms:*",
        Resource: "*",
      },
      {
        Sid: "User",
        Effect: "Allow",
        Principal: { AWS: principal },
        Action: ["kms:Encrypt", "kms:Decrypt"],
        Resource: "*",
      },
    ],
  });
}

describe("a record found under another record's name", () => {
  it("an alias whose stored document is another alias's sealed record is refused, not followed", async () => {
    const store = new DocumentKeyStore();
    const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
    const prod = (await kms.createKey({ description: "prod" })).keyMetadata.keyId;
    const mallorys = (await kms.createKey({ description: "mallory's" })).keyMetadata.keyId;
    await kms.putKeyPolicy({ keyId: mallorys, policy: policyFor(MALLORY) });
    await kms.createAlias({ aliasName: "alias/prod", targetKeyId: prod });
    await kms.createAlias({ aliasName: "alias/mallory", targetKeyId: mallorys });

    // Mallory, who can write the database, files her alias's record under alias/prod.
    await store.plantAlias("alias/prod", "alias/mallory");
    const fresh = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
    const error = await refusal(fresh.encrypt({ keyId: "alias/prod", plaintext }));
    expect(error.message).toContain("alias alias/prod");
    expect(error.message).toContain("alias/mallory");
    // Nothing was encrypted to her key, and her own alias still works.
    const { keyId } = await fresh.encrypt({ keyId: "alias/mallory", plaintext });
    expect(keyId).toContain(mallorys);
  });

  it("a key whose stored document is another key's sealed record is refused", async () => {
    const store = new DocumentKeyStore();
    const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
    const prod = (await kms.createKey({ description: "prod" })).keyMetadata.keyId;
    const mallorys = (await kms.createKey({ description: "mallory's" })).keyMetadata.keyId;
    await kms.putKeyPolicy({ keyId: mallorys, policy: policyFor(MALLORY) });

    await store.plantKey(prod, mallorys);
    const fresh = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
    const error = await refusal(fresh.encrypt({ keyId: prod, plaintext }));
    expect(error.message).toContain(prod);
    expect(error.message).toContain(mallorys);
    await refusal(fresh.describeKey({ keyId: prod }));
  });
});

describe("an alias listed for a key it does not point to", () => {
  // A key policy that lets Mallory use whichever key carries an alias under her prefix (the
  // attribute-based pattern kms:ResourceAliases exists for).
  const aliasPolicy = JSON.stringify({
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "Admin",
        Effect: "Allow",
        Principal: { AWS: "arn:aws:iam::000000000000:root" },
        Action: "kms:*",
        Resource: "*",
      },
      {
        Sid: "ByAlias",
        Effect: "Allow",
        Principal: { AWS: MALLORY },
        Action: ["kms:Encrypt", "kms:Decrypt"],
        Resource: "*",
        Condition: { "ForAnyValue:StringLike": { "kms:ResourceAliases": "alias/mallory/*" } },
      },
    ],
  });

  it("is refused, not counted among the key's aliases by kms:ResourceAliases", async () => {
    const store = new DocumentKeyStore();
    const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
    const payroll = (await kms.createKey({ policy: aliasPolicy })).keyMetadata.keyId;
    const mallorys = (await kms.createKey({ policy: aliasPolicy })).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/mallory/own", targetKeyId: mallorys });
    const asMallory = { principal: MALLORY };
    const denied = await kms.encrypt({ keyId: payroll, plaintext }, asMallory).catch((e) => e);
    expect(denied).toBeInstanceOf(AccessDeniedError);

    // Mallory, who can write the database, adds her alias's record to payroll's index entries.
    store.indexAlias(payroll, "alias/mallory/own");
    const fresh = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
    const error = await refusal(fresh.encrypt({ keyId: payroll, plaintext }, asMallory));
    expect(error.message).toContain("alias/mallory/own");
    await refusal(fresh.listAliases({ keyId: payroll }));
    // Her own key, and listing every alias, are unaffected.
    await fresh.encrypt({ keyId: mallorys, plaintext }, asMallory);
    expect((await fresh.listAliases()).aliases.map((a) => a.aliasName)).toContain(
      "alias/mallory/own",
    );
  });
});

describe("an alias deleted and created again by the same process", () => {
  it("within the same millisecond is not mistaken for a rollback", async () => {
    const store = new MemoryKeyStore();
    const clock = new ManualClock();
    const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT), clock });
    const a = (await kms.createKey({})).keyMetadata.keyId;
    const b = (await kms.createKey({})).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/x", targetKeyId: a });
    await kms.updateAlias({ aliasName: "alias/x", targetKeyId: b });
    await kms.encrypt({ keyId: "alias/x", plaintext });
    // Same name and, on the same clock tick, the same createdAt: the same floor as before.
    await kms.deleteAlias({ aliasName: "alias/x" });
    await kms.createAlias({ aliasName: "alias/x", targetKeyId: a });
    expect((await kms.encrypt({ keyId: "alias/x", plaintext })).keyId).toContain(a);
    await kms.updateAlias({ aliasName: "alias/x", targetKeyId: b });
    expect((await kms.encrypt({ keyId: "alias/x", plaintext })).keyId).toContain(b);
  });

  it("the earlier record of that same incarnation is still refused as a rollback", async () => {
    const store = new MemoryKeyStore();
    const clock = new ManualClock();
    const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT), clock });
    const a = (await kms.createKey({})).keyMetadata.keyId;
    const b = (await kms.createKey({})).keyMetadata.keyId;
    await kms.createAlias({ aliasName: "alias/x", targetKeyId: a });
    await kms.updateAlias({ aliasName: "alias/x", targetKeyId: b });
    const pointingToB = (await store.getAlias("alias/x"))!;
    await kms.deleteAlias({ aliasName: "alias/x" });
    await kms.createAlias({ aliasName: "alias/x", targetKeyId: a });
    await kms.encrypt({ keyId: "alias/x", plaintext });
    // Putting back the record that pointed to b (counter 2) under the new one (counter 3).
    await store.updateAlias("alias/x", b, pointingToB.updatedAt, pointingToB.seal);
    const error = await refusal(kms.encrypt({ keyId: "alias/x", plaintext }));
    expect(error.message).toContain("rolled back");
  });
});

describe("a retired root key", () => {
  async function rotated() {
    const store = new MemoryKeyStore();
    const old = await createKms({ store, rootKey: Uint8Array.from(OLD) });
    const keyId = (await old.createKey({ description: "k" })).keyMetadata.keyId;
    const blob = (await old.encrypt({ keyId, plaintext })).ciphertextBlob;
    await old.disableKey({ keyId });
    await rotateRootKey({ store, from: Uint8Array.from(OLD), to: Uint8Array.from(NEW) });
    return { store, keyId, blob };
  }

  it("is not accepted for seals or material by an instance still configured with it", async () => {
    const { store, keyId } = await rotated();
    const current = (await store.getKey(keyId))!;
    expect(sealRootKeyId(current.seal)).toBe(rootKeyIdOf(NEW));

    // Whoever holds the old root key (the reason to rotate) writes a record under it: the key
    // enabled again, with material of their choosing wrapped under the old root key.
    const forgerHsm = await SoftwareHsm.open(
      RootKeySource.fromBytes(Uint8Array.from(OLD)),
      new MemoryKeyStore(),
    );
    const forger = new SealedKeyStore(new MemoryKeyStore(), forgerHsm);
    const known = new Uint8Array(32).fill(7);
    const forged = forger.sealKey(
      {
        ...current,
        keyState: "Enabled",
        versions: current.versions.map((v) => ({
          ...v,
          wrappedMaterial: forgerHsm.wrapMaterial(keyId, v.version, Uint8Array.from(known)),
        })),
      },
      1000,
    );
    await store.updateKey({ ...forged, revision: current.revision + 1 });

    // Step 4 of the procedure (drop unwrapRootKeys) forgotten on one instance:
    const lagging = await createKms({
      store,
      rootKey: Uint8Array.from(NEW),
      unwrapRootKeys: [Uint8Array.from(OLD)],
    });
    const error = await refusal(lagging.encrypt({ keyId, plaintext }));
    expect(error.message).toContain(`sealed under root key ${rootKeyIdOf(OLD)}`);
  });

  it("drops out of an HSM opened with it for unwrapping; a finished rotation runs again as a no-op", async () => {
    const { store, keyId, blob } = await rotated();
    const hsm = await SoftwareHsm.open(RootKeySource.fromBytes(Uint8Array.from(NEW)), store, {
      unwrapRootKeys: [RootKeySource.fromBytes(Uint8Array.from(OLD))],
    });
    expect(hsm.unwrapRootKeyIds).toStrictEqual([]);
    expect(hsm.retiredUnwrapRootKeyIds).toStrictEqual([rootKeyIdOf(OLD)]);

    const again = await rotateRootKey({
      store,
      from: Uint8Array.from(OLD),
      to: Uint8Array.from(NEW),
    });
    expect(again).toMatchObject({
      fromRootKeyId: rootKeyIdOf(OLD),
      toRootKeyId: rootKeyIdOf(NEW),
      rewrittenKeys: 0,
      rewrappedVersions: 0,
    });
    const fresh = await createKms({ store, rootKey: Uint8Array.from(NEW) });
    await fresh.enableKey({ keyId });
    const out = await fresh.decrypt({ ciphertextBlob: blob });
    expect(Buffer.from(out.plaintext).equals(Buffer.from(plaintext))).toBe(true);
  });

  it("stays accepted for unwrapping while the rotation has not finished", async () => {
    const store = new MemoryKeyStore();
    const old = await createKms({ store, rootKey: Uint8Array.from(OLD) });
    const keyId = (await old.createKey({})).keyMetadata.keyId;
    const blob = (await old.encrypt({ keyId, plaintext })).ciphertextBlob;
    const switched = await createKms({
      store,
      rootKey: Uint8Array.from(NEW),
      unwrapRootKeys: [Uint8Array.from(OLD)],
    });
    const out = await switched.decrypt({ ciphertextBlob: blob });
    expect(Buffer.from(out.plaintext).equals(Buffer.from(plaintext))).toBe(true);
  });
});
