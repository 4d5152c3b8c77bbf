import { randomBytes } from "node:crypto";
import { createKms } from "@kms/core";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresAuditSink, PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

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

  it("a role that owns an empty schema, without CREATE on the database, creates its tables", async () => {
    const client = await admin();
    const schema = randomSchema("priv");
    cleanups.push(() => dropSchema(schema));
    const app = await role(client);
    await client.query(`CREATE SCHEMA "${schema}" AUTHORIZATION ${app.name}`);
    await useAs(app.url, schema);
  });
});
