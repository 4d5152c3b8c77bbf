import { KmsInternalError } from "@kms/core";
import type pg from "pg";
import { BEGIN, checkOut, pgCode } from "./connection.ts";

/** Quotes a schema name that {@link checkSchemaName} accepted. */
export function quoteIdent(name: string): string {
  return `"${name}"`;
}

/** The NOTIFY channel of a schema; identifiers are at most 63 bytes, hence the name limit. */
export function channelOf(schema: string): string {
  return `kms_${schema}`;
}

/**
 * Schema migrations, applied in order; `kms_schema_migrations` records which have run. Append
 * only: a released migration is never edited, because databases in the field have run it.
 *
 * Ids and alias names use COLLATE "C" so the primary keys order by code point, the order
 * MemoryKeyStore (and the conformance suite) pages in, whatever the database's locale.
 * Timestamps are epoch milliseconds in bigint, exactly as StoredKey holds them.
 *
 * `kms_changes.counter` is bumped by a trigger in the same transaction as every key and alias
 * write. The counter lives in one row, so its value orders commits; instances compare it with
 * what they last saw to notice changes they have not accounted for (see change-feed.ts). Since
 * migration 4 the same row records the record the last change touched (`k:<key id>` or
 * `a:<alias name>`, readable only by roles with SELECT on the table), and the trigger NOTIFYs
 * the counter alone: LISTEN and NOTIFY need no privilege, so any role that can connect to the
 * database hears the channel and can send on it, and the ids and alias names of the releases
 * before it reached every such role.
 */
const MIGRATIONS: readonly ((s: string, channel: string) => string)[] = [
  (s, channel) => `
  CREATE TABLE ${s}.kms_keys (
    key_id                  text COLLATE "C" NOT NULL PRIMARY KEY,
    revision                integer NOT NULL,
    created_at              bigint  NOT NULL,
    description             text    NOT NULL,
    key_spec                text    NOT NULL,
    key_usage               text    NOT NULL,
    origin                  text    NOT NULL,
    multi_region            boolean NOT NULL,
    key_state               text    NOT NULL,
    deletion_date           bigint,
    pending_window_in_days  integer,
    rotation_enabled        boolean NOT NULL,
    rotation_period_in_days integer NOT NULL,
    next_rotation_at        bigint,
    on_demand_rotations     integer NOT NULL,
    tags                    text    NOT NULL,
    policy                  text,
    grants                  text,
    current_version         integer NOT NULL
  );

  CREATE TABLE ${s}.kms_key_versions (
    key_id           text COLLATE "C" NOT NULL REFERENCES ${s}.kms_keys (key_id) ON DELETE CASCADE,
    version          integer NOT NULL,
    created_at       bigint  NOT NULL,
    rotation_type    text,
    key_material_id  text    NOT NULL,
    wrapped_material bytea   NOT NULL,
    public_key       bytea,
    PRIMARY KEY (key_id, version)
  );

  CREATE TABLE ${s}.kms_aliases (
    alias_name    text COLLATE "C" NOT NULL PRIMARY KEY,
    target_key_id text COLLATE "C" NOT NULL,
    created_at    bigint NOT NULL,
    updated_at    bigint NOT NULL
  );

  CREATE INDEX kms_aliases_by_target ON ${s}.kms_aliases (target_key_id, alias_name);

  CREATE TABLE ${s}.kms_settings (
    name  text NOT NULL PRIMARY KEY,
    value text NOT NULL
  );

  CREATE TABLE ${s}.kms_changes (
    singleton boolean NOT NULL PRIMARY KEY DEFAULT true CHECK (singleton),
    counter   bigint  NOT NULL
  );
  INSERT INTO ${s}.kms_changes (counter) VALUES (0);

  CREATE FUNCTION ${s}.kms_notify_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
  DECLARE
    n bigint;
    subject text;
  BEGIN
    UPDATE ${s}.kms_changes SET counter = counter + 1 RETURNING counter INTO n;
    IF TG_TABLE_NAME = 'kms_keys' THEN
      subject := 'k:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.key_id ELSE NEW.key_id END;
    ELSE
      subject := 'a:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.alias_name ELSE NEW.alias_name END;
    END IF;
    PERFORM pg_notify('${channel}', n || ' ' || subject);
    RETURN NULL;
  END
  $fn$;

  CREATE TRIGGER kms_keys_changed AFTER INSERT OR UPDATE OR DELETE ON ${s}.kms_keys
    FOR EACH ROW EXECUTE FUNCTION ${s}.kms_notify_change();
  CREATE TRIGGER kms_aliases_changed AFTER INSERT OR UPDATE OR DELETE ON ${s}.kms_aliases
    FOR EACH ROW EXECUTE FUNCTION ${s}.kms_notify_change();
  `,
  // 2: the audit trail (PostgresAuditSink). Events are stored as the exact JSON text that was
  // hashed (text, not jsonb: jsonb rejects \u0000 and rewrites numbers). The head row, locked
  // FOR UPDATE by every append, serializes the writers of the shared chain and records the
  // newest sequence and hash apart from the events, so removed trailing events are noticed.
  (s) => `
  CREATE TABLE ${s}.kms_audit_events (
    sequence bigint NOT NULL PRIMARY KEY CHECK (sequence >= 0),
    event    text   NOT NULL
  );

  CREATE TABLE ${s}.kms_audit_head (
    singleton boolean NOT NULL PRIMARY KEY DEFAULT true CHECK (singleton),
    sequence  bigint  NOT NULL,
    hash      text    NOT NULL
  );
  INSERT INTO ${s}.kms_audit_head (sequence, hash) VALUES (-1, '${"0".repeat(64)}');
  `,
  // 3: integrity seals the Kms computes over each record (StoredKey.seal, StoredAlias.seal),
  // stored verbatim. NULL for rows written before seals existed: the Kms decides what an
  // unsealed record means (KmsOptions.unsealedRecords), so the store keeps "none" apart from
  // any text. Nullable without a default, so PostgreSQL adds the columns without rewriting
  // the tables. The change triggers already fire on every row write, seal included.
  (s) => `
  ALTER TABLE ${s}.kms_keys ADD COLUMN seal text;
  ALTER TABLE ${s}.kms_aliases ADD COLUMN seal text;
  `,
  // 4: the notification payload is the counter alone; what changed goes to kms_changes.subject,
  // where instances read it (see the comment above MIGRATIONS). CREATE OR REPLACE keeps the
  // function's oid, so the triggers of migration 1 call the new body. A role with UPDATE on
  // kms_changes, which every writer needs already, may write the new column.
  (s, channel) => `
  ALTER TABLE ${s}.kms_changes ADD COLUMN subject text;

  CREATE OR REPLACE FUNCTION ${s}.kms_notify_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
  DECLARE
    n bigint;
    changed text;
  BEGIN
    IF TG_TABLE_NAME = 'kms_keys' THEN
      changed := 'k:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.key_id ELSE NEW.key_id END;
    ELSE
      changed := 'a:' || CASE WHEN TG_OP = 'DELETE' THEN OLD.alias_name ELSE NEW.alias_name END;
    END IF;
    UPDATE ${s}.kms_changes SET counter = counter + 1, subject = changed RETURNING counter INTO n;
    PERFORM pg_notify('${channel}', n::text);
    RETURN NULL;
  END
  $fn$;
  `,
];

/** The schema version this build writes and understands. */
export const SCHEMA_VERSION: number = MIGRATIONS.length;

// Arbitrary constant that namespaces our advisory locks; the second half is the schema's hash.
const LOCK_CLASS = 0x6b6d_7301;

/**
 * Brings `schema` up to SCHEMA_VERSION, creating it if needed. Everything, the version check
 * included, runs in one READ COMMITTED transaction after pg_advisory_xact_lock, so instances
 * starting together apply each migration exactly once (the version is read after the lock, from
 * a snapshot that sees the previous holder's commit) and a failed migration leaves nothing
 * half-applied (DDL is transactional in PostgreSQL). A schema that is already current is only
 * read, so a role with USAGE on the schema and DML on its tables can open it.
 * @throws KmsInternalError when the schema was written by a newer version of this package, or a
 * migration fails (the message names it; for a role that may not alter the tables, it says so).
 */
export async function migrate(pool: pg.Pool, schema: string, description: string): Promise<void> {
  const s = quoteIdent(schema);
  const checkedOut = await checkOut(pool);
  const { client } = checkedOut;
  let broken: Error | undefined;
  try {
    await client.query(BEGIN);
    try {
      await client.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCK_CLASS, schema]);
      // DDL only for what is missing: CREATE … IF NOT EXISTS checks the CREATE privilege before
      // it looks, so it would refuse a role that was granted only USAGE and DML on a schema
      // that is already up to date.
      const found = await client.query<{ schema: boolean; migrations: boolean }>(
        `SELECT to_regnamespace($1) IS NOT NULL AS schema, to_regclass($2) IS NOT NULL AS migrations`,
        [s, `${s}.kms_schema_migrations`],
      );
      if (!found.rows[0]!.schema) await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
      if (!found.rows[0]!.migrations) {
        await client.query(
          `CREATE TABLE IF NOT EXISTS ${s}.kms_schema_migrations (
             version    integer     NOT NULL PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
           )`,
        );
      }
      const { rows } = await client.query<{ version: number | null }>(
        `SELECT max(version) AS version FROM ${s}.kms_schema_migrations`,
      );
      const current = rows[0]?.version ?? 0;
      if (current > SCHEMA_VERSION) {
        throw new KmsInternalError(
          `${description}: schema version ${current} is newer than this @kms/keystore-postgres supports (${SCHEMA_VERSION}); upgrade the package`,
        );
      }
      for (let v = current; v < SCHEMA_VERSION; v++) {
        try {
          await client.query(MIGRATIONS[v]!(s, channelOf(schema)));
          await client.query(`INSERT INTO ${s}.kms_schema_migrations (version) VALUES ($1)`, [
            v + 1,
          ]);
        } catch (error) {
          throw migrationFailure(description, current, v + 1, error);
        }
      }
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch((rollbackError: Error) => {
        broken = rollbackError;
      });
      throw error;
    }
  } finally {
    checkedOut.release(broken);
  }
}

/** PostgreSQL's insufficient_privilege. */
const INSUFFICIENT_PRIVILEGE = "42501";

/**
 * The error of a migration that failed. A role granted only USAGE and DML, enough to use a
 * current schema, meets a pending migration as "must be owner of table kms_keys": the message
 * says what the schema lacks and who can apply it.
 */
function migrationFailure(
  description: string,
  current: number,
  failed: number,
  error: unknown,
): KmsInternalError {
  const privilege =
    (error as { code?: unknown } | undefined)?.code === INSUFFICIENT_PRIVILEGE
      ? "; this role may use a current schema but not alter it: open it once as the owner of the schema's tables, then again as this role"
      : "";
  return new KmsInternalError(
    `${description}: schema version ${current} needs migration ${failed} of ${SCHEMA_VERSION}, which failed (${pgCode(error)})${privilege}`,
    { cause: error },
  );
}
