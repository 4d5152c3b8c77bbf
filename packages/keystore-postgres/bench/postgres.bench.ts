/**
 * `pnpm bench` for the PostgreSQL store: encrypt at 1 KiB and createKey, each beside the memory
 * store in the same process (ratios, not absolute numbers). Needs KMS_TEST_POSTGRES_URL; runs in
 * a throw-away schema that it drops afterwards.
 */
import { randomBytes } from "node:crypto";
import { createKms } from "@kms/core";
import { compare } from "@kms/tooling/bench";
import pg from "pg";
import { PostgresKeyStore } from "../src/index.ts";

const url = process.env.KMS_TEST_POSTGRES_URL;
if (url === undefined || url === "") {
  console.log(
    "postgres bench skipped: set KMS_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) to run it",
  );
} else {
  const schema = `kms_bench_${randomBytes(6).toString("hex")}`;
  const store = await PostgresKeyStore.open({ connectionString: url, schema });
  try {
    const root = new Uint8Array(32).fill(7);
    const postgres = await createKms({ store, rootKey: root });
    const memory = await createKms({ rootKey: root });
    const pgKey = (await postgres.createKey()).keyMetadata.keyId;
    const memKey = (await memory.createKey()).keyMetadata.keyId;
    const plaintext = randomBytes(1024);
    const context = { tenant: "acme", table: "patients" };
    await compare(
      "encrypt 1 KiB, key record cached",
      {
        name: "memory store encrypt",
        run: () => memory.encrypt({ keyId: memKey, plaintext, encryptionContext: context }),
        bytes: 1024,
      },
      [
        {
          name: "PostgreSQL store encrypt",
          run: () => postgres.encrypt({ keyId: pgKey, plaintext, encryptionContext: context }),
          bytes: 1024,
        },
      ],
    );
    await compare(
      "createKey (one durable transaction per key)",
      { name: "memory store createKey", run: () => memory.createKey() },
      [{ name: "PostgreSQL store createKey", run: () => postgres.createKey() }],
    );
    await postgres.close();
  } finally {
    await store.close();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.end();
  }
}
