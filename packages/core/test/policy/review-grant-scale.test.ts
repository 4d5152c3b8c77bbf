/**
 * Grants at scale, found in review: a key with many grants made every call on it walk all of
 * them (the seal check's frozen test, grant evaluation, listGrants' sort), the cap let a
 * principal allowed CreateGrant make every write of a shared key cost O(50 000) grants, and
 * ListRetirableGrants read every key of the store whatever its limit. Work is counted (grant
 * elements read, key records read), never timed.
 */
import {
  createKms,
  LimitExceededError,
  MemoryKeyStore,
  type StoredGrant,
  type StoredKey,
  ValidationError,
} from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { describe, expect, it } from "vitest";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0x21 + i);
const WORKER = "arn:aws:iam::111122223333:role/worker";
const plaintext = new TextEncoder().encode("grant scale");

/**
 * A memory store whose records' grant lists count every element read. The wrapped record is
 * made once per stored record and handed out on every read, frozen, as caching stores do.
 */
class CountingGrantsStore extends MemoryKeyStore {
  elementReads = 0;
  readonly #wrapped = new WeakMap<StoredKey, StoredKey>();

  override async getKey(keyId: string): Promise<StoredKey | undefined> {
    const key = await super.getKey(keyId);
    if (key?.grants === undefined) return key;
    let wrapped = this.#wrapped.get(key);
    if (wrapped === undefined) {
      const counted = new Proxy(key.grants, {
        get: (target, property, receiver) => {
          if (typeof property === "string" && /^\d+$/.test(property)) this.elementReads++;
          return Reflect.get(target, property, receiver) as unknown;
        },
      });
      wrapped = Object.freeze({ ...key, grants: counted });
      this.#wrapped.set(key, wrapped);
    }
    return wrapped;
  }
}

async function keyWithGrants(count: number) {
  const store = new CountingGrantsStore();
  const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  for (let i = 0; i < count; i++) {
    await kms.createGrant({
      keyId,
      granteePrincipal: i === count - 1 ? WORKER : `arn:aws:iam::111122223333:role/r${i}`,
      operations: ["Encrypt", "Decrypt"],
      constraints: { encryptionContextSubset: { tenant: `t${i}` } },
    });
  }
  return { store, kms, keyId };
}

describe("calls on a key with many grants", () => {
  it("read none of its grants once the record was verified (encrypt by the owner)", async () => {
    const { store, kms, keyId } = await keyWithGrants(200);
    await kms.encrypt({ keyId, plaintext });
    store.elementReads = 0;
    for (let i = 0; i < 10; i++) await kms.encrypt({ keyId, plaintext });
    // Before: every read walked all 200 grants to tell that the record was still frozen.
    expect(store.elementReads).toBe(0);
  });

  it("read none of its grants for a grantee allowed by its own grant", async () => {
    const { store, kms, keyId } = await keyWithGrants(200);
    const asWorker = { principal: WORKER };
    const context = { encryptionContext: { tenant: "t199" } };
    await kms.encrypt({ keyId, plaintext, ...context }, asWorker);
    store.elementReads = 0;
    for (let i = 0; i < 10; i++) {
      const { ciphertextBlob } = await kms.encrypt({ keyId, plaintext, ...context }, asWorker);
      await kms.decrypt({ ciphertextBlob, ...context }, asWorker);
    }
    expect(store.elementReads).toBe(0);
    // Still decided by that grant, and still refused outside its constraint.
    const events = await kms.audit.events();
    expect(events.at(-1)?.additionalEventData?.authorization).toEqual([
      expect.objectContaining({ action: "kms:Decrypt", decision: "grant-allow" }),
    ]);
    await expect(
      kms.encrypt({ keyId, plaintext, encryptionContext: { tenant: "t1" } }, asWorker),
    ).rejects.toMatchObject({ code: "AccessDeniedException" });
  });

  it("listGrants pages without sorting every grant on every call", async () => {
    const { store, kms, keyId } = await keyWithGrants(60);
    const all = (await kms.listGrants({ keyId, limit: 100 })).grants.map((g) => g.grantId);
    expect(all).toEqual([...all].sort());
    store.elementReads = 0;
    const paged: string[] = [];
    let marker: string | undefined;
    do {
      const page = await kms.listGrants({ keyId, limit: 7, ...(marker ? { marker } : {}) });
      paged.push(...page.grants.map((g) => g.grantId));
      marker = page.nextMarker;
      expect(page.truncated).toBe(marker !== undefined);
    } while (marker !== undefined);
    expect(paged).toEqual(all);
    expect(store.elementReads).toBe(0);
    // The filters still apply within the page.
    const mine = await kms.listGrants({ keyId, granteePrincipal: WORKER });
    expect(mine.grants.map((g) => g.granteePrincipal)).toEqual([WORKER]);
    const one = await kms.listGrants({ keyId, grantId: all[3]! });
    expect(one.grants.map((g) => g.grantId)).toEqual([all[3]]);
  });
});

/** A raw store holding one key with `count` grants and no seal (sealed when the Kms opens). */
async function seededStore(count: number): Promise<{ store: MemoryKeyStore; keyId: string }> {
  const store = new MemoryKeyStore();
  const seed = await createKms({ store, rootKey: Uint8Array.from(ROOT) });
  const keyId = (await seed.createKey()).keyMetadata.keyId;
  await seed.close();
  const raw = (await store.getKey(keyId))!;
  const grants: StoredGrant[] = Array.from({ length: count }, (_, i) => ({
    grantId: i.toString(16).padStart(64, "0"),
    granteePrincipal: `arn:aws:iam::111122223333:role/r${i}`,
    issuingPrincipal: "arn:aws:iam::000000000000:root",
    operations: ["Decrypt"],
    createdAt: raw.createdAt,
  }));
  const { seal: _, ...unsealed } = raw;
  await store.updateKey({ ...unsealed, grants, revision: raw.revision + 1 });
  return { store, keyId };
}

describe("grants per key", () => {
  const grant = (keyId: string) => ({
    keyId,
    granteePrincipal: WORKER,
    operations: ["Decrypt" as const],
  });

  it("are at most 1 000 by default: createGrant past it is LimitExceededException", async () => {
    const { store, keyId } = await seededStore(1000);
    const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT), unsealedRecords: "seal" });
    const error = await kms.createGrant(grant(keyId)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LimitExceededError);
    expect((error as Error).message).toContain("at most 1000 grants");
    expect((error as Error).message).toContain("maxGrantsPerKey");
    // Retiring one makes room again; the grants already stored are all kept.
    const [first] = (await kms.listGrants({ keyId, limit: 1 })).grants;
    await kms.revokeGrant({ keyId, grantId: first!.grantId });
    await kms.createGrant(grant(keyId));
    await expect(kms.createGrant(grant(keyId))).rejects.toBeInstanceOf(LimitExceededError);
  });

  it("are up to maxGrantsPerKey when set, and grants stored beyond it are kept", async () => {
    const { store, keyId } = await seededStore(1000);
    const raised = await createKms({
      store,
      rootKey: Uint8Array.from(ROOT),
      unsealedRecords: "seal",
      maxGrantsPerKey: 1001,
    });
    await raised.createGrant(grant(keyId));
    await expect(raised.createGrant(grant(keyId))).rejects.toBeInstanceOf(LimitExceededError);

    const lowered = await createKms({ store, rootKey: Uint8Array.from(ROOT), maxGrantsPerKey: 2 });
    await expect(lowered.createGrant(grant(keyId))).rejects.toThrow("at most 2 grants");
    const page = await lowered.listGrants({ keyId, limit: 100 });
    expect(page.grants).toHaveLength(100);
    expect(page.truncated).toBe(true);
  });

  it.each([0, -1, 1.5, 50001, "10", Number.NaN])("maxGrantsPerKey %s is refused", async (max) => {
    await expect(createKms({ maxGrantsPerKey: max as number })).rejects.toBeInstanceOf(
      ValidationError,
    );
  });

  it("accepts AWS's quota of 50 000 as the highest maxGrantsPerKey", async () => {
    const kms = await createKms({ maxGrantsPerKey: 50000 });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await expect(kms.createGrant(grant(keyId))).resolves.toBeDefined();
  });
});

/** A memory store that counts the key records it hands out (getKey and listKeys). */
class CountingReadsStore extends MemoryKeyStore {
  recordsRead = 0;

  override async getKey(keyId: string): Promise<StoredKey | undefined> {
    const key = await super.getKey(keyId);
    if (key !== undefined) this.recordsRead++;
    return key;
  }

  override async listKeys(options: Parameters<MemoryKeyStore["listKeys"]>[0]) {
    const page = await super.listKeys(options);
    this.recordsRead += page.length;
    return page;
  }
}

describe("listRetirableGrants", () => {
  const RETIRER = "arn:aws:iam::111122223333:role/retirer";

  async function fixture(keys: number) {
    const store = new CountingReadsStore();
    const clock = new ManualClock();
    const kms = await createKms({ store, rootKey: Uint8Array.from(ROOT), clock });
    const ids: string[] = [];
    for (let i = 0; i < keys; i++) ids.push((await kms.createKey()).keyMetadata.keyId);
    ids.sort();
    return { store, clock, kms, ids };
  }

  const retirable = (keyId: string) => ({
    keyId,
    granteePrincipal: WORKER,
    retiringPrincipal: RETIRER,
    operations: ["Decrypt" as const],
  });

  /** Every page of the listing at `limit`, as `<key id>/<grant id>`. */
  async function allPages(kms: Awaited<ReturnType<typeof createKms>>, limit: number) {
    const seen: string[] = [];
    let marker: string | undefined;
    do {
      const page = await kms.listRetirableGrants({
        retiringPrincipal: RETIRER,
        limit,
        ...(marker ? { marker } : {}),
      });
      expect(page.grants.length).toBeLessThanOrEqual(limit);
      expect(page.truncated).toBe(page.nextMarker !== undefined);
      for (const g of page.grants) seen.push(`${g.keyId.split("/").at(-1)}/${g.grantId}`);
      marker = page.nextMarker;
    } while (marker !== undefined);
    return seen;
  }

  it("stops reading keys once a page and one more grant are found", async () => {
    const { store, kms, ids } = await fixture(250);
    for (const keyId of ids.slice(0, 3)) await kms.createGrant(retirable(keyId));
    store.recordsRead = 0;
    const page = await kms.listRetirableGrants({ retiringPrincipal: RETIRER, limit: 2 });
    expect(page.grants.map((g) => g.keyId.split("/").at(-1))).toEqual(ids.slice(0, 2));
    expect(page.truncated).toBe(true);
    // One read of 100 keys (the store's page) instead of all 250.
    expect(store.recordsRead).toBeLessThanOrEqual(100);
  });

  it("pages through every retirable grant in order, a key's grants split across pages", async () => {
    const { kms, ids } = await fixture(230);
    const chosen = [ids[0]!, ids[5]!, ids[101]!, ids[199]!, ids[229]!];
    const expected: string[] = [];
    for (const [n, keyId] of chosen.entries()) {
      for (let i = 0; i <= n; i++) {
        const { grantId } = await kms.createGrant(retirable(keyId));
        expected.push(`${keyId}/${grantId}`);
      }
    }
    // Grants for someone else, and ones this principal may not retire, are not listed.
    await kms.createGrant({ ...retirable(ids[3]!), retiringPrincipal: WORKER });
    await kms.createGrant({ keyId: ids[4]!, granteePrincipal: RETIRER, operations: ["Decrypt"] });
    expected.sort();
    for (const limit of [1, 2, 3, 4, 7, 15, 100]) {
      expect(await allPages(kms, limit)).toEqual(expected);
    }
  });

  it("resumes after a marker whose key was deleted meanwhile", async () => {
    const { clock, kms, ids } = await fixture(20);
    for (const keyId of [ids[2]!, ids[2]!, ids[9]!, ids[15]!]) {
      await kms.createGrant(retirable(keyId));
    }
    const first = await kms.listRetirableGrants({ retiringPrincipal: RETIRER, limit: 1 });
    expect(first.grants[0]!.keyId).toContain(ids[2]);
    await kms.scheduleKeyDeletion({ keyId: ids[2]!, pendingWindowInDays: 7 });
    clock.advance(8 * 24 * 3600 * 1000);
    const rest = await kms.listRetirableGrants({
      retiringPrincipal: RETIRER,
      marker: first.nextMarker!,
    });
    expect(rest.grants.map((g) => g.keyId.split("/").at(-1))).toEqual([ids[9], ids[15]]);
    expect(rest.truncated).toBe(false);
  });
});
