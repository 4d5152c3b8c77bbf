import {
  AlreadyExistsError,
  isKmsError,
  type KeyStore,
  KeyStoreConflictError,
  KmsInternalError,
  type ListOptions,
  NotFoundError,
  type StoredAlias,
  type StoredKey,
  ValidationError,
} from "@kms/core";
import Database from "better-sqlite3";
import {
  countedTriggersIntact,
  migrate,
  type SchemaObject,
  SELECT_TRIGGERS,
} from "./internal/migrations.ts";
import { refuseOuterTransaction } from "./internal/outer-transaction.ts";
import { createPrivateFile } from "./internal/private-file.ts";
import { prepare, retain } from "./internal/retain.ts";
import {
  type AliasRow,
  aliasFromRow,
  type KeyRow,
  keyFromRows,
  keyParams,
  type MaterialRow,
  type VersionRow,
  versionParams,
} from "./internal/rows.ts";

/** SQLite `synchronous` levels that keep a committed write durable or nearly so. */
export type SqliteSynchronous = "EXTRA" | "FULL" | "NORMAL";

interface CommonOptions {
  /**
   * How long a write waits for another connection's write lock before failing, in ms (at most
   * 2147483647, SQLite's limit).
   * @defaultValue 5000
   */
  readonly busyTimeoutMs?: number;
  /**
   * When SQLite calls fsync. `FULL` (default): a write is on disk before its promise resolves,
   * so it survives a process kill and a power loss. `NORMAL`: survives a process kill, but the
   * last writes before a power loss or OS crash may be lost. See the README.
   * @defaultValue "FULL"
   */
  readonly synchronous?: SqliteSynchronous;
  /**
   * How many decoded key records (and, separately, aliases) to keep in memory; 0 disables the
   * cache. Entries are dropped as soon as another connection commits.
   * @defaultValue 1000
   */
  readonly cacheSize?: number;
}

/** Options of {@link SqliteKeyStore.open}: a file path, or a database the caller opened. */
export type SqliteKeyStoreOptions = CommonOptions &
  (
    | {
        /**
         * Database file, created if missing (mode 0600; an existing file keeps its mode). The
         * store closes it on `close()`.
         */
        readonly path: string;
        readonly database?: never;
      }
    | {
        /**
         * An open better-sqlite3 database. The store sets its pragmas (WAL, synchronous,
         * busy_timeout, foreign_keys) but leaves closing it to the caller.
         */
        readonly database: Database.Database;
        readonly path?: never;
      }
  );

const SYNCHRONOUS: readonly SqliteSynchronous[] = ["EXTRA", "FULL", "NORMAL"];

/** SQLite keeps busy_timeout in a C int; a larger value would wrap around. */
const MAX_BUSY_TIMEOUT_MS = 2_147_483_647;

/**
 * Longest wait of deleteKey's WAL checkpoint for other connections' readers and writers. While
 * it waits, SQLite holds off every other connection's writer, and the whole process, as
 * better-sqlite3 is synchronous; long enough for the short transactions of other processes.
 */
const CHECKPOINT_WAIT_MS = 100;

/** The row of `PRAGMA wal_checkpoint`: `busy` is 1 when it could not finish. */
interface CheckpointRow {
  readonly busy: number;
  readonly log: number;
  readonly checkpointed: number;
}

function checkCount(
  name: string,
  value: number | undefined,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw new ValidationError(
      `"${name}" expected an integer from 0 to ${max}, got ${String(value)}`,
    );
  }
  return value;
}

/**
 * Committed key-store writes per connection, shared by every store opened on it. PRAGMA
 * data_version ignores a connection's own commits, so without this a store would keep serving
 * cached records that another store on the same `database` has since rotated, disabled or
 * deleted.
 */
const writesByConnection = new WeakMap<Database.Database, { count: number }>();

function writeCounter(db: Database.Database): { count: number } {
  let counter = writesByConnection.get(db);
  if (counter === undefined) {
    counter = { count: 0 };
    writesByConnection.set(db, counter);
  }
  return counter;
}

/** Keeps at most `limit` entries, evicting the least recently used. */
function remember<V>(cache: Map<string, V>, limit: number, id: string, value: V): void {
  if (limit === 0) return;
  cache.delete(id);
  cache.set(id, value);
  if (cache.size > limit) cache.delete(cache.keys().next().value!);
}

function recall<V>(cache: Map<string, V>, id: string): V | undefined {
  const hit = cache.get(id);
  if (hit !== undefined) {
    cache.delete(id);
    cache.set(id, hit);
  }
  return hit;
}

/**
 * A durable KeyStore in one SQLite file (better-sqlite3), safe to share between processes.
 *
 * Every write runs in `BEGIN IMMEDIATE`, which takes the file's write lock before reading the
 * stored revision, so the compare-and-set and the write are one atomic step across processes:
 * two writers with the same expected revision cannot both succeed. Reads run in WAL mode and
 * never wait for writers.
 *
 * Methods behave as documented on {@link KeyStore}.
 * @throws AlreadyExistsError, NotFoundError, KeyStoreConflictError as KeyStore documents;
 * KmsInternalError when SQLite fails (cause attached), the write lock stays busy longer than
 * `busyTimeoutMs`, or the store is closed.
 */
export class SqliteKeyStore implements KeyStore {
  readonly description: string;
  readonly #db: Database.Database;
  readonly #ownsDatabase: boolean;
  readonly #cacheSize: number;
  readonly #keyCache = new Map<string, StoredKey>();
  readonly #aliasCache = new Map<string, StoredAlias>();
  readonly #writes: { count: number };
  #dataVersion: number;
  #writesSeen: number;
  #changesSeen: number;
  /** `PRAGMA schema_version` when #counterTrusted was last decided. */
  #schemaVersion: number;
  /** Whether the kms_store_changes triggers are intact; see #syncCache. */
  #counterTrusted: boolean;
  #closed = false;
  /**
   * A committed update replaced or removed wrapped material whose older frames the WAL may
   * still hold; see #scheduleWalDrop.
   */
  #replacedMaterialInWal = false;
  #walDropScheduled = false;

  readonly #dataVersionStmt: Database.Statement<[], number>;
  readonly #changesStmt: Database.Statement<[], number>;
  readonly #schemaVersionStmt: Database.Statement<[], number>;
  readonly #triggersStmt: Database.Statement<[], SchemaObject>;
  readonly #selectKey: Database.Statement<[string], KeyRow>;
  readonly #selectVersions: Database.Statement<[string], VersionRow>;
  readonly #selectRevision: Database.Statement<[string], number>;
  readonly #selectMaterial: Database.Statement<[string], MaterialRow>;
  readonly #insertKey: Database.Statement<[Record<string, unknown>]>;
  readonly #updateKey: Database.Statement<[Record<string, unknown>]>;
  readonly #upsertVersion: Database.Statement<[Record<string, unknown>]>;
  readonly #deleteStaleVersions: Database.Statement<[string, string]>;
  readonly #deleteVersions: Database.Statement<[string]>;
  readonly #deleteKeyRow: Database.Statement<[string]>;
  readonly #deleteAliasesOf: Database.Statement<[string]>;
  readonly #truncateWal: Database.Statement<[], CheckpointRow>;
  readonly #busyTimeoutStmt: Database.Statement<[], number>;
  readonly #listKeysFirst: Database.Statement<[number], KeyRow>;
  readonly #listKeysAfter: Database.Statement<[string, number], KeyRow>;
  readonly #versionsInRange: Database.Statement<[string, string], VersionRow>;
  readonly #selectAlias: Database.Statement<[string], AliasRow>;
  readonly #insertAlias: Database.Statement<[string, string, number, number, string | null]>;
  readonly #updateAliasStmt: Database.Statement<[string, number, string | null, string]>;
  readonly #deleteAliasStmt: Database.Statement<[string]>;
  /** Indexed by (after given ? 1 : 0) + (targetKeyId given ? 2 : 0); see the constructor. */
  readonly #listAliases: readonly Database.Statement<unknown[], AliasRow>[];
  readonly #selectSetting: Database.Statement<[string], string>;
  readonly #insertSetting: Database.Statement<[string, string]>;

  readonly #inTransaction: Database.Transaction<(fn: () => unknown) => unknown>;

  private constructor(db: Database.Database, ownsDatabase: boolean, cacheSize: number) {
    this.#db = db;
    this.#ownsDatabase = ownsDatabase;
    this.#cacheSize = cacheSize;
    this.description = `sqlite:${db.name}`;

    // Statements are prepared once; the hot path (getKey on a cache hit) runs one of them.
    this.#dataVersionStmt = prepare<[], number>(db, "PRAGMA data_version").pluck();
    this.#changesStmt = prepare<[], number>(
      db,
      "SELECT counter FROM kms_store_changes WHERE singleton = 1",
    ).pluck();
    this.#schemaVersionStmt = prepare<[], number>(db, "PRAGMA schema_version").pluck();
    this.#triggersStmt = prepare<[], SchemaObject>(db, SELECT_TRIGGERS);
    this.#selectKey = prepare(db, "SELECT * FROM kms_keys WHERE key_id = ?");
    this.#selectVersions = prepare(
      db,
      "SELECT * FROM kms_key_versions WHERE key_id = ? ORDER BY version",
    );
    this.#selectRevision = prepare<[string], number>(
      db,
      "SELECT revision FROM kms_keys WHERE key_id = ?",
    ).pluck();
    this.#selectMaterial = prepare(
      db,
      "SELECT version, wrapped_material FROM kms_key_versions WHERE key_id = ?",
    );
    this.#insertKey = prepare(
      db,
      `
      INSERT INTO kms_keys (key_id, revision, created_at, description, key_spec, key_usage,
        origin, multi_region, key_state, deletion_date, pending_window_in_days, rotation_enabled,
        rotation_period_in_days, next_rotation_at, on_demand_rotations, tags, policy,
        current_version, grants, seal)
      VALUES (@key_id, @revision, @created_at, @description, @key_spec, @key_usage, @origin,
        @multi_region, @key_state, @deletion_date, @pending_window_in_days, @rotation_enabled,
        @rotation_period_in_days, @next_rotation_at, @on_demand_rotations, @tags, @policy,
        @current_version, @grants, @seal)`,
    );
    this.#updateKey = prepare(
      db,
      `
      UPDATE kms_keys SET revision = @revision, created_at = @created_at,
        description = @description, key_spec = @key_spec, key_usage = @key_usage,
        origin = @origin, multi_region = @multi_region, key_state = @key_state,
        deletion_date = @deletion_date, pending_window_in_days = @pending_window_in_days,
        rotation_enabled = @rotation_enabled, rotation_period_in_days = @rotation_period_in_days,
        next_rotation_at = @next_rotation_at, on_demand_rotations = @on_demand_rotations,
        tags = @tags, policy = @policy, current_version = @current_version, grants = @grants,
        seal = @seal
      WHERE key_id = @key_id`,
    );
    // Versions are immutable in practice, so an update usually only appends one; the WHERE
    // clause skips rewriting unchanged rows (and their pages) while still honouring a record
    // that changes an existing version.
    this.#upsertVersion = prepare(
      db,
      `
      INSERT INTO kms_key_versions (key_id, version, created_at, rotation_type, key_material_id,
        wrapped_material, public_key)
      VALUES (@key_id, @version, @created_at, @rotation_type, @key_material_id,
        @wrapped_material, @public_key)
      ON CONFLICT (key_id, version) DO UPDATE SET created_at = excluded.created_at,
        rotation_type = excluded.rotation_type, key_material_id = excluded.key_material_id,
        wrapped_material = excluded.wrapped_material, public_key = excluded.public_key
      WHERE kms_key_versions.created_at IS NOT excluded.created_at
        OR kms_key_versions.rotation_type IS NOT excluded.rotation_type
        OR kms_key_versions.key_material_id IS NOT excluded.key_material_id
        OR kms_key_versions.wrapped_material IS NOT excluded.wrapped_material
        OR kms_key_versions.public_key IS NOT excluded.public_key`,
    );
    this.#deleteStaleVersions = prepare(
      db,
      "DELETE FROM kms_key_versions WHERE key_id = ? AND version NOT IN (SELECT value FROM json_each(?))",
    );
    this.#deleteVersions = prepare(db, "DELETE FROM kms_key_versions WHERE key_id = ?");
    this.#deleteKeyRow = prepare(db, "DELETE FROM kms_keys WHERE key_id = ?");
    this.#deleteAliasesOf = prepare(db, "DELETE FROM kms_aliases WHERE target_key_id = ?");
    this.#truncateWal = prepare<[], CheckpointRow>(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    this.#busyTimeoutStmt = prepare<[], number>(db, "PRAGMA busy_timeout").pluck();
    this.#listKeysFirst = prepare(db, "SELECT * FROM kms_keys ORDER BY key_id LIMIT ?");
    this.#listKeysAfter = prepare(
      db,
      "SELECT * FROM kms_keys WHERE key_id > ? ORDER BY key_id LIMIT ?",
    );
    this.#versionsInRange = prepare(
      db,
      "SELECT * FROM kms_key_versions WHERE key_id >= ? AND key_id <= ? ORDER BY key_id, version",
    );
    this.#selectAlias = prepare(db, "SELECT * FROM kms_aliases WHERE alias_name = ?");
    this.#insertAlias = prepare(
      db,
      "INSERT INTO kms_aliases (alias_name, target_key_id, created_at, updated_at, seal) VALUES (?, ?, ?, ?, ?)",
    );
    this.#updateAliasStmt = prepare(
      db,
      "UPDATE kms_aliases SET target_key_id = ?, updated_at = ?, seal = ? WHERE alias_name = ?",
    );
    this.#deleteAliasStmt = prepare(db, "DELETE FROM kms_aliases WHERE alias_name = ?");
    // Four plain statements instead of one with "? IS NULL OR ...", which would stop SQLite
    // from using the primary key or the by-target index.
    this.#listAliases = [
      "",
      "WHERE alias_name > @after",
      "WHERE target_key_id = @target",
      "WHERE target_key_id = @target AND alias_name > @after",
    ].map((where) =>
      prepare<unknown[], AliasRow>(
        db,
        `SELECT * FROM kms_aliases ${where} ORDER BY alias_name LIMIT @limit`,
      ),
    );
    this.#selectSetting = prepare<[string], string>(
      db,
      "SELECT value FROM kms_settings WHERE name = ?",
    ).pluck();
    this.#insertSetting = prepare(
      db,
      "INSERT INTO kms_settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
    );

    // A caller-supplied database may have safeIntegers on; our columns all fit in a double.
    for (const stmt of [
      this.#dataVersionStmt,
      this.#busyTimeoutStmt,
      this.#changesStmt,
      this.#schemaVersionStmt,
      this.#selectKey,
      this.#selectVersions,
      this.#selectRevision,
      this.#selectMaterial,
      this.#listKeysFirst,
      this.#listKeysAfter,
      this.#versionsInRange,
      this.#selectAlias,
      ...this.#listAliases,
    ]) {
      stmt.safeIntegers(false);
    }

    this.#inTransaction = db.transaction((fn: () => unknown) => fn());
    this.#writes = writeCounter(db);
    this.#writesSeen = this.#writes.count;
    this.#dataVersion = this.#dataVersionStmt.get()!;
    this.#changesSeen = this.#changesStmt.get()!;
    this.#schemaVersion = this.#schemaVersionStmt.get()!;
    this.#counterTrusted = countedTriggersIntact(this.#triggersStmt.all());
  }

  /**
   * Opens (creating if needed) a key store in a SQLite file and brings its schema up to date.
   *
   * @example
   * const store = SqliteKeyStore.open({ path: "./kms.db" });
   * const kms = await createKms({ store, rootKey: RootKeySource.fromEnv() });
   *
   * @throws ValidationError when an option is out of range or neither/both of path and
   * database are given. KmsInternalError when the file cannot be opened, is not a database, does
   * not support WAL, was written by a newer version of this package, `path` is a symbolic link
   * to nothing, or the given database is inside a transaction.
   */
  static open(options: SqliteKeyStoreOptions): SqliteKeyStore {
    if (typeof options !== "object" || options === null) {
      throw new ValidationError('"options" expected { path } or { database }');
    }
    const busyTimeoutMs = checkCount(
      "busyTimeoutMs",
      options.busyTimeoutMs,
      5_000,
      MAX_BUSY_TIMEOUT_MS,
    );
    const cacheSize = checkCount("cacheSize", options.cacheSize, 1_000);
    const synchronous = options.synchronous ?? "FULL";
    if (!SYNCHRONOUS.includes(synchronous)) {
      throw new ValidationError(
        `"synchronous" expected one of ${SYNCHRONOUS.join(", ")}, got ${String(synchronous)}`,
      );
    }
    const hasPath = options.path !== undefined;
    const hasDatabase = options.database !== undefined;
    if (hasPath === hasDatabase) {
      throw new ValidationError('expected exactly one of "path" and "database"');
    }
    if (hasPath && (typeof options.path !== "string" || options.path.length === 0)) {
      throw new ValidationError('"path" expected a non-empty string');
    }

    const label = hasPath ? `sqlite:${options.path}` : `sqlite:${options.database!.name}`;
    let db: Database.Database | undefined;
    try {
      if (hasPath) createPrivateFile(options.path!);
      db = retain(options.database ?? new Database(options.path!, { timeout: busyTimeoutMs }));
      refuseOuterTransaction(db, label, "key store");
      db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
      // WAL lets readers (the encrypt hot path, in any process) run while a writer commits,
      // and makes a commit one sequential append to the -wal file.
      const mode = String(prepare(db, "PRAGMA journal_mode = WAL").pluck().get()).toLowerCase();
      if (mode !== "wal" && !db.memory) {
        throw new KmsInternalError(`${label}: could not enable WAL (journal_mode is ${mode})`);
      }
      // FULL in WAL mode fsyncs the -wal file at every commit, so once createKey resolves the
      // key survives kill -9, an OS crash and a power cut. (NORMAL survives kill -9 too, since
      // the bytes reached the OS, but not an OS crash.) A lost key makes every ciphertext
      // under it undecryptable forever, and key writes are rare next to reads, so one fsync
      // per write is the right price.
      db.exec(`PRAGMA synchronous = ${synchronous}; PRAGMA foreign_keys = ON`);
      // A destroyed key's wrapped material must not stay readable in freed pages, where whoever
      // later holds the file and the root key (which the other keys still need) could recover
      // the key: secure_delete zeroes deleted content (docs/THREAT-MODEL.md, "Destroyed means
      // gone"). deleteKey then also empties the WAL, whose older frames still hold it. The same
      // goes for material a root-key rotation re-wraps, readable with the retired root key.
      db.exec("PRAGMA secure_delete = ON");
      migrate(db, label);
      return new SqliteKeyStore(db, !hasDatabase, cacheSize);
    } catch (error) {
      if (db !== undefined && !hasDatabase && db.open) db.close();
      if (isKmsError(error)) throw error;
      throw new KmsInternalError(`${label}: cannot open the key store (${sqliteCode(error)})`, {
        cause: error,
      });
    }
  }

  async getKey(keyId: string): Promise<StoredKey | undefined> {
    return this.#guard("getKey", () => {
      this.#syncCache();
      const hit = recall(this.#keyCache, keyId);
      if (hit !== undefined) return hit;
      const key = this.#read(() => this.#readKey(keyId));
      if (key !== undefined) remember(this.#keyCache, this.#cacheSize, keyId, key);
      return key;
    });
  }

  async listKeys(options: ListOptions): Promise<readonly StoredKey[]> {
    return this.#guard("listKeys", () =>
      this.#read(() => {
        const rows =
          options.after === undefined
            ? this.#listKeysFirst.all(options.limit)
            : this.#listKeysAfter.all(options.after, options.limit);
        if (rows.length === 0) return [];
        // One range scan fetches the versions of the whole page.
        const versions = this.#versionsInRange.all(rows[0]!.key_id, rows[rows.length - 1]!.key_id);
        const byKey = new Map<string, VersionRow[]>();
        for (const v of versions) {
          const list = byKey.get(v.key_id);
          if (list === undefined) byKey.set(v.key_id, [v]);
          else list.push(v);
        }
        return rows.map((row) => keyFromRows(row, byKey.get(row.key_id) ?? []));
      }),
    );
  }

  async createKey(key: StoredKey): Promise<void> {
    this.#guard("createKey", () => {
      this.#write(() => {
        if (this.#selectRevision.get(key.keyId) !== undefined) {
          throw new AlreadyExistsError(`key ${key.keyId} already exists`);
        }
        this.#insertKey.run(keyParams(key));
        for (const v of key.versions) this.#upsertVersion.run(versionParams(key.keyId, v));
      });
      this.#dropWalIfReplaced();
      this.#keyCache.delete(key.keyId);
    });
  }

  async updateKey(key: StoredKey): Promise<void> {
    this.#guard("updateKey", () => {
      const dropsMaterial = this.#write(() => {
        const revision = this.#selectRevision.get(key.keyId);
        if (revision === undefined) throw new NotFoundError(`key ${key.keyId} does not exist`);
        if (revision !== key.revision - 1) {
          throw new KeyStoreConflictError(`key ${key.keyId} changed concurrently`);
        }
        const drops = dropsStoredMaterial(key, this.#selectMaterial.all(key.keyId));
        this.#updateKey.run(keyParams(key));
        this.#deleteStaleVersions.run(
          key.keyId,
          JSON.stringify(key.versions.map((v) => v.version)),
        );
        for (const v of key.versions) this.#upsertVersion.run(versionParams(key.keyId, v));
        return drops;
      });
      // A root-key rotation re-wraps every version, and the WAL's older frames still hold the
      // material wrapped under the root key being retired, which whoever has that key (the
      // reason to rotate it) could unwrap. Adding a version or changing metadata replaces no
      // material, so those writes stay one append and one fsync.
      if (dropsMaterial) this.#scheduleWalDrop();
      else this.#dropWalIfReplaced();
      // Dropped rather than replaced with `key`: the next read decodes what was stored, so the
      // cache never holds the caller's (mutable) buffers.
      this.#keyCache.delete(key.keyId);
    });
  }

  async deleteKey(keyId: string, revision: number): Promise<void> {
    this.#guard("deleteKey", () => {
      this.#write(() => {
        const stored = this.#selectRevision.get(keyId);
        if (stored === undefined) throw new NotFoundError(`key ${keyId} does not exist`);
        if (stored !== revision)
          throw new KeyStoreConflictError(`key ${keyId} changed concurrently`);
        this.#deleteAliasesOf.run(keyId);
        this.#deleteVersions.run(keyId);
        this.#deleteKeyRow.run(keyId);
      });
      this.#dropWal();
      this.#keyCache.delete(keyId);
      for (const [name, alias] of this.#aliasCache) {
        if (alias.targetKeyId === keyId) this.#aliasCache.delete(name);
      }
    });
  }

  async getAlias(aliasName: string): Promise<StoredAlias | undefined> {
    return this.#guard("getAlias", () => {
      this.#syncCache();
      const hit = recall(this.#aliasCache, aliasName);
      if (hit !== undefined) return hit;
      const row = this.#selectAlias.get(aliasName);
      if (row === undefined) return undefined;
      const alias = aliasFromRow(row);
      remember(this.#aliasCache, this.#cacheSize, aliasName, alias);
      return alias;
    });
  }

  async listAliases(
    options: ListOptions & { readonly targetKeyId?: string },
  ): Promise<readonly StoredAlias[]> {
    return this.#guard("listAliases", () => {
      const { after, targetKeyId, limit } = options;
      const stmt =
        this.#listAliases[(after === undefined ? 0 : 1) + (targetKeyId === undefined ? 0 : 2)]!;
      const params: Record<string, string | number> = { limit };
      if (after !== undefined) params.after = after;
      if (targetKeyId !== undefined) params.target = targetKeyId;
      return stmt.all(params).map(aliasFromRow);
    });
  }

  async createAlias(alias: StoredAlias): Promise<void> {
    this.#guard("createAlias", () => {
      this.#write(() => {
        if (this.#selectAlias.get(alias.aliasName) !== undefined) {
          throw new AlreadyExistsError(`alias ${alias.aliasName} already exists`);
        }
        this.#insertAlias.run(
          alias.aliasName,
          alias.targetKeyId,
          alias.createdAt,
          alias.updatedAt,
          alias.seal ?? null,
        );
      });
      this.#dropWalIfReplaced();
      this.#aliasCache.delete(alias.aliasName);
    });
  }

  async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    this.#guard("updateAlias", () => {
      this.#write(() => {
        // Under BEGIN IMMEDIATE's write lock: the seal read here is the one the update replaces.
        this.#checkAliasSeal(aliasName, expectedSeal);
        // No seal given means the alias is stored without one (KeyStore.updateAlias), so a
        // seal computed over the previous target can never outlive it.
        if (
          this.#updateAliasStmt.run(targetKeyId, updatedAt, seal ?? null, aliasName).changes === 0
        ) {
          throw new NotFoundError(`alias ${aliasName} does not exist`);
        }
      });
      this.#dropWalIfReplaced();
      this.#aliasCache.delete(aliasName);
    });
  }

  async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    this.#guard("deleteAlias", () => {
      this.#write(() => {
        // As in updateAlias: compared under the write lock, so nothing lands in between.
        this.#checkAliasSeal(aliasName, expectedSeal);
        if (this.#deleteAliasStmt.run(aliasName).changes === 0) {
          throw new NotFoundError(`alias ${aliasName} does not exist`);
        }
      });
      this.#dropWalIfReplaced();
      this.#aliasCache.delete(aliasName);
    });
  }

  /**
   * The compare of a compare-and-set alias write, to be called inside `#write`; nothing to
   * compare when `expectedSeal` is undefined.
   * @throws NotFoundError when the alias is gone, KeyStoreConflictError when its seal is not
   *   `expectedSeal`.
   */
  #checkAliasSeal(aliasName: string, expectedSeal: string | null | undefined): void {
    if (expectedSeal === undefined) return;
    const row = this.#selectAlias.get(aliasName);
    if (row === undefined) throw new NotFoundError(`alias ${aliasName} does not exist`);
    if (row.seal !== expectedSeal) {
      throw new KeyStoreConflictError(`alias ${aliasName} changed concurrently`);
    }
  }

  async getSetting(name: string): Promise<string | undefined> {
    return this.#guard("getSetting", () => this.#selectSetting.get(name));
  }

  async putSettingIfAbsent(name: string, value: string): Promise<string> {
    return this.#guard("putSettingIfAbsent", () => {
      const stored = this.#write(() => {
        this.#insertSetting.run(name, value);
        return this.#selectSetting.get(name)!;
      });
      // rotateRootKey records each finished page and, last, the retirement here, so the WAL
      // holds no material under the retired root key once the rotation resolves.
      this.#dropWalIfReplaced();
      return stored;
    });
  }

  /** Closes the database if the store opened it; idempotent. Later calls reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Other connections may keep the file (and the WAL) open after this one closes.
    this.#dropWalIfReplaced();
    this.#keyCache.clear();
    this.#aliasCache.clear();
    if (this.#ownsDatabase && this.#db.open) this.#db.close();
  }

  #readKey(keyId: string): StoredKey | undefined {
    const row = this.#selectKey.get(keyId);
    return row === undefined ? undefined : keyFromRows(row, this.#selectVersions.all(keyId));
  }

  /**
   * `PRAGMA data_version` changes whenever another connection (this process or another) has
   * committed to the file since this connection last asked, and stays put for this
   * connection's own commits. Checking it costs one tiny statement, far less than decoding a
   * key row and its versions, so the encrypt hot path reads from memory yet sees another
   * process's rotation or deletion on its very next call. Commits on this connection, by this
   * store or another store opened on the same `database`, move the connection's write counter
   * instead (writesByConnection). Checking before reading (not after) is what keeps this safe:
   * an entry read after the check is at least as new as the version the check saw.
   */
  #syncCache(): void {
    const current = this.#dataVersionStmt.get()!;
    const writes = this.#writes.count;
    if (current === this.#dataVersion && writes === this.#writesSeen) return;
    this.#dataVersion = current;
    this.#writesSeen = writes;
    // Something committed, but maybe not to the key store: an audit sink in the same file
    // commits on every audited call, and clearing for those would make every call a miss. The
    // counter tells only while its triggers are intact; a schema change (which moves
    // data_version too) may have dropped or undone them, so it is checked again then.
    const schemaVersion = this.#schemaVersionStmt.get()!;
    if (schemaVersion !== this.#schemaVersion) {
      this.#schemaVersion = schemaVersion;
      this.#counterTrusted = countedTriggersIntact(this.#triggersStmt.all());
    }
    const changes = this.#changesStmt.get()!;
    if (this.#counterTrusted && changes === this.#changesSeen) return;
    this.#changesSeen = changes;
    this.#keyCache.clear();
    this.#aliasCache.clear();
  }

  /**
   * BEGIN IMMEDIATE takes the write lock up front (waiting up to busy_timeout). A deferred
   * transaction would read under a shared lock and could then fail to upgrade with
   * SQLITE_BUSY without waiting, or, worse, base its compare-and-set on a stale snapshot.
   * Inside a transaction someone else began on a shared connection, better-sqlite3 would run
   * `fn` in a savepoint instead: no write lock up front, and a write that resolves yet vanishes
   * when that transaction rolls back. Hence the refusal.
   */
  #write<T>(fn: () => T): T {
    refuseOuterTransaction(this.#db, this.description, "key store");
    // The tables' triggers move kms_store_changes in the same transaction (migration 4).
    const result = this.#inTransaction.immediate(fn) as T;
    this.#writes.count++;
    return result;
  }

  /**
   * Checkpoints the WAL into the database file and truncates it, so the frames that still hold
   * a destroyed key's rows, or material an update replaced, leave the disk (secure_delete has
   * zeroed them in the pages the checkpoint copies). Best effort, after the write committed:
   * while a reader on another connection still uses the WAL the checkpoint cannot finish (it
   * returns busy rather than failing), and the frames are then overwritten when SQLite next
   * restarts the WAL or removed when the last connection closes. It waits for that reader at most
   * CHECKPOINT_WAIT_MS, not busyTimeoutMs: a pending checkpoint holds off every other
   * connection's writer, which may fail with SQLITE_BUSY after its own timeout, and a reader
   * that keeps its transaction open (a backup, a replication tool, another connection of this
   * process) would never let it finish anyway. The write itself has succeeded either way, so
   * no error from here may fail the call. A checkpoint that did not finish leaves the flag set,
   * so the next write, turn of the event loop or close tries again once that reader is gone.
   */
  #dropWal(): void {
    try {
      const busyTimeout = this.#busyTimeoutStmt.get()!;
      this.#db.exec(`PRAGMA busy_timeout = ${Math.min(busyTimeout, CHECKPOINT_WAIT_MS)}`);
      try {
        // A reader still using the WAL is reported as busy = 1, not thrown.
        const { busy } = this.#truncateWal.get()!;
        this.#replacedMaterialInWal = busy !== 0;
      } finally {
        this.#db.exec(`PRAGMA busy_timeout = ${busyTimeout}`);
      }
    } catch {
      // See above: best effort by design.
      this.#replacedMaterialInWal = true;
    }
  }

  /**
   * Empties the WAL of material that an update replaced, at the next write that replaces none,
   * at close, or on the next turn of the event loop, whichever comes first, rather than after
   * every such update: a checkpoint writes and fsyncs the database file and holds off other
   * connections' writers, and a root-key rotation re-wraps key after key without yielding to
   * the event loop (200 keys took 15 ms each instead of 1.4 to 4 ms when every update truncated
   * the WAL). rotateRootKey's last writes are settings, so the WAL is empty when it resolves.
   * Until then the frames hold nothing that was not on disk before the update.
   */
  #scheduleWalDrop(): void {
    this.#replacedMaterialInWal = true;
    if (this.#walDropScheduled) return;
    this.#walDropScheduled = true;
    setImmediate(() => {
      this.#walDropScheduled = false;
      if (!this.#closed) this.#dropWalIfReplaced();
    });
  }

  #dropWalIfReplaced(): void {
    if (this.#replacedMaterialInWal) this.#dropWal();
  }

  /**
   * Reads of a key row and its version rows must come from one snapshot, or a commit landing
   * between the two statements would pair revision n with the versions of revision n+1.
   */
  #read<T>(fn: () => T): T {
    return this.#inTransaction.deferred(fn) as T;
  }

  #guard<T>(operation: string, fn: () => T): T {
    if (this.#closed) throw new KmsInternalError(`${this.description}: the key store is closed`);
    try {
      return fn();
    } catch (error) {
      if (isKmsError(error)) throw error;
      throw new KmsInternalError(
        `${this.description}: ${operation} failed (${sqliteCode(error)})`,
        { cause: error },
      );
    }
  }
}

/**
 * Whether writing `key` replaces or removes wrapped material that the stored versions (`stored`,
 * read in the same transaction) hold.
 */
function dropsStoredMaterial(key: StoredKey, stored: readonly MaterialRow[]): boolean {
  const written = new Map(key.versions.map((v) => [v.version, v.wrappedMaterial]));
  return stored.some((row) => {
    const material = written.get(row.version);
    return material === undefined || Buffer.compare(material, row.wrapped_material) !== 0;
  });
}

/** The SQLite result code (e.g. SQLITE_BUSY) of a driver error, for messages. */
function sqliteCode(error: unknown): string {
  if (error instanceof Database.SqliteError) {
    return error.code === "SQLITE_BUSY"
      ? "SQLITE_BUSY: another connection held the write lock longer than busyTimeoutMs"
      : error.code;
  }
  return error instanceof Error ? error.name : "unknown error";
}
