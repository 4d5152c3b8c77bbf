// The README examples, run as written (in a temporary directory instead of ./), so the
// documentation cannot rot.
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, RootKeySource } from "@kms/core";
import { readmeDrift } from "@kms/tooling/readme";
import Database from "better-sqlite3";
import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { retainSqliteHandle, SqliteAuditSink, SqliteKeyStore } from "../src/index.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-sqlite-readme-"));
  vi.stubEnv("KMS_ROOT_KEY", randomBytes(32).toString("hex"));
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await rm(dir, { recursive: true, force: true });
});

it("runs the Example: a key created, used, and still there after reopening", async () => {
  const store = SqliteKeyStore.open({ path: join(dir, "kms.db") });
  const kms = await createKms({ store, rootKey: RootKeySource.fromEnv("KMS_ROOT_KEY") });

  const { keyMetadata } = await kms.createKey({ description: "orders" });
  const { ciphertextBlob } = await kms.encrypt({
    keyId: keyMetadata.keyId,
    plaintext: new TextEncoder().encode("4111 1111 1111 1111"),
    encryptionContext: { table: "orders", tenant: "acme" },
  });

  await kms.close(); // closes the store, and the file with it
  await expect(store.getKey(keyMetadata.keyId)).rejects.toThrow();

  const reopened = await createKms({
    store: SqliteKeyStore.open({ path: join(dir, "kms.db") }),
    rootKey: RootKeySource.fromEnv("KMS_ROOT_KEY"),
  });
  const { plaintext } = await reopened.decrypt({
    ciphertextBlob,
    encryptionContext: { table: "orders", tenant: "acme" },
  });
  expect(new TextDecoder().decode(plaintext)).toBe("4111 1111 1111 1111");
  await reopened.close();
});

it("opens a store on a database the caller opened, and leaves it open", async () => {
  const db = new Database(join(dir, "app.db"));
  retainSqliteHandle(db); // see Caveats: a Database opened directly, on Node ≥ 24.19
  const store = SqliteKeyStore.open({ database: db });
  const kms = await createKms({ store, rootKey: RootKeySource.fromEnv("KMS_ROOT_KEY") });
  await kms.createKey({});
  await kms.close();
  expect(db.open).toBe(true);
  db.close();
});

it("runs the audit trail example: one chain in the key file", async () => {
  const path = join(dir, "kms.db");
  for (const count of [1, 2]) {
    const kms = await createKms({
      store: SqliteKeyStore.open({ path }),
      rootKey: RootKeySource.fromEnv("KMS_ROOT_KEY"),
      audit: new SqliteAuditSink({ path }),
    });
    await kms.createKey({});
    expect(await kms.audit.verify()).toEqual({
      ok: true,
      count,
      head: { sequence: count - 1, hash: expect.any(String) },
    });
    await kms.close(); // closes the store and the sink
  }
});

it("is the README's example: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/keystore-sqlite",
    blocks: 3,
    adapted: [
      // Files in a temporary directory instead of ./; the audit check asserts rather than prints.
      'const store = SqliteKeyStore.open({ path: "./kms.db" });',
      'const db = new Database("./app.db");',
      'store: SqliteKeyStore.open({ path: "./kms.db" }),',
      'audit: new SqliteAuditSink({ path: "./kms.db" }), // or { database } you opened; own file works too',
      "console.log(await kms.audit.verify()); // { ok: true, count, head }",
    ],
  });
  expect(drift).toEqual([]);
});
