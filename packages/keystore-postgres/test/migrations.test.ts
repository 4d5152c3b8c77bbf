import { KmsInternalError, type StoredAlias, type StoredKey } from "@kms/core";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";
import { MIGRATIONS_TABLE, RELEASED_MIGRATIONS } from "./fixtures/old-schemas.ts";

const OLD_KEY: StoredKey = {
  keyId: "k-old",
  revision: 4,
  createdAt: 1_767_225_600_123,
  description: "old key",
  keySpec: "SYMMETRIC_DEFAULT",
  keyUsage: "ENCRYPT_DECRYPT",
  origin: "AWS_KMS",
  multiRegion: false,
  keyState: "Enabled",
  rotation: { enabled: true, periodInDays: 90, nextRotationAt: 7, onDemandRotations: 0 },
  tags: [{ tagKey: "env", tagValue: "prod" }],
  policy: '{"Version":"2012-10-17"}',
  grants: [
    {
      grantId: "g-1",
      granteePrincipal: "alice",
      issuingPrincipal: "root",
      operations: ["Decrypt"],
      createdAt: 2,
    },
  ],
  versions: [
    {
      version: 1,
      createdAt: 1,
      keyMaterialId: "01",
      wrappedMaterial: Uint8Array.from([0x00, 0xff, 0x10]),
    },
  ],
  currentVersion: 1,
};

const OLD_ALIAS: StoredAlias = {
  aliasName: "alias/old",
  targetKeyId: "k-old",
  createdAt: 3,
  updatedAt: 4,
};

describe.skipIf(target.skipReason !== undefined)("PostgresKeyStore schema migrations", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function withClient<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
    const client = new pg.Client({ connectionString: target.url! });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  }

  /**
   * A schema as the release at schema version `version` left it (2: audit trail, no seals; 3:
   * seals, ids and alias names in the notifications), with a key, an alias and a setting
   * written through the columns release 2 knew about.
   */
  async function writeOldSchema(version: 2 | 3): Promise<string> {
    const schema = randomSchema("mig");
    cleanups.push(() => dropSchema(schema));
    const s = `"${schema}"`;
    await withClient(async (client) => {
      await client.query("BEGIN");
      await client.query(`CREATE SCHEMA ${s}`);
      await client.query(MIGRATIONS_TABLE(s));
      for (const [i, migration] of RELEASED_MIGRATIONS.slice(0, version).entries()) {
        await client.query(migration(s, `kms_${schema}`));
        await client.query(`INSERT INTO ${s}.kms_schema_migrations (version) VALUES ($1)`, [i + 1]);
      }
      await client.query(
        `INSERT INTO ${s}.kms_keys (key_id, revision, created_at, description, key_spec,
           key_usage, origin, multi_region, key_state, rotation_enabled, rotation_period_in_days,
           next_rotation_at, on_demand_rotations, tags, policy, grants, current_version)
         VALUES ($1, 4, $2, 'old key', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'AWS_KMS', false,
           'Enabled', true, 90, 7, 0, $3, $4, $5, 1)`,
        [
          OLD_KEY.keyId,
          OLD_KEY.createdAt,
          JSON.stringify(OLD_KEY.tags),
          OLD_KEY.policy,
          JSON.stringify(OLD_KEY.grants),
        ],
      );
      await client.query(
        `INSERT INTO ${s}.kms_key_versions (key_id, version, created_at, key_material_id,
           wrapped_material) VALUES ($1, 1, 1, '01', $2)`,
        [OLD_KEY.keyId, Buffer.from([0x00, 0xff, 0x10])],
      );
      await client.query(
        `INSERT INTO ${s}.kms_aliases (alias_name, target_key_id, created_at, updated_at)
         VALUES ('alias/old', 'k-old', 3, 4)`,
      );
      await client.query(
        `INSERT INTO ${s}.kms_settings (name, value) VALUES ('root-key-check', 'check')`,
      );
      await client.query("COMMIT");
    });
    return schema;
  }

  async function open(schema: string): Promise<PostgresKeyStore> {
    const store = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    cleanups.push(() => store.close());
    return store;
  }

  it("upgrades a schema version 2 database in place: rows kept, unsealed, and sealable afterwards", async () => {
    const schema = await writeOldSchema(2);
    const store = await open(schema);

    const applied = await withClient((client) =>
      client.query<{ version: number }>(
        `SELECT version FROM "${schema}".kms_schema_migrations ORDER BY version`,
      ),
    );
    expect(applied.rows.map((r) => r.version)).toStrictEqual([1, 2, 3, 4]);

    const key = await store.getKey("k-old");
    expect(key).toStrictEqual(OLD_KEY);
    expect(key).not.toHaveProperty("seal");
    expect(await store.listKeys({ limit: 10 })).toStrictEqual([OLD_KEY]);
    expect(await store.getAlias("alias/old")).toStrictEqual(OLD_ALIAS);
    expect(await store.getAlias("alias/old")).not.toHaveProperty("seal");
    expect(await store.listAliases({ limit: 10 })).toStrictEqual([OLD_ALIAS]);
    expect(await store.getSetting("root-key-check")).toBe("check");

    // What KmsOptions.unsealedRecords "seal" does: write each record back with a seal.
    await store.updateKey({ ...key!, revision: key!.revision + 1, seal: "seal-k" });
    await store.updateAlias("alias/old", "k-old", 5, "seal-a");
    await store.close();

    const reopened = await open(schema);
    expect(await reopened.getKey("k-old")).toStrictEqual({
      ...OLD_KEY,
      revision: 5,
      seal: "seal-k",
    });
    expect(await reopened.getAlias("alias/old")).toStrictEqual({
      ...OLD_ALIAS,
      updatedAt: 5,
      seal: "seal-a",
    });
    const raw = await withClient((client) =>
      client.query<{ key_seal: string; alias_seal: string }>(
        `SELECT (SELECT seal FROM "${schema}".kms_keys) AS key_seal,
                (SELECT seal FROM "${schema}".kms_aliases) AS alias_seal`,
      ),
    );
    expect(raw.rows).toStrictEqual([{ key_seal: "seal-k", alias_seal: "seal-a" }]);
  });

  it("applies the new migration exactly once when several instances start on an old schema together", async () => {
    const schema = await writeOldSchema(2);
    const stores = await Promise.all([open(schema), open(schema), open(schema)]);
    for (const store of stores) expect(await store.getKey("k-old")).toStrictEqual(OLD_KEY);
    const applied = await withClient((client) =>
      client.query<{ version: number }>(
        `SELECT version FROM "${schema}".kms_schema_migrations ORDER BY version`,
      ),
    );
    expect(applied.rows.map((r) => r.version)).toStrictEqual([1, 2, 3, 4]);
  });

  for (const version of [2, 3] as const) {
    it(`still notifies other instances of seal-only changes after the upgrade from schema version ${version}, by counter only`, async () => {
      const schema = await writeOldSchema(version);
      await open(schema);
      const notified = await withClient(async (client) => {
        await client.query(`LISTEN "kms_${schema}"`);
        const payloads: string[] = [];
        client.on("notification", (message) => payloads.push(message.payload ?? ""));
        const changes = `SELECT counter::integer AS counter, subject FROM "${schema}".kms_changes`;
        const before = (await client.query(changes)).rows[0];
        await client.query(`UPDATE "${schema}".kms_aliases SET seal = 'x'`);
        const afterAlias = (await client.query(changes)).rows[0];
        await client.query(`UPDATE "${schema}".kms_keys SET seal = 'y'`);
        const afterKey = (await client.query(changes)).rows[0];
        // A round trip after the updates: notifications of committed statements arrive first.
        await client.query("SELECT 1");
        return { payloads, before, afterAlias, afterKey };
      });
      const { counter } = notified.before as { counter: number };
      // The channel, which any role may LISTEN to, carries the counter alone; the record each
      // change touched is in kms_changes, readable with the schema's privileges only.
      expect(notified.payloads).toStrictEqual([String(counter + 1), String(counter + 2)]);
      expect(notified.afterAlias).toStrictEqual({ counter: counter + 1, subject: "a:alias/old" });
      expect(notified.afterKey).toStrictEqual({ counter: counter + 2, subject: "k:k-old" });
    });
  }

  it("refuses a schema written by a newer version, leaving it untouched", async () => {
    const schema = await writeOldSchema(2);
    await withClient((client) =>
      client.query(`INSERT INTO "${schema}".kms_schema_migrations (version) VALUES (99)`),
    );
    const failure = await PostgresKeyStore.open({ connectionString: target.url!, schema }).catch(
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(KmsInternalError);
    expect((failure as Error).message).toMatch(/schema version 99 is newer/);
    const columns = await withClient((client) =>
      client.query(
        `SELECT 1 FROM information_schema.columns
         WHERE table_schema = $1 AND table_name = 'kms_keys' AND column_name = 'seal'`,
        [schema],
      ),
    );
    expect(columns.rowCount).toBe(0);
  });
});
