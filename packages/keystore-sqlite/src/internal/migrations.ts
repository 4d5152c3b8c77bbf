import { KmsInternalError } from "@kms/core";
import type Database from "better-sqlite3";
import { prepare } from "./retain.ts";

/**
 * The triggers of migration 4, by name, as `sqlite_master.sql` holds them (the CREATE statement
 * without its semicolon). The migration is built from this text, so it must never change.
 */
const COUNTED_TRIGGERS: ReadonlyMap<string, string> = new Map(
  ["kms_keys", "kms_key_versions", "kms_aliases"].flatMap((table) =>
    ["INSERT", "UPDATE", "DELETE"].map((event): [string, string] => {
      const name = `${table}_${event.toLowerCase()}_counted`;
      return [
        name,
        `CREATE TRIGGER ${name} AFTER ${event} ON ${table}
  BEGIN
    UPDATE kms_store_changes SET counter = counter + 1 WHERE singleton = 1;
  END`,
      ];
    }),
  ),
);

/**
 * Schema migrations, applied in order; `PRAGMA user_version` records how many have run. Append
 * only: a released migration is never edited, because files in the field have already run it.
 *
 * Tables are prefixed `kms_` so the store can share a database file with an application's own
 * tables. STRICT makes SQLite refuse a TEXT value in a BLOB column, so material can never be
 * stored as text by accident.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE kms_keys (
    key_id                  TEXT    NOT NULL PRIMARY KEY,
    revision                INTEGER NOT NULL,
    created_at              INTEGER NOT NULL,
    description             TEXT    NOT NULL,
    key_spec                TEXT    NOT NULL,
    key_usage               TEXT    NOT NULL,
    origin                  TEXT    NOT NULL,
    multi_region            INTEGER NOT NULL CHECK (multi_region IN (0, 1)),
    key_state               TEXT    NOT NULL,
    deletion_date           INTEGER,
    pending_window_in_days  INTEGER,
    rotation_enabled        INTEGER NOT NULL CHECK (rotation_enabled IN (0, 1)),
    rotation_period_in_days INTEGER NOT NULL,
    next_rotation_at        INTEGER,
    on_demand_rotations     INTEGER NOT NULL,
    tags                    TEXT    NOT NULL,
    policy                  TEXT,
    current_version         INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE kms_key_versions (
    key_id           TEXT    NOT NULL REFERENCES kms_keys (key_id) ON DELETE CASCADE,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    rotation_type    TEXT,
    key_material_id  TEXT    NOT NULL,
    wrapped_material BLOB    NOT NULL,
    public_key       BLOB,
    PRIMARY KEY (key_id, version)
  ) STRICT;

  CREATE TABLE kms_aliases (
    alias_name    TEXT    NOT NULL PRIMARY KEY,
    target_key_id TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
  ) STRICT;

  CREATE INDEX kms_aliases_by_target ON kms_aliases (target_key_id, alias_name);

  CREATE TABLE kms_settings (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
  ) STRICT;
  `,
  // 2: grants (JSON array of StoredGrant), kept on the key row so compare-and-set covers them.
  `
  ALTER TABLE kms_keys ADD COLUMN grants TEXT;
  `,
  // 3: integrity seals the Kms computes over each record (StoredKey.seal, StoredAlias.seal),
  // stored verbatim. NULL for rows written before seals existed: the Kms decides what an
  // unsealed record means (KmsOptions.unsealedRecords), so the store must keep "none" apart
  // from any text.
  `
  ALTER TABLE kms_keys ADD COLUMN seal TEXT;
  ALTER TABLE kms_aliases ADD COLUMN seal TEXT;
  `,
  // 4: a counter that moves with every write to the key-store tables, by triggers, whoever
  // writes: this store, a process of an earlier release that had the file open when it was
  // migrated, a repair script. PRAGMA data_version moves on any commit to the file, an audit
  // event in the same file included, so a store that cleared its cache on data_version alone
  // missed it on every audited call; it now clears only when this counter moved.
  `
  CREATE TABLE kms_store_changes (
    singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
    counter   INTEGER NOT NULL
  ) STRICT;
  INSERT INTO kms_store_changes (singleton, counter) VALUES (1, 0);
${[...COUNTED_TRIGGERS.values()].map((sql) => `\n  ${sql};`).join("")}
  `,
];

/** The schema version this build writes and understands. */
export const SCHEMA_VERSION: number = MIGRATIONS.length;

/**
 * Brings the schema up to SCHEMA_VERSION. Runs inside BEGIN IMMEDIATE and re-reads the version
 * there, so two processes opening a new file at once apply each migration exactly once.
 * @throws KmsInternalError when the file was written by a newer version of this package.
 */
export function migrate(db: Database.Database, description: string): void {
  const tooNew = (found: number): KmsInternalError =>
    new KmsInternalError(
      `${description}: schema version ${found} is newer than this @kms/keystore-sqlite supports (${SCHEMA_VERSION}); upgrade the package`,
    );

  const readVersion = prepare<[], number>(db, "PRAGMA user_version").pluck();
  const userVersion = (): number => Number(readVersion.get());

  // Fast path without the write lock: a process that only reads never queues behind writers.
  const seen = userVersion();
  if (seen === SCHEMA_VERSION) return;
  if (seen > SCHEMA_VERSION) throw tooNew(seen);

  db.transaction(() => {
    const current = userVersion();
    if (current > SCHEMA_VERSION) throw tooNew(current);
    for (let v = current; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v]!);
    // user_version lives in the file header and is part of this transaction.
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

/** The `name` and `sql` of a row of `sqlite_master`. */
export interface SchemaObject {
  readonly name: string;
  readonly sql: string | null;
}

/** Lists the file's triggers for {@link countedTriggersIntact}. */
export const SELECT_TRIGGERS = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'";

/**
 * Whether kms_store_changes still counts every write to the key tables, given the file's
 * `triggers`: each trigger of migration 4 is there as written, and no other trigger names the
 * counter's table (one that set it back would hide the writes it follows). Whoever can write the
 * file can drop or undo those triggers; a store that went on trusting the counter would then
 * keep serving the cached record of a key another process has since disabled, or whose grant it
 * retired, for as long as the entry stays cached.
 */
export function countedTriggersIntact(triggers: readonly SchemaObject[]): boolean {
  let ours = 0;
  for (const { name, sql } of triggers) {
    const expected = COUNTED_TRIGGERS.get(name);
    if (expected !== undefined) {
      if (sql !== expected) return false;
      ours++;
    } else if ((sql ?? "").toLowerCase().includes("kms_store_changes")) {
      return false;
    }
  }
  return ours === COUNTED_TRIGGERS.size;
}
