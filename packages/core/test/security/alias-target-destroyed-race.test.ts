/**
 * Two Kms instances on one store: one creates or moves an alias while the other destroys the
 * target key (maintenance, its deletion window past) between the first's check of the key and
 * its write of the alias. deleteKey removes a key with its aliases, but an alias written after
 * it pointed to a key that no longer existed: it held its name (createAlias of it failed with
 * AlreadyExists) and resolved to NotFound. The write is confirmed against the key afterwards and
 * undone, and the call fails as if it had checked the key after its destruction.
 */
import { createKms, type KeyStore, type Kms, MemoryKeyStore, NotFoundError } from "@kms/core";
import { ManualClock } from "@kms/core/testing";
import { beforeEach, describe, expect, it } from "vitest";

const ROOT_KEY = Uint8Array.from({ length: 32 }, (_, i) => 0x37 + i);

/** `shared`, with the first call of `method` held at a gate until released. */
function gatedOn(shared: KeyStore, method: "createAlias" | "updateAlias") {
  let reached: () => void = () => {};
  let release: () => void = () => {};
  const atGate = new Promise<void>((r) => {
    reached = r;
  });
  const open = new Promise<void>((r) => {
    release = r;
  });
  let held = true;
  const pass = async <T>(run: () => Promise<T>): Promise<T> => {
    if (held) {
      held = false;
      reached();
      await open;
    }
    return run();
  };
  const store: KeyStore = {
    description: shared.description,
    getKey: (id) => shared.getKey(id),
    listKeys: (o) => shared.listKeys(o),
    createKey: (k) => shared.createKey(k),
    updateKey: (k) => shared.updateKey(k),
    deleteKey: (id, r) => shared.deleteKey(id, r),
    getAlias: (n) => shared.getAlias(n),
    listAliases: (o) => shared.listAliases(o),
    createAlias: (a) =>
      method === "createAlias" ? pass(() => shared.createAlias(a)) : shared.createAlias(a),
    updateAlias: (...args) =>
      method === "updateAlias"
        ? pass(() => shared.updateAlias(...args))
        : shared.updateAlias(...args),
    deleteAlias: (...args) => shared.deleteAlias(...args),
    getSetting: (n) => shared.getSetting(n),
    putSettingIfAbsent: (n, v) => shared.putSettingIfAbsent(n, v),
    close: () => shared.close(),
  };
  return { store, atGate, release };
}

let clock: ManualClock;
let shared: MemoryKeyStore;
/** The instance that destroys the key. */
let b: Kms;
let kept: string;
let doomed: string;

beforeEach(async () => {
  clock = new ManualClock();
  shared = new MemoryKeyStore();
  b = await createKms({ store: shared, rootKey: Uint8Array.from(ROOT_KEY), audit: false, clock });
  kept = (await b.createKey()).keyMetadata.keyId;
  doomed = (await b.createKey()).keyMetadata.keyId;
});

async function instanceOn(store: KeyStore): Promise<Kms> {
  return createKms({ store, rootKey: Uint8Array.from(ROOT_KEY), audit: false, clock });
}

/** Schedules `doomed`'s deletion, lets its window pass and has maintenance destroy it. */
async function destroyDoomed(): Promise<void> {
  await b.scheduleKeyDeletion({ keyId: doomed, pendingWindowInDays: 7 });
  clock.advanceDays(8);
  expect((await b.runMaintenance()).deletedKeyIds).toEqual([doomed]);
}

const reason = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

describe("a key destroyed between the check of an alias's target and the alias write", () => {
  it("createAlias fails with NotFound and leaves no alias of the destroyed key", async () => {
    const gate = gatedOn(shared, "createAlias");
    const a = await instanceOn(gate.store);
    const created = reason(a.createAlias({ aliasName: "alias/app", targetKeyId: doomed }));
    await gate.atGate;
    await destroyDoomed();
    gate.release();
    const error = await created;
    expect(error).toBeInstanceOf(NotFoundError);
    expect((error as Error).message).toMatch(new RegExp(`key .*${doomed} does not exist`));
    expect(await shared.getAlias("alias/app")).toBeUndefined();
    expect(await shared.listAliases({ limit: 10, targetKeyId: doomed })).toEqual([]);
    // The name is free again, for a key that exists.
    await b.createAlias({ aliasName: "alias/app", targetKeyId: kept });
    expect((await b.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(kept);
  });

  it("updateAlias fails with NotFound and leaves the alias on the key it pointed to", async () => {
    await b.createAlias({ aliasName: "alias/app", targetKeyId: kept });
    const gate = gatedOn(shared, "updateAlias");
    const a = await instanceOn(gate.store);
    const moved = reason(a.updateAlias({ aliasName: "alias/app", targetKeyId: doomed }));
    await gate.atGate;
    await destroyDoomed();
    gate.release();
    const error = await moved;
    expect(error).toBeInstanceOf(NotFoundError);
    expect((error as Error).message).toMatch(new RegExp(`key .*${doomed} does not exist`));
    expect((await shared.getAlias("alias/app"))?.targetKeyId).toBe(kept);
    // Both instances still read the alias, sealed and resolved to the key it was left on.
    for (const kms of [a, b]) {
      expect((await kms.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(kept);
    }
  });

  it("an alias written before the destruction goes with the key, and the call succeeds", async () => {
    const a = await instanceOn(shared);
    await a.createAlias({ aliasName: "alias/app", targetKeyId: doomed });
    await destroyDoomed();
    expect(await shared.getAlias("alias/app")).toBeUndefined();
  });
});
