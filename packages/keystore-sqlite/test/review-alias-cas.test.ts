/**
 * updateAlias as a compare-and-set on the stored seal (found in adversarial review: a write
 * based on an older read of an alias replaced a newer one, and the instance that wrote the newer
 * one then refused the alias as rolled back).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
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

  it("two Kms on one file: a late alias write based on an older read fails; both keep the alias", async () => {
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

    const raw = SqliteKeyStore.open({ path });
    let reached: () => void = () => {};
    let release: () => void = () => {};
    const atGate = new Promise<void>((r) => {
      reached = r;
    });
    const open = new Promise<void>((r) => {
      release = r;
    });
    // A's store, whose alias writes wait at a gate: B moves the alias meanwhile.
    const gated: KeyStore = {
      description: raw.description,
      getKey: (id) => raw.getKey(id),
      listKeys: (o) => raw.listKeys(o),
      createKey: (k) => raw.createKey(k),
      updateKey: (k) => raw.updateKey(k),
      deleteKey: (id, r) => raw.deleteKey(id, r),
      getAlias: (n) => raw.getAlias(n),
      listAliases: (o) => raw.listAliases(o),
      createAlias: (x) => raw.createAlias(x),
      async updateAlias(...args) {
        reached();
        await open;
        return raw.updateAlias(...args);
      },
      deleteAlias: (n) => raw.deleteAlias(n),
      getSetting: (n) => raw.getSetting(n),
      putSettingIfAbsent: (n, v) => raw.putSettingIfAbsent(n, v),
      close: () => raw.close(),
    };
    const a = await createKms({ store: gated, rootKey: ROOT, audit: false });
    const late = a.updateAlias({ aliasName: "alias/x", targetKeyId: k3 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await atGate;
    await b.updateAlias({ aliasName: "alias/x", targetKeyId: k2 });
    await b.updateAlias({ aliasName: "alias/x", targetKeyId: k1 });
    release();
    expect(await late).toBeInstanceOf(KeyStoreConflictError);
    expect((await b.describeKey({ keyId: "alias/x" })).keyMetadata.keyId).toBe(k1);
    expect((await a.describeKey({ keyId: "alias/x" })).keyMetadata.keyId).toBe(k1);
    await a.close();
    await b.close();
  });
});
