import { randomBytes } from "node:crypto";
import { createKms, KmsInternalError } from "@kms/core";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresAuditSink, PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";
import { MIGRATIONS_TABLE, RELEASED_MIGRATIONS } from "./fixtures/old-schemas.ts";

const ROOT = new Uint8Array(32).fill(8);

describe.skipIf(target.skipReason !== undefined)("the privileges PostgresKeyStore needs", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function admin(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: target.url! });
    await client.connect();
    cleanups.push(() => client.end());
    return client;
  }

  /** A login role without CREATE on the database; dropped with everything it owns. */
  async function role(client: pg.Client): Promise<{ name: string; url: string }> {
    const name = `kms_role_${randomBytes(6).toString("hex")}`;
    await client.query(`CREATE ROLE ${name} LOGIN`);
    cleanups.push(async () => {
      await client.query(`DROP OWNED BY ${name}`);
      await client.query(`DROP ROLE ${name}`);
    });
    const url = new URL(target.url!);
    url.username = name;
    url.password = "";
    return { name, url: url.href };
  }

  /** Opens a store and an audit sink as `url` and uses both. */
  async function useAs(url: string, schema: string): Promise<void> {
    const kms = await createKms({
      store: await PostgresKeyStore.open({ connectionString: url, schema }),
      audit: await PostgresAuditSink.open({ connectionString: url, schema }),
      rootKey: ROOT,
    });
    try {
      const { keyId } = (await kms.createKey({ description: "app" })).keyMetadata;
      await kms.createAlias({ aliasName: "alias/app", targetKeyId: keyId });
      const { ciphertextBlob } = await kms.encrypt({
        keyId: "alias/app",
        plaintext: new Uint8Array(4),
      });
      expect((await kms.decrypt({ ciphertextBlob })).plaintext).toStrictEqual(new Uint8Array(4));
      expect(await kms.audit.verify()).toMatchObject({ ok: true });
    } finally {
      await kms.close();
    }
  }

  it("a role with USAGE on a current schema and DML on its tables opens and uses it", async () => {
    const client = await admin();
    const schema = randomSchema("priv");
    cleanups.push(() => dropSchema(schema));
    // Created by a deployment step with more rights.
    await (await PostgresKeyStore.open({ connectionString: target.url!, schema })).close();
    const app = await role(client);
    await client.query(`GRANT USAGE ON SCHEMA "${schema}" TO ${app.name}`);
    await client.query(
      `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "${schema}" TO ${app.name}`,
    );
    await useAs(app.url, schema);
  });

  it("a role with only USAGE and DML on a schema that needs a migration is told so, and nothing changes", async () => {
    const client = await admin();
    const schema = randomSchema("priv");
    cleanups.push(() => dropSchema(schema));
    // The schema as the release at version 2 left it (no seal columns).
    const s = `"${schema}"`;
    await client.query(`CREATE SCHEMA ${s}`);
    await client.query(MIGRATIONS_TABLE(s));
    for (const [i, migration] of RELEASED_MIGRATIONS.slice(0, 2).entries()) {
      await client.query(migration(s, `kms_${schema}`));
      await client.query(`INSERT INTO ${s}.kms_schema_migrations (version) VALUES ($1)`, [i + 1]);
    }
    const app = await role(client);
    await client.query(`GRANT USAGE ON SCHEMA ${s} TO ${app.name}`);
    await client.query(
      `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ${s} TO ${app.name}`,
    );

    for (const open of [
      () => PostgresKeyStore.open({ connectionString: app.url, schema }),
      () => PostgresAuditSink.open({ connectionString: app.url, schema }),
    ]) {
      const failure = await open().then(
        async (opened) => {
          await opened.close();
          return undefined;
        },
        (error: unknown) => error,
      );
      expect(failure).toBeInstanceOf(KmsInternalError);
      const message = (failure as Error).message;
      // Which migration, from which version, the SQLSTATE, and what to do about it.
      expect(message).toMatch(/schema version 2/);
      expect(message).toMatch(/migration 3/);
      expect(message).toMatch(/42501/);
      expect(message).toMatch(/owner/);
    }
    const { rows } = await client.query<{ version: number }>(
      `SELECT max(version) AS version FROM ${s}.kms_schema_migrations`,
    );
    expect(rows[0]!.version).toBe(2);
  });

  it("a role that owns an empty schema, without CREATE on the database, creates its tables", async () => {
    const client = await admin();
    const schema = randomSchema("priv");
    cleanups.push(() => dropSchema(schema));
    const app = await role(client);
    await client.query(`CREATE SCHEMA "${schema}" AUTHORIZATION ${app.name}`);
    await useAs(app.url, schema);
  });
});
