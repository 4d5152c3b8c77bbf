// The README examples, run as written (each in a schema of its own, dropped afterwards), so the
// documentation cannot rot.
import { randomBytes } from "node:crypto";
import { createKms, RootKeySource } from "@kms/core";
import { readmeDrift } from "@kms/tooling/readme";
import pg from "pg";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { PostgresAuditSink, PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

describe.skipIf(target.skipReason !== undefined)("README examples", () => {
  let schema: string;
  beforeEach(() => {
    schema = randomSchema("readme");
    vi.stubEnv("DATABASE_URL", target.url);
    vi.stubEnv("KMS_ROOT_KEY", randomBytes(32).toString("hex"));
  });
  afterEach(async () => {
    vi.unstubAllEnvs();
    await dropSchema(schema);
  });

  it("runs the Example, and the key outlives the Kms that created it", async () => {
    const store = await PostgresKeyStore.open({
      connectionString: process.env.DATABASE_URL!, // or { pool } with your own pg.Pool
      schema,
    });
    const kms = await createKms({ store, rootKey: RootKeySource.fromEnv() });

    const { keyMetadata } = await kms.createKey({ description: "orders" });
    const { ciphertextBlob } = await kms.encrypt({
      keyId: keyMetadata.keyId,
      plaintext: new TextEncoder().encode("4111 1111 1111 1111"),
      encryptionContext: { table: "orders" },
    });
    await kms.close(); // closes the store (and its pool, if the store created it)

    const again = await createKms({
      store: await PostgresKeyStore.open({ connectionString: process.env.DATABASE_URL!, schema }),
      rootKey: RootKeySource.fromEnv(),
    });
    const { plaintext } = await again.decrypt({
      ciphertextBlob,
      encryptionContext: { table: "orders" },
    });
    expect(new TextDecoder().decode(plaintext)).toBe("4111 1111 1111 1111");
    await again.close();
  });

  it("runs the audit trail example on a pool of the caller's, which it leaves open", async () => {
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
    pool.on("error", () => {}); // an idle connection that breaks; the pool drops it
    const kms = await createKms({
      store: await PostgresKeyStore.open({ pool, schema }),
      audit: await PostgresAuditSink.open({ pool, schema }),
      rootKey: RootKeySource.fromEnv(),
    });
    await kms.createKey({});
    expect(await kms.audit.verify()).toEqual({
      ok: true,
      count: 1,
      head: { sequence: 0, hash: expect.any(String) },
    });
    await kms.close(); // closes the store and the sink; the pool you passed stays open
    expect((await pool.query("SELECT 1 AS one")).rows).toEqual([{ one: 1 }]);
    await pool.end();
  });
});

it("is the README's example: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/keystore-postgres",
    blocks: 2,
    adapted: [
      // A schema per test (dropped afterwards) instead of "kms" or the default; the audit check
      // asserts rather than prints.
      'schema: "kms",',
      "store: await PostgresKeyStore.open({ pool }),",
      "audit: await PostgresAuditSink.open({ pool }), // options: { pool } | { connectionString }, schema, lockTimeoutMs",
      "console.log(await kms.audit.verify()); // the whole shared trail, from any instance",
    ],
  });
  expect(drift).toEqual([]);
});
