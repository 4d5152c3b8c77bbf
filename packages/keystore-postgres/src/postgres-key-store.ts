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
} from "@kms/core";
import type pg from "pg";
import { ChangeFeed } from "./internal/change-feed.ts";
import {
  BEGIN,
  booleanOption,
  type CheckedOutClient,
  checkOut,
  hostOf,
  integerOption,
  lockTimeoutOption,
  optionsObject,
  pgCode,
  poolOption,
  schemaOption,
  setLockTimeout,
  storeFailure,
} from "./internal/connection.ts";
import { channelOf, migrate, quoteIdent } from "./internal/migrations.ts";
import {
  type AliasRow,
  aliasFromRow,
  assertStorableKey,
  assertStorableText,
  isStorableText,
  KEY_COLUMNS,
  KEY_VERSION_SELECT,
  type KeyVersionRow,
  keyParams,
  keysFromRows,
  listBound,
  TYPES,
  versionArrays,
} from "./internal/rows.ts";

interface CommonOptions {
  /**
   * Schema holding the store's tables, created if missing. Lower-case letters, digits and `_`,
   * at most 59 characters (the NOTIFY channel is `kms_<schema>`, and identifiers stop at 63).
   * @defaultValue "kms"
   */
  readonly schema?: string;
  /**
   * Longest time a record cached by this instance may lag behind a change another instance
   * committed, in ms. Changes normally arrive within milliseconds by LISTEN/NOTIFY; the change
   * counter is polled every `maxStalenessMs / 2` (at most 2^31 - 1 ms, Node's longest timer)
   * in case a notification was missed, and cached records are not served at all while that
   * poll has not succeeded for `maxStalenessMs`.
   * @defaultValue 1000
   */
  readonly maxStalenessMs?: number;
  /**
   * How many decoded key records (and, separately, aliases) to keep in memory; 0 disables the
   * cache, so every read goes to the database.
   * @defaultValue 1000
   */
  readonly cacheSize?: number;
  /**
   * How long a write waits for the lock that serializes writers (the change counter) before
   * it fails with KMSInternalException, so one stuck transaction cannot stall every write.
   * 0 waits forever.
   * @defaultValue 10000
   */
  readonly lockTimeoutMs?: number;
  /**
   * Whether to hold a dedicated connection for LISTEN. Without it, changes by other instances
   * are noticed by the counter poll alone (still within `maxStalenessMs`).
   * @defaultValue true
   */
  readonly listen?: boolean;
}

/** Options of {@link PostgresKeyStore.open}: a connection string, or a pool the caller owns. */
export type PostgresKeyStoreOptions = CommonOptions &
  (
    | {
        /** `postgres://user@host:5432/db`. The store creates a pool and ends it on `close()`. */
        readonly connectionString: string;
        readonly pool?: never;
      }
    | {
        /**
         * A pg Pool. The store borrows connections and leaves ending the pool to the caller;
         * the LISTEN connection is opened separately with the pool's settings.
         */
        readonly pool: pg.Pool;
        readonly connectionString?: never;
      }
  );

/**
 * A KeyStore in PostgreSQL, shared by any number of application instances.
 *
 * Every key write is one compare-and-set: `UPDATE … WHERE key_id = $1 AND revision = $2`. Row
 * locks make racing writers queue, and READ COMMITTED re-checks the WHERE clause against the
 * row the winner committed, so exactly one writer per revision succeeds and the rest get
 * KeyStoreConflictError (the facade then re-reads and re-applies its change): no update is lost.
 * A key's row, its version rows and (on delete) its aliases change in one transaction.
 *
 * Reads of keys and aliases are served from a per-instance cache that other instances' writes
 * invalidate by LISTEN/NOTIFY, with a change-counter poll as the safety net: a cached record
 * is never more than `maxStalenessMs` behind the database.
 *
 * Methods behave as documented on {@link KeyStore}. Text a text column cannot hold exactly
 * (U+0000, lone surrogates) is never sent: no stored id or name can equal it, so lookups find
 * nothing, and writes of it are refused.
 * @throws AlreadyExistsError, NotFoundError, KeyStoreConflictError as KeyStore documents;
 * ValidationError when a record to write holds such text (the message names the field);
 * KmsInternalError when PostgreSQL fails (cause attached) or the store is closed.
 */
export class PostgresKeyStore implements KeyStore {
  readonly description: string;
  readonly #pool: pg.Pool;
  readonly #ownsPool: boolean;
  readonly #feed: ChangeFeed;
  readonly #sql: ReturnType<typeof statements>;
  #closed = false;

  private constructor(
    pool: pg.Pool,
    ownsPool: boolean,
    sql: ReturnType<typeof statements>,
    feed: ChangeFeed,
    description: string,
  ) {
    this.#pool = pool;
    this.#ownsPool = ownsPool;
    this.#feed = feed;
    this.#sql = sql;
    this.description = description;
  }

  /**
   * Connects, creates or upgrades the schema (safe when several instances start at once) and
   * starts listening for other instances' changes.
   *
   * @example
   * const store = await PostgresKeyStore.open({ connectionString: process.env.DATABASE_URL! });
   * const kms = await createKms({ store, rootKey: RootKeySource.fromEnv() });
   *
   * @throws ValidationError when `options` is not an object, an option is out of range or of
   * the wrong type, or neither/both of pool and connectionString are given. KmsInternalError
   * when the database cannot be reached or its schema was written by a newer version of this
   * package.
   */
  static async open(options: PostgresKeyStoreOptions): Promise<PostgresKeyStore> {
    optionsObject(options);
    const schema = schemaOption(options.schema);
    const maxStalenessMs = integerOption("maxStalenessMs", options.maxStalenessMs, 1_000, 2);
    const cacheSize = integerOption("cacheSize", options.cacheSize, 1_000);
    const lockTimeoutMs = lockTimeoutOption(options.lockTimeoutMs);
    const listen = booleanOption("listen", options.listen, true);
    const { pool, ownsPool } = poolOption(options);
    const where = hostOf(pool.options);
    const description = `postgres:${where}/${schema}`;
    const listenConfig: pg.ClientConfig | undefined = listen ? { ...pool.options } : undefined;
    const feed = new ChangeFeed({
      pool,
      listenConfig,
      channel: channelOf(schema),
      counterSql: `SELECT counter, subject FROM ${quoteIdent(schema)}.kms_changes`,
      maxStalenessMs,
      cacheSize,
    });
    try {
      await migrate(pool, schema, description);
      await feed.start();
      const sql = statements(schema, lockTimeoutMs);
      return new PostgresKeyStore(pool, ownsPool, sql, feed, description);
    } catch (error) {
      await feed.close();
      if (ownsPool) await pool.end().catch(() => {});
      if (isKmsError(error)) throw error;
      throw new KmsInternalError(`${description}: cannot open the key store (${pgCode(error)})`, {
        cause: error,
      });
    }
  }

  async getKey(keyId: string): Promise<StoredKey | undefined> {
    this.#checkOpen();
    // No stored id can hold U+0000 or a lone surrogate; sent as is, the one fails with 22021
    // and the other would be looked up as U+FFFD.
    if (!isStorableText(keyId)) return undefined;
    const hit = this.#feed.key(keyId);
    if (hit !== undefined) return hit;
    const generation = this.#feed.generation;
    // One statement, so the key row and its versions come from one snapshot.
    const rows = await this.#query<KeyVersionRow>("getKey", this.#sql.getKey, [keyId]);
    const key = keysFromRows(rows)[0];
    if (key !== undefined) this.#feed.putKey(key, generation);
    return key;
  }

  async listKeys(options: ListOptions): Promise<readonly StoredKey[]> {
    this.#checkOpen();
    const rows = await this.#query<KeyVersionRow>("listKeys", this.#sql.listKeys, [
      listBound(options.after),
      options.limit,
    ]);
    return keysFromRows(rows);
  }

  async createKey(key: StoredKey): Promise<void> {
    this.#checkOpen();
    assertStorableKey(key);
    await this.#transaction("createKey", async (client) => {
      const inserted = await client.query(this.#sql.insertKey, keyParams(key));
      if (inserted.rowCount === 0) throw new AlreadyExistsError(`key ${key.keyId} already exists`);
      await client.query(this.#sql.upsertVersions, [key.keyId, ...versionArrays(key.versions)]);
    });
    this.#feed.invalidateKey(key.keyId);
  }

  async updateKey(key: StoredKey): Promise<void> {
    this.#checkOpen();
    if (!isStorableText(key.keyId)) throw new NotFoundError(`key ${key.keyId} does not exist`);
    assertStorableKey(key);
    try {
      await this.#transaction("updateKey", async (client) => {
        const updated = await client.query(this.#sql.updateKey, keyParams(key));
        if (updated.rowCount === 0) throw await this.#whyNot(client, key.keyId);
        await client.query(this.#sql.upsertVersions, [key.keyId, ...versionArrays(key.versions)]);
        await client.query(this.#sql.deleteStaleVersions, [
          key.keyId,
          key.versions.map((v) => v.version),
        ]);
      });
    } finally {
      // Also on conflict: the caller re-reads, and must not be handed the record it lost with.
      this.#feed.invalidateKey(key.keyId);
    }
  }

  async deleteKey(keyId: string, revision: number): Promise<void> {
    this.#checkOpen();
    if (!isStorableText(keyId)) throw new NotFoundError(`key ${keyId} does not exist`);
    let aliases: readonly { alias_name: string }[] = [];
    try {
      await this.#transaction("deleteKey", async (client) => {
        const deleted = await client.query(this.#sql.deleteKey, [keyId, revision]);
        if (deleted.rowCount === 0) throw await this.#whyNot(client, keyId);
        // Versions go by ON DELETE CASCADE; aliases in the same transaction.
        ({ rows: aliases } = await client.query<{ alias_name: string }>(this.#sql.deleteAliasesOf, [
          keyId,
        ]));
      });
    } finally {
      this.#feed.invalidateKey(keyId);
      // This instance may have cached them; their notifications come later, or never.
      for (const { alias_name } of aliases) this.#feed.invalidateAlias(alias_name);
    }
  }

  async getAlias(aliasName: string): Promise<StoredAlias | undefined> {
    this.#checkOpen();
    if (!isStorableText(aliasName)) return undefined;
    const hit = this.#feed.alias(aliasName);
    if (hit !== undefined) return hit;
    const generation = this.#feed.generation;
    const rows = await this.#query<AliasRow>("getAlias", this.#sql.getAlias, [aliasName]);
    const alias = rows[0] === undefined ? undefined : aliasFromRow(rows[0]);
    if (alias !== undefined) this.#feed.putAlias(alias, generation);
    return alias;
  }

  async listAliases(
    options: ListOptions & { readonly targetKeyId?: string },
  ): Promise<readonly StoredAlias[]> {
    this.#checkOpen();
    if (options.targetKeyId !== undefined && !isStorableText(options.targetKeyId)) return [];
    const rows = await this.#query<AliasRow>("listAliases", this.#sql.listAliases, [
      listBound(options.after),
      options.targetKeyId ?? null,
      options.limit,
    ]);
    return rows.map(aliasFromRow);
  }

  async createAlias(alias: StoredAlias): Promise<void> {
    this.#checkOpen();
    assertStorableText("aliasName", alias.aliasName);
    assertStorableText("targetKeyId", alias.targetKeyId);
    assertStorableText("seal", alias.seal);
    try {
      await this.#transaction("createAlias", async (client) => {
        const { rowCount } = await client.query(this.#sql.insertAlias, [
          alias.aliasName,
          alias.targetKeyId,
          alias.createdAt,
          alias.updatedAt,
          alias.seal ?? null,
        ]);
        if (rowCount === 0) throw new AlreadyExistsError(`alias ${alias.aliasName} already exists`);
      });
    } finally {
      this.#feed.invalidateAlias(alias.aliasName);
    }
  }

  async updateAlias(
    aliasName: string,
    targetKeyId: string,
    updatedAt: number,
    seal?: string,
    expectedSeal?: string | null,
  ): Promise<void> {
    this.#checkOpen();
    if (!isStorableText(aliasName)) throw new NotFoundError(`alias ${aliasName} does not exist`);
    assertStorableText("targetKeyId", targetKeyId);
    assertStorableText("seal", seal);
    // A seal no text column can hold is stored nowhere: the compare fails like any other.
    const comparable = typeof expectedSeal !== "string" || isStorableText(expectedSeal);
    try {
      await this.#transaction("updateAlias", async (client) => {
        // No seal given means the alias is stored without one (KeyStore.updateAlias), so a
        // seal computed over the previous target can never outlive it. The compare is in the
        // UPDATE's WHERE clause, which READ COMMITTED re-checks against the row a concurrent
        // writer committed: the compare and the write are one step.
        const { rowCount } = comparable
          ? await client.query(this.#sql.updateAlias, [
              aliasName,
              targetKeyId,
              updatedAt,
              seal ?? null,
              expectedSeal !== undefined,
              expectedSeal ?? null,
            ])
          : { rowCount: 0 };
        if (rowCount === 0) await this.#refuseAliasWrite(client, aliasName);
      });
    } finally {
      this.#feed.invalidateAlias(aliasName);
    }
  }

  /**
   * Why a compare-and-set write of an alias touched no row: the alias is gone, or its seal is no
   * longer the expected one.
   * @throws NotFoundError or KeyStoreConflictError, always.
   */
  async #refuseAliasWrite(client: pg.PoolClient, aliasName: string): Promise<never> {
    const { rowCount: exists } = await client.query(this.#sql.aliasExists, [aliasName]);
    if (exists === 0) throw new NotFoundError(`alias ${aliasName} does not exist`);
    throw new KeyStoreConflictError(`alias ${aliasName} changed concurrently`);
  }

  async deleteAlias(aliasName: string, expectedSeal?: string | null): Promise<void> {
    this.#checkOpen();
    if (!isStorableText(aliasName)) throw new NotFoundError(`alias ${aliasName} does not exist`);
    // As in updateAlias: a seal no text column can hold matches no stored alias.
    const comparable = typeof expectedSeal !== "string" || isStorableText(expectedSeal);
    try {
      await this.#transaction("deleteAlias", async (client) => {
        // The compare is in the DELETE's WHERE clause, re-checked by READ COMMITTED against the
        // row a concurrent writer committed, as in updateAlias.
        const { rowCount } = comparable
          ? await client.query(this.#sql.deleteAlias, [
              aliasName,
              expectedSeal !== undefined,
              expectedSeal ?? null,
            ])
          : { rowCount: 0 };
        if (rowCount === 0) await this.#refuseAliasWrite(client, aliasName);
      });
    } finally {
      this.#feed.invalidateAlias(aliasName);
    }
  }

  async getSetting(name: string): Promise<string | undefined> {
    this.#checkOpen();
    if (!isStorableText(name)) return undefined;
    const rows = await this.#query<{ value: string }>("getSetting", this.#sql.getSetting, [name]);
    return rows[0]?.value;
  }

  async putSettingIfAbsent(name: string, value: string): Promise<string> {
    this.#checkOpen();
    assertStorableText("name", name);
    assertStorableText("value", value);
    // Two statements, not one: under READ COMMITTED a single INSERT … ON CONFLICT DO NOTHING
    // that lost a race could not see the winner's row in its own snapshot.
    await this.#query("putSettingIfAbsent", this.#sql.insertSetting, [name, value]);
    const rows = await this.#query<{ value: string }>("putSettingIfAbsent", this.#sql.getSetting, [
      name,
    ]);
    return rows[0]!.value;
  }

  /**
   * Stops listening and ends the pool if the store created it; idempotent. Later calls reject.
   * @throws Nothing; shutdown errors are ignored.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#feed.close();
    if (this.#ownsPool) await this.#pool.end().catch(() => {});
  }

  /** Why a compare-and-set matched no row: the key is gone, or its revision moved on. */
  async #whyNot(client: pg.PoolClient, keyId: string): Promise<Error> {
    const { rowCount } = await client.query(this.#sql.keyExists, [keyId]);
    return rowCount === 0
      ? new NotFoundError(`key ${keyId} does not exist`)
      : new KeyStoreConflictError(`key ${keyId} changed concurrently`);
  }

  #checkOpen(): void {
    if (this.#closed) throw new KmsInternalError(`${this.description}: the key store is closed`);
  }

  async #query<R extends pg.QueryResultRow>(
    operation: string,
    text: string,
    values: unknown[],
  ): Promise<R[]> {
    try {
      const result = await this.#pool.query<R>({ text, values, types: TYPES });
      return result.rows;
    } catch (error) {
      throw this.#wrap(operation, error);
    }
  }

  async #transaction(
    operation: string,
    body: (client: pg.PoolClient) => Promise<void>,
  ): Promise<void> {
    let checkedOut: CheckedOutClient;
    try {
      checkedOut = await checkOut(this.#pool);
    } catch (error) {
      throw this.#wrap(operation, error);
    }
    const { client } = checkedOut;
    let broken: Error | undefined;
    try {
      // Every write transaction locks the change-counter row first. The trigger would lock it
      // anyway, but only after the key or alias row; a deleteKey (key row, then its aliases)
      // and an updateAlias (alias row) could then each hold what the other waits for. Taking
      // the counter first gives all writers one lock order, and costs no round trip.
      await client.query(this.#sql.begin);
      await body(client);
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch((rollbackError: Error) => {
        broken = rollbackError;
      });
      throw this.#wrap(operation, error);
    } finally {
      checkedOut.release(broken);
    }
  }

  #wrap(operation: string, error: unknown): Error {
    return storeFailure(this.description, operation, error);
  }
}

function statements(schema: string, lockTimeoutMs: number) {
  const s = quoteIdent(schema);
  const columns = KEY_COLUMNS.join(", ");
  const placeholders = KEY_COLUMNS.map((_, i) => `$${i + 1}`).join(", ");
  const assignments = KEY_COLUMNS.slice(1)
    .map((c, i) => `${c} = $${i + 2}`)
    .join(", ");
  return {
    getKey: `SELECT ${KEY_VERSION_SELECT} FROM ${s}.kms_keys k
      LEFT JOIN ${s}.kms_key_versions v ON v.key_id = k.key_id
      WHERE k.key_id = $1 ORDER BY v.version`,
    listKeys: `SELECT ${KEY_VERSION_SELECT}
      FROM (SELECT * FROM ${s}.kms_keys WHERE $1::text IS NULL OR key_id > $1::text
            ORDER BY key_id LIMIT $2) k
      LEFT JOIN ${s}.kms_key_versions v ON v.key_id = k.key_id
      ORDER BY k.key_id, v.version`,
    begin: `${BEGIN}; ${setLockTimeout(lockTimeoutMs)}; SELECT 1 FROM ${s}.kms_changes FOR UPDATE`,
    keyExists: `SELECT 1 FROM ${s}.kms_keys WHERE key_id = $1`,
    insertKey: `INSERT INTO ${s}.kms_keys (${columns}) VALUES (${placeholders})
      ON CONFLICT (key_id) DO NOTHING`,
    // $2 is the new revision; the stored one must be exactly one less.
    updateKey: `UPDATE ${s}.kms_keys SET ${assignments}
      WHERE key_id = $1 AND revision = $2 - 1`,
    // Versions are immutable in practice (an update appends one), so unchanged rows are left
    // alone; root-key rotation is the one writer that changes existing rows.
    upsertVersions: `INSERT INTO ${s}.kms_key_versions AS v (key_id, version, created_at,
        rotation_type, key_material_id, wrapped_material, public_key)
      SELECT $1, * FROM unnest($2::integer[], $3::bigint[], $4::text[], $5::text[],
        $6::bytea[], $7::bytea[])
      ON CONFLICT (key_id, version) DO UPDATE SET created_at = excluded.created_at,
        rotation_type = excluded.rotation_type, key_material_id = excluded.key_material_id,
        wrapped_material = excluded.wrapped_material, public_key = excluded.public_key
      WHERE (v.created_at, v.rotation_type, v.key_material_id, v.wrapped_material, v.public_key)
        IS DISTINCT FROM (excluded.created_at, excluded.rotation_type, excluded.key_material_id,
        excluded.wrapped_material, excluded.public_key)`,
    deleteStaleVersions: `DELETE FROM ${s}.kms_key_versions
      WHERE key_id = $1 AND NOT (version = ANY ($2::integer[]))`,
    deleteKey: `DELETE FROM ${s}.kms_keys WHERE key_id = $1 AND revision = $2`,
    deleteAliasesOf: `DELETE FROM ${s}.kms_aliases WHERE target_key_id = $1 RETURNING alias_name`,
    getAlias: `SELECT * FROM ${s}.kms_aliases WHERE alias_name = $1`,
    listAliases: `SELECT * FROM ${s}.kms_aliases
      WHERE ($1::text IS NULL OR alias_name > $1::text)
        AND ($2::text IS NULL OR target_key_id = $2::text)
      ORDER BY alias_name LIMIT $3`,
    insertAlias: `INSERT INTO ${s}.kms_aliases (alias_name, target_key_id, created_at, updated_at,
        seal)
      VALUES ($1, $2, $3, $4, $5) ON CONFLICT (alias_name) DO NOTHING`,
    updateAlias: `UPDATE ${s}.kms_aliases SET target_key_id = $2, updated_at = $3, seal = $4
      WHERE alias_name = $1 AND (NOT $5::boolean OR seal IS NOT DISTINCT FROM $6::text)`,
    aliasExists: `SELECT 1 FROM ${s}.kms_aliases WHERE alias_name = $1`,
    deleteAlias: `DELETE FROM ${s}.kms_aliases
      WHERE alias_name = $1 AND (NOT $2::boolean OR seal IS NOT DISTINCT FROM $3::text)`,
    getSetting: `SELECT value FROM ${s}.kms_settings WHERE name = $1`,
    insertSetting: `INSERT INTO ${s}.kms_settings (name, value) VALUES ($1, $2)
      ON CONFLICT (name) DO NOTHING`,
  };
}
