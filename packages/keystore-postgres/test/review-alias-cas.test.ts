/**
 * updateAlias and deleteAlias as a compare-and-set on the stored seal (found in adversarial
 * review: an instance whose cached alias was behind another instance's updates wrote over them
 * with a lower seal counter, and the other instance then refused the alias as rolled back; such
 * an instance deleted an alias another instance had moved to a key the caller had no rights
 * on). The Kms retries a lost compare-and-set from a fresh, re-authorized read.
 */
import {
  AccessDeniedError,
  createKms,
  KeyStoreConflictError,
  NotFoundError,
  type StoredAlias,
} from "@kms/core";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

const ROOT = Uint8Array.from({ length: 32 }, (_, i) => 0xb1 + i);
const T0 = Date.UTC(2026, 0, 1);
const ACCOUNT_ROOT = "arn:aws:iam::000000000000:root";
const ALICE = "arn:aws:iam::111122223333:user/alice";
const ALICE_MAY_DELETE_ALIASES = JSON.stringify({
  Version: "2012-10-17",
  Statement: [
    { Effect: "Allow", Principal: { AWS: ACCOUNT_ROOT }, Action: "kms:*", Resource: "*" },
    { Effect: "Allow", Principal: { AWS: ALICE }, Action: "kms:DeleteAlias", Resource: "*" },
  ],
});

describe.skipIf(target.skipReason !== undefined)("PostgresKeyStore: alias compare-and-set", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function open(schema: string, options: { listen?: boolean; maxStalenessMs?: number } = {}) {
    const store = await PostgresKeyStore.open({
      connectionString: target.url!,
      schema,
      ...options,
    });
    cleanups.push(() => store.close());
    return store;
  }

  it("writes only over the expected seal (null: over none)", async () => {
    const schema = randomSchema("alias_cas");
    cleanups.push(() => dropSchema(schema));
    const one = await open(schema);
    const two = await open(schema);
    const alias: StoredAlias = {
      aliasName: "alias/x",
      targetKeyId: "k-a",
      createdAt: T0,
      updatedAt: T0,
    };
    await one.createAlias(alias);
    await two.updateAlias("alias/x", "k-b", T0 + 1, "seal-1", null);
    await expect(one.updateAlias("alias/x", "k-c", T0 + 2, "s", null)).rejects.toBeInstanceOf(
      KeyStoreConflictError,
    );
    await expect(one.updateAlias("alias/x", "k-c", T0 + 2, "s", "seal-0")).rejects.toBeInstanceOf(
      KeyStoreConflictError,
    );
    // A seal no column can hold matches nothing stored.
    await expect(
      one.updateAlias("alias/x", "k-c", T0 + 2, "s", "seal\u0000"),
    ).rejects.toBeInstanceOf(KeyStoreConflictError);
    await one.updateAlias("alias/x", "k-c", T0 + 3, "seal-2", "seal-1");
    expect(await two.getAlias("alias/x")).toMatchObject({ targetKeyId: "k-c", seal: "seal-2" });
    await expect(one.updateAlias("alias/none", "k-c", T0, "s", "seal-2")).rejects.toBeInstanceOf(
      NotFoundError,
    );
    await two.updateAlias("alias/x", "k-a", T0 + 4);
    expect(await one.getAlias("alias/x")).toStrictEqual({ ...alias, updatedAt: T0 + 4 });
  });

  it("an instance behind on an alias cannot overwrite newer updates; its call is retried on the newer record", async () => {
    const schema = randomSchema("alias_cas");
    cleanups.push(() => dropSchema(schema));
    const fresh = await createKms({ store: await open(schema), rootKey: ROOT, audit: false });
    // No notifications and a long staleness bound: this instance serves its cached alias.
    const behind = await createKms({
      store: await open(schema, { listen: false, maxStalenessMs: 120_000 }),
      rootKey: ROOT,
      audit: false,
    });
    const k1 = (await fresh.createKey()).keyMetadata.keyId;
    const k2 = (await fresh.createKey()).keyMetadata.keyId;
    const k3 = (await fresh.createKey()).keyMetadata.keyId;
    await fresh.createAlias({ aliasName: "alias/x", targetKeyId: k1 });
    expect((await behind.describeKey({ keyId: "alias/x" })).keyMetadata.keyId).toBe(k1);

    await fresh.updateAlias({ aliasName: "alias/x", targetKeyId: k2 });
    await fresh.updateAlias({ aliasName: "alias/x", targetKeyId: k1 });
    // The write based on the cached record loses and drops it; the Kms reads the current one,
    // authorizes again and writes over that.
    await behind.updateAlias({ aliasName: "alias/x", targetKeyId: k3 });
    // The other instance hears of it by notification, within its staleness bound, and does not
    // refuse it as rolled back (as it would a record written with a lower seal counter).
    await expect
      .poll(async () => (await fresh.describeKey({ keyId: "alias/x" })).keyMetadata.keyId)
      .toBe(k3);
  });

  it("deletes only over the expected seal (null: over none)", async () => {
    const schema = randomSchema("alias_cas");
    cleanups.push(() => dropSchema(schema));
    const one = await open(schema);
    const two = await open(schema);
    const alias: StoredAlias = {
      aliasName: "alias/x",
      targetKeyId: "k-a",
      createdAt: T0,
      updatedAt: T0,
    };
    await one.createAlias(alias);
    expect(await one.getAlias("alias/x")).toStrictEqual(alias);
    await two.updateAlias("alias/x", "k-b", T0 + 1, "seal-1", null);
    await expect(one.deleteAlias("alias/x", null)).rejects.toBeInstanceOf(KeyStoreConflictError);
    await expect(one.deleteAlias("alias/x", "seal-0")).rejects.toBeInstanceOf(
      KeyStoreConflictError,
    );
    // A seal no column can hold matches nothing stored.
    await expect(one.deleteAlias("alias/x", "seal\u0000")).rejects.toBeInstanceOf(
      KeyStoreConflictError,
    );
    // Each failed delete dropped `one`'s cached record: it reads the current one.
    expect(await one.getAlias("alias/x")).toMatchObject({ targetKeyId: "k-b", seal: "seal-1" });
    await one.deleteAlias("alias/x", "seal-1");
    expect(await one.getAlias("alias/x")).toBeUndefined();
    await expect(one.deleteAlias("alias/x", "seal-1")).rejects.toBeInstanceOf(NotFoundError);
    // Without an expected seal: unconditional, as before.
    await two.createAlias({ ...alias, seal: "seal-2" });
    await one.deleteAlias("alias/x");
    expect(await one.getAlias("alias/x")).toBeUndefined();
  });

  it("an instance behind on an alias does not delete it once moved to a key the caller may not touch", async () => {
    const schema = randomSchema("alias_cas");
    cleanups.push(() => dropSchema(schema));
    const fresh = await createKms({ store: await open(schema), rootKey: ROOT, audit: false });
    const behind = await createKms({
      store: await open(schema, { listen: false, maxStalenessMs: 120_000 }),
      rootKey: ROOT,
      audit: false,
    });
    const mine = (await fresh.createKey({ policy: ALICE_MAY_DELETE_ALIASES })).keyMetadata.keyId;
    const theirs = (await fresh.createKey()).keyMetadata.keyId;
    await fresh.createAlias({ aliasName: "alias/app", targetKeyId: mine });
    expect((await behind.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(mine);

    await fresh.updateAlias({ aliasName: "alias/app", targetKeyId: theirs });
    // `behind` authorizes Alice on its cached record (on `mine`); the delete of that record
    // loses, and the retry, on the current record, is authorized on `theirs` and refused.
    await expect(
      behind.deleteAlias({ aliasName: "alias/app" }, { principal: ALICE }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    expect((await fresh.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(theirs);
    expect((await behind.describeKey({ keyId: "alias/app" })).keyMetadata.keyId).toBe(theirs);
  });
});
