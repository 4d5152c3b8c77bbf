/**
 * updateAlias and deleteAlias as a compare-and-set on the stored seal (found in adversarial
 * review: a write based on an older read of an alias replaced a newer one, and the instance that
 * wrote the newer one then refused the alias as rolled back; a delete authorized on the key an
 * alias pointed to when read deleted it after another instance had moved it to a key the caller
 * had no rights on). The Kms retries a lost compare-and-set from a fresh, re-authorized read.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AccessDeniedError,
  createKms,
  type KeyStore,
  KeyStoreConflictError,
  NotFoundError,
  type StoredAlias,
} from "@kms/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SqliteKeyStore } from "../src/index.ts";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0xa1 + i);
const T0 = Date.UTC(2026, 0, 1);

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-sqlite-alias-cas-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const ACCOUNT_ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const ALICE_MAY_DELETE_ALIASES = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    { Effect: "Allow", Principal: { AWS: ACCOUNT_ROOT }, Action: "kms:*", Resource: "*" },
    { Effect: "Allow", Principal: { AWS: ALICE }, Action: "kms:DeleteAlias", Resource: "*" },
  ],
});

/**
 * `raw` as another instance's store: its first `method` call waits at a gate (so the other
 * instance can act in between), and every alias write's outcome is logged.
 */
function gated(raw: SqliteKeyStore, method: "updateAlias" | "deleteAlias") {
  const writes: string[] = [];
  let reached: () => void = () => {};
  let release: () => void = () => {};
  const atGate = new Promise<void>((r) => {
    reached = r;
  });
  const open = new Promise<void>((r) => {
    release = r;
  });
  let waiting = true;
  const write = async (name: typeof method, run: () => Promise<void>): Promise<void> => {
    if (name === method && waiting) {
      waiting = false;
      reached();
      await open;
    }
    try {
      await run();
      writes.push(`${name}: ok`);
    } catch (error) {
      writes.push(`${name}: ${(error as Error).constructor.name}`);
      throw error;
    }
  };
  const store: KeyStore = {
    description: raw.description,
    getKey: (id) => raw.getKey(id),
    listKeys: (o) => raw.listKeys(o),
    createKey: (k) => raw.createKey(k),
    updateKey: (k) => raw.updateKey(k),
    deleteKey: (id, r) => raw.deleteKey(id, r),
    getAlias: (n) => raw.getAlias(n),
    listAliases: (o) => raw.listAliases(o),
    createAlias: (x) => raw.createAlias(x),
    updateAlias: (...args) => write("updateAlias", () => raw.updateAlias(...args)),
    deleteAlias: (...args) => write("deleteAlias", () => raw.deleteAlias(...args)),
    getSetting: (n) => raw.getSetting(n),
    putSettingIfAbsent: (n, v) => raw.putSettingIfAbsent(n, v),
    close: () => raw.close(),
  };
  return { store, writes, atGate, release: () => release() };
}

/** Settles `promise` into its rejection reason, or undefined when it fulfilled. */
const reason = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => undefined,
    (error: unknown) => error,
  );

const alias = (seal?: string): StoredAlias => ({
  aliasName: "alias/x",
  targetKeyId: "k-a",
  createdAt: T0,
  updatedAt: T0,
  ...(seal === undefined ? {} : { seal }),
});

describe("SqliteKeyStore.updateAlias with an expected seal", () => {
  it("writes only over that seal (null: over none), across two connections", async () => {
    const path = join(dir, "kms.db");
    const one = SqliteKeyStore.open({ path });
    const two = SqliteKeyStore.open({ path });
    await one.createAlias(alias());
    await two.updateAlias("alias/x", "k-b", T0 + 1, "seal-1", null);
    // `one` read the alias before: its compare against "none" fails now.
    await expect(one.updateAlias("alias/x", "k-c", T0 + 2, "seal-x", null)).rejects.toBeInstanceOf(
      KeyStoreConflictError,
    );
    await expect(
      one.updateAlias("alias/x", "k-c", T0 + 2, "seal-x", "seal-0"),
    ).rejects.toBeInstanceOf(KeyStoreConflictError);
    expect(await one.getAlias("alias/x")).toMatchObject({ targetKeyId: "k-b", seal: "seal-1" });
    await one.updateAlias("alias/x", "k-c", T0 + 3, "seal-2", "seal-1");
    expect(await two.getAlias("alias/x")).toMatchObject({ targetKeyId: "k-c", seal: "seal-2" });
    await expect(
      one.updateAlias("alias/none", "k-c", T0, "seal-2", "seal-1"),
    ).rejects.toBeInstanceOf(NotFoundError);
    // Without an expected seal: unconditional, as before.
    await two.updateAlias("alias/x", "k-a", T0 + 4);
    expect(await one.getAlias("alias/x")).toStrictEqual({ ...alias(), updatedAt: T0 + 4 });
    await one.close();
    await two.close();
  });

  it("two Kms on one file: a late alias write based on an older read loses, then is retried on the newer record", async () => {
    const path = join(dir, "kms.db");
    const b = await createKms({
      store: SqliteKeyStore.open({ path }),
      rootKey: ROOT,
      audit: false,
    });
    const k1 = (await b.createKey()).keyMetadata.keyId;
    const k2 = (await b.createKey()).keyMetadata.keyId;
    const k3 = (await b.createKey()).keyMetadata.keyId;
    await b.createAlias({ aliasName: "alias/x", targetKeyId: k1 });

    const gate = gated(SqliteKeyStore.open({ path }), "updateAlias");
    const a = await createKms({ store: gate.store, rootKey: ROOT, audit: false });
    const late = reason(a.updateAlias({ aliasName: "alias/x", targetKeyId: k3 }));
    await gate.atGate;
    await b.updateAlias({ aliasName: "alias/x", targetKeyId: k2 });
    await b.updateAlias({ aliasName: "alias/x", targetKeyId: k1 });
    gate.release();

    expect(await late).toBeUndefined();
    expect(gate.writes).toStrictEqual(["updateAlias: KeyStoreConflictError", "updateAlias: ok"]);
    // Neither instance refuses the alias as rolled back.
    expect((await b.describeKey({ keyId: "alias/x" })).keyMetadata.keyId).toBe(k3);
    expect((await a.describeKey({ keyId: "alias/x" })).keyMetadata.keyId).toBe(k3);
    await a.close();
    await b.close();
  });
});

describe("SqliteKeyStore.deleteAlias with an expected seal", () => {
  it("deletes only over that seal (null: over none), across two connections", async () => {
    const path = join(dir, "kms.db");
    const one = SqliteKeyStore.open({ path });
    const two = SqliteKeyStore.open({ path });
    await one.createAlias(alias());
    // `one` has the alias cached without a seal; `two` moves it and seals it.
    expect(await one.getAlias("alias/x")).toStrictEqual(alias());
    await two.updateAlias("alias/x", "k-b", T0 + 1, "seal-1", null);
    await expect(one.deleteAlias("alias/x", null)).rejects.toBeInstanceOf(KeyStoreConflictError);
    await expect(one.deleteAlias("alias/x", "seal-0")).rejects.toBeInstanceOf(
      KeyStoreConflictError,
    );
    expect(await one.getAlias("alias/x")).toMatchObject({ targetKeyId: "k-b", seal: "seal-1" });
    await one.deleteAlias("alias/x", "seal-1");
    expect(await two.getAlias("alias/x")).toBeUndefined();
    await expect(two.deleteAlias("alias/x", "seal-1")).rejects.toBeInstanceOf(NotFoundError);
    // Without an expected seal: unconditional, as before.
    await two.createAlias(alias("seal-2"));
    await one.deleteAlias("alias/x");
    expect(await two.getAlias("alias/x")).toBeUndefined();
    await one.close();
    await two.close();
  });

  it("two Kms on one file: an alias moved meanwhile to a key the caller may not touch is not deleted", async () => {
    const path = join(dir, "kms.db");
    const b = await createKms({
      store: SqliteKeyStore.open({ path }),
      rootKey: ROOT,
      audit: false,
    });
    const mine = (await b.createKey({ policy: ALICE_MAY_DELETE_ALIASES })).keyMetadata.keyId;
    const theirs = (await b.createKey()).keyMetadata.keyId;
    await b.createAlias({ aliasName: "alias/app", targetKeyId: mine });

    const gate = gated(SqliteKeyStore.open({ path }), "deleteAlias");
    const a = await createKms({ store: gate.store, rootKey: ROOT, audit: false });
    // A reads the alias on `mine`, where Alice may delete it; B moves it before A's delete.
    const late = reason(a.deleteAlias({ aliasName: "alias/app" }, { principal: ALICE }));
    await gate.atGate;
    await b.updateAlias({ aliasName: "alias/app", targetKeyId: theirs });
    gate.release();

    // The delete based on the old record lost; the retry, authorized on `theirs`, is refused.
    expect(await late).toBeInstanceOf(AccessDeniedError);
    expect(gate.writes).toStrictEqual(["deleteAlias: KeyStoreConflictError"]);
    expect((await b.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(theirs);
    expect((await a.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(theirs);
    await a.close();
    await b.close();
  });
});
