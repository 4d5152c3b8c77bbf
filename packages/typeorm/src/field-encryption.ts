import {
  ConflictError,
  type DataKeyCache,
  type DataKeyCacheLimits,
  type DataKeyStore,
  DETERMINISTIC_OVERHEAD,
  type DecryptItem,
  type EncryptCallOptions,
  type EncryptionContext,
  type FieldBinding,
  FieldEncryptionEngine,
  type FieldEncryptionEngineOptions,
  type FieldValue,
  InvalidCiphertextError,
  type KmsLike,
  mayCollateAsFieldCiphertextText,
  RANDOMIZED_OVERHEAD,
  type StoredValueInfo,
  ValidationError,
} from "@kms/core";
import {
  type AfterQueryEvent,
  type BeforeQueryEvent,
  type DataSource,
  type EntityMetadata,
  type EntitySchema,
  type EntitySubscriberInterface,
  EventSubscriber,
  type InsertEvent,
  type LoadEvent,
  type QueryRunner,
  type RecoverEvent,
  type SoftRemoveEvent,
  type TransactionCommitEvent,
  type TransactionRollbackEvent,
  type UpdateEvent,
} from "typeorm";
import type { EncryptedColumnSpec } from "./encrypted-column.ts";
import { isUnsealedValue, unsealedError } from "./encrypted-column.ts";
import { dataKeyConnection } from "./internal/data-key-connection.ts";
import { MYSQL_FAMILY } from "./internal/drivers.ts";
import {
  type BlindIndexField,
  bindingFor,
  contextFor,
  describe,
  type EncryptedField,
  type EntityDescriptor,
  type FieldRead,
  hasChildEntities,
  holderAt,
  holderOf,
  indexIn,
  keyContextFor,
  readFields,
  valueIn,
  writtenRow,
} from "./internal/entity-descriptor.ts";
import { managerScope } from "./internal/manager-scope.ts";
import { expressionError } from "./internal/query-guards.ts";
import { Sealed, type SealedBinding } from "./internal/sealed.ts";
import {
  checkDataKeyEntity,
  type DataKeyRow,
  dataKeyEntity,
  TypeormDataKeyStore,
} from "./typeorm-data-key-store.ts";

export interface FieldEncryptionOptions {
  readonly kms: KmsLike;
  /** The KMS key for new data keys, or a function of the value's context (one key per tenant). */
  readonly keyId: string | ((context: EncryptionContext) => string);
  /** Where wrapped data keys live; default: the `dataKeyTable` table through TypeORM. */
  readonly dataKeyStore?: DataKeyStore;
  /** Table of the default data key store; default "kms_data_keys". */
  readonly dataKeyTable?: string;
  readonly cache?: DataKeyCacheLimits;
  /** One DataKeyCache shared with encryptMessage or other engines; not with `cache`. */
  readonly dataKeyCache?: DataKeyCache;
  /**
   * Read unprefixed (legacy plaintext) values as they are, for migrations. Default false. While
   * on, `encryptedWhere` also matches the legacy rows, by the value itself, sent in clear.
   */
  readonly legacyPlaintext?: boolean;
  /**
   * KMS keys whose deterministic values and blind indexes lookups still match until the
   * migration ends (the engine option of the same name; README "Rotation and migration"): set
   * it on the application's encryption and the job's while `reencryptEntities` moves values to
   * `keyId`, and remove it once the job has finished. Not with `engine` (give it to that engine).
   * They are also the only KMS keys besides `keyId` that data keys are unwrapped under: a value
   * under any other KMS key fails with InvalidCiphertextException. So after switching `keyId`,
   * or re-pointing an alias `keyId` names, list the former key (for an alias, the key it named
   * before, by key id or ARN) until the job has moved the rows; deterministic values and blind
   * indexes under a re-pointed alias stay under the former key, which then stays listed.
   */
  readonly previousKeyIds?: FieldEncryptionEngineOptions["previousKeyIds"];
  /** Use an existing engine (shares its caches, e.g. with @kms/prisma) instead of building one. */
  readonly engine?: FieldEncryptionEngine;
}

type Row = Record<string, unknown>;

/**
 * What restore() puts back after a write, by property path: the plaintext of a sealed value,
 * `undefined` for a value the caller did not give, an index as loaded, or COMPUTED_INDEX.
 */
type Snapshot = Map<
  string,
  { readonly embedded: readonly string[]; readonly property: string; readonly value: unknown }
>;

/** Drivers with one connection: a data key written during a transaction belongs to it. */
const SINGLE_CONNECTION = new Set(["better-sqlite3", "sqlite", "sqljs", "capacitor", "cordova"]);

const SET_ISOLATION =
  /^\s*SET\s+(?:(SESSION|LOCAL|GLOBAL)\s+)?TRANSACTION\s+ISOLATION\s+LEVEL\s+([A-Za-z]+(?:[\s-]+[A-Za-z]+)?)/iu;

/** "REPEATABLE-READ" (a server variable), "repeatable read" (SQL) → "REPEATABLE READ". */
function isolationLevel(text: string): string {
  return text
    .trim()
    .toUpperCase()
    .replace(/[\s_-]+/gu, " ");
}

/**
 * The one query runner of a single-connection driver (TypeORM's SQLite drivers hand every caller
 * the same runner): whatever transaction is open on the connection is open on it.
 */
function sharedRunner(dataSource: DataSource): QueryRunner | undefined {
  return (dataSource.driver as { queryRunner?: QueryRunner }).queryRunner;
}

let transactionCounter = 0;

/**
 * Encrypted columns for a DataSource: the engine, the data key entity and the subscriber that
 * encrypts on insert/update and decrypts on load. Build it with `fieldEncryption(options)`, one
 * per DataSource: with the default data key store each database holds its own data key table
 * while the engine's data key cache is one, so a second DataSource is refused (several
 * DataSources can share one encryption only through a `dataKeyStore` they all read).
 */
export class TypeormFieldEncryption {
  readonly engine: FieldEncryptionEngine;
  /** Entities to add to the DataSource (the data key table; empty with a custom store). */
  readonly entities: readonly EntitySchema<DataKeyRow>[];
  /** The subscriber class to list in the DataSource's `subscribers`. */
  readonly subscriber: new () => EntitySubscriberInterface;
  /** The engine options (transaction scope) of each query runner's open transaction. */
  readonly #transactions = new WeakMap<
    QueryRunner,
    EncryptCallOptions & { transactionScope: string }
  >();
  /** Transactions open on each query runner: 1, plus one per savepoint (nested transaction). */
  readonly #depths = new WeakMap<QueryRunner, number>();
  /** MySQL/MariaDB: the isolation level of a query runner's open transaction, when set for it. */
  readonly #isolation = new WeakMap<QueryRunner, string>();
  /** MySQL/MariaDB: the level `SET TRANSACTION ISOLATION LEVEL` set for the next transaction. */
  readonly #nextIsolation = new WeakMap<QueryRunner, string>();
  /** MySQL/MariaDB: the session's isolation level, as set or read on the query runner. */
  readonly #sessionIsolation = new WeakMap<QueryRunner, string>();
  readonly #snapshots = new WeakMap<object, Snapshot>();
  /** The write that remembered each entity's snapshot. */
  readonly #rememberedBy = new WeakMap<object, PendingWrite>();
  /** The writes on each query runner with entities still to restore. */
  readonly #pending = new WeakMap<QueryRunner, Set<PendingWrite>>();
  /**
   * Counts transaction and savepoint beginnings; `#levels` holds the count at which each open
   * level of a query runner began, a PendingWrite the count when it began and last sealed.
   */
  #sequence = 0;
  readonly #levels = new WeakMap<QueryRunner, number[]>();
  /** Rollbacks on single-connection drivers so far (see #sealEntity). */
  #rollbacks = 0;
  readonly #gates = new Map<string, Map<string, Promise<void>>>();
  readonly #loadBatches = new WeakMap<object, LoadBatch>();
  /** Blind indexes as loaded on entities whose select left out the indexed property. */
  readonly #loadedIndexes = new WeakMap<object, Map<string, unknown>>();
  /** Embedded objects holding values being sealed, and the entity being written with each. */
  readonly #holders = new WeakMap<object, object>();
  /** The write whose before-write hooks are running on a query runner (or DataSource). */
  readonly #broadcasts = new WeakMap<object, PendingWrite>();
  /** The data key entity the default store writes through; undefined with another store. */
  readonly #dataKeyEntity: EntitySchema<DataKeyRow> | undefined;
  /** The DataSource the default data key store serves, once one has used this encryption. */
  #dataSource: DataSource | undefined;
  /** Its entity metadata when bound: initialize() builds them anew (see `#bind`). */
  #boundMetadatas: readonly EntityMetadata[] | undefined;

  constructor(options: FieldEncryptionOptions) {
    if (options === null || typeof options !== "object") {
      throw new ValidationError(`"options" expected an object`);
    }
    const entity =
      options.dataKeyStore === undefined ? dataKeyEntity(options.dataKeyTable) : undefined;
    this.entities = entity === undefined ? [] : [entity];
    this.#dataKeyEntity = options.engine === undefined ? entity : undefined;
    this.engine =
      options.engine ??
      new FieldEncryptionEngine({
        kms: options.kms,
        keyId: options.keyId,
        dataKeyStore:
          options.dataKeyStore ?? new TypeormDataKeyStore(entity as EntitySchema<DataKeyRow>),
        ...(options.cache === undefined ? {} : { cache: options.cache }),
        ...(options.dataKeyCache === undefined ? {} : { dataKeyCache: options.dataKeyCache }),
        ...(options.legacyPlaintext === undefined
          ? {}
          : { legacyPlaintext: options.legacyPlaintext }),
        ...(options.previousKeyIds === undefined ? {} : { previousKeyIds: options.previousKeyIds }),
      });
    const owner = this;
    class KmsFieldEncryptionSubscriber extends EncryptionSubscriber {
      constructor() {
        super(owner);
      }
    }
    EventSubscriber()(KmsFieldEncryptionSubscriber);
    this.subscriber = KmsFieldEncryptionSubscriber;
  }

  /**
   * Adds the subscriber to a DataSource built elsewhere (instead of listing it in its
   * `subscribers`), after `dataSource.initialize()`: initializing replaces the subscriber list.
   * Its `entities` must already hold `this.entities` (the data key table): entities cannot be
   * added to an initialized DataSource.
   * @throws ValidationException when the DataSource is not initialized, lacks this encryption's
   *   data key entity, already has the subscriber of another `fieldEncryption(...)`, or is not the
   *   DataSource this encryption serves (see `#bind`).
   */
  install(dataSource: DataSource): void {
    requireInitialized(dataSource, "install()");
    this.#checkDataKeyEntity(dataSource);
    const installed = encryptionOf(dataSource, false);
    if (installed === this) return;
    if (installed !== undefined) {
      throw new ValidationError(
        `the DataSource already has the field encryption subscriber of another fieldEncryption(...): a DataSource takes one`,
      );
    }
    this.#bind(dataSource);
    (dataSource.subscribers as EntitySubscriberInterface[]).push(new this.subscriber());
  }

  /**
   * Checks, at startup, what the first use of each entity would otherwise check: that
   * `dataSource` has this encryption's subscriber and its data key entity (the first data key
   * written would fail without it), that every `fromRow`/`rowIdentity` name of its encrypted
   * columns is a plain column of the entity, and that no two of an entity's encrypted columns
   * or blind indexes are bound under one field name (an own `workStreet` beside the `street` of
   * an embedding prefixed `work`). Call it after `dataSource.initialize()`; it makes no query
   * and no KMS call.
   * @throws ValidationException when the DataSource is not initialized, lacks the subscriber or
   *   the data key entity, naming the entity, the encrypted property and the context name that
   *   is refused, or naming both columns bound under one field name.
   */
  check(dataSource: DataSource): void {
    requireInitialized(dataSource, "check()");
    if (encryptionOf(dataSource) !== this) {
      throw new ValidationError(
        `the DataSource's field encryption subscriber belongs to another fieldEncryption(...) than the one checked`,
      );
    }
    this.#checkDataKeyEntity(dataSource);
    this.#bind(dataSource);
    for (const metadata of dataSource.entityMetadatas) describe(metadata);
  }

  /**
   * Ties the encryption to the first DataSource that uses it, with the default data key store. The
   * engine's cache is one for every DataSource, the data key table one per database: a data key
   * made for a row of database A, then found in the cache for a row of database B, would leave B
   * holding values whose data key row is only in A, unreadable by a fresh process.
   * @throws ValidationException for another DataSource.
   */
  #bind(dataSource: DataSource): void {
    if (this.#dataKeyEntity === undefined) return;
    if (this.#dataSource === dataSource) {
      if (this.#boundMetadatas === dataSource.entityMetadatas) return;
      // destroy() then initialize() again: the data key table may be new (dropSchema, a test
      // setup, a migration), and a data key cached before would seal values whose row is gone.
      this.#boundMetadatas = dataSource.entityMetadatas;
      this.engine.clearCache();
      return;
    }
    if (this.#dataSource !== undefined) {
      throw new ValidationError(
        `this fieldEncryption(...) already serves another DataSource: its data key cache is shared while each database holds its own data key table, so a data key made for one would be used in the other without its row there; build one fieldEncryption(...) per DataSource (or give them a dataKeyStore they all read)`,
      );
    }
    this.#dataSource = dataSource;
    this.#boundMetadatas = dataSource.entityMetadatas;
  }

  /**
   * The default data key store writes through the DataSource's metadata for `this.entities`:
   * without it the first new data key fails deep inside TypeORM.
   */
  #checkDataKeyEntity(dataSource: DataSource): void {
    if (this.#dataKeyEntity !== undefined) checkDataKeyEntity(dataSource, this.#dataKeyEntity);
  }

  /**
   * Runs `fn` with the data key store bound to the right connections. On single-connection
   * drivers, the one connection, inside whatever transaction is open on it, with that
   * transaction's scope (so that keys created there never outlive its rollback), whether or not
   * the caller passed its runner; unless `scoped` is false (core's rotation job, whose engine
   * calls take no scope), when a data key is written only outside any transaction. On drivers
   * with a pool, data key rows are written on a connection apart from the pool, committed at once
   * and never waiting for a pooled connection, and read through the caller's connection (see
   * TypeormDataKeyStore and data-key-connection.ts).
   * @internal
   */
  run<T>(
    dataSource: DataSource,
    queryRunner: QueryRunner | undefined,
    fn: (options: EncryptCallOptions) => Promise<T>,
    scoped = true,
  ): Promise<T> {
    this.#bind(dataSource);
    if (!SINGLE_CONNECTION.has(dataSource.options.type)) {
      const own = queryRunner !== undefined && !queryRunner.isReleased ? queryRunner : undefined;
      // SERIALIZABLE transactions read with locks there (see TypeormDataKeyStore.get).
      const readLocks =
        own !== undefined && MYSQL_FAMILY.has(dataSource.options.type)
          ? () => this.#serializable(dataSource, own)
          : undefined;
      return managerScope.run(
        {
          read: own?.manager,
          write: dataKeyConnection(dataSource),
          beforeWrite: undefined,
          readLocks,
        },
        () => fn(NO_OPTIONS),
      );
    }
    const runner = queryRunner ?? sharedRunner(dataSource);
    const options = scoped ? this.#callOptions(dataSource, runner) : NO_OPTIONS;
    const manager = runner?.manager ?? dataSource.manager;
    const scope = options.transactionScope;
    return managerScope.run(
      {
        read: undefined,
        write: { dataSource, run: (statements) => statements(manager) },
        beforeWrite: () => this.#refuseOtherTransaction(dataSource, scope),
        readLocks: undefined,
      },
      () => fn(options),
    );
  }

  /**
   * Remembers an isolation level set on a MySQL or MariaDB connection: TypeORM's
   * `transaction("SERIALIZABLE", …)` (and the DataSource's `isolationLevel`) send
   * `SET TRANSACTION ISOLATION LEVEL …` for the next transaction, and nothing on the query runner
   * says which level its transaction has. See `#serializable`.
   * @internal
   */
  noteQuery(dataSource: DataSource, queryRunner: QueryRunner | undefined, query: unknown): void {
    if (queryRunner === undefined || !MYSQL_FAMILY.has(dataSource.options.type)) return;
    if (typeof query !== "string" || query.length > 120) return;
    const set = SET_ISOLATION.exec(query);
    if (set === null) return;
    const level = isolationLevel(set[2] as string);
    const scope = set[1]?.toUpperCase();
    if (scope === undefined) this.#nextIsolation.set(queryRunner, level);
    else if (scope !== "GLOBAL") this.#sessionIsolation.set(queryRunner, level);
  }

  /**
   * Whether `queryRunner` is in a SERIALIZABLE transaction (MySQL, MariaDB), where every read is
   * a locking one: the level set for it, or else the session's, asked of the server once per
   * query runner (a read of a data key not in the cache, in a transaction).
   */
  async #serializable(dataSource: DataSource, queryRunner: QueryRunner): Promise<boolean> {
    if (!queryRunner.isTransactionActive) return false;
    let level = this.#isolation.get(queryRunner) ?? this.#sessionIsolation.get(queryRunner);
    if (level === undefined) {
      // MySQL 8 has only transaction_isolation, MariaDB before 11.1 and MySQL 5 only
      // tx_isolation (TypeORM keeps the server's version as "10.11.9", "8.0.36").
      const major = Number.parseInt(String(dataSource.driver.version ?? ""), 10);
      const names =
        major >= 10 || major === 5
          ? ["tx_isolation", "transaction_isolation"]
          : ["transaction_isolation", "tx_isolation"];
      let read: unknown;
      for (const name of names) {
        try {
          read = await queryRunner.query(`SELECT @@SESSION.${name} AS level`);
          break;
        } catch {
          // An unknown variable: the other name.
        }
      }
      const first = Array.isArray(read) ? (read[0] as { level?: unknown } | undefined) : undefined;
      level = isolationLevel(String(first?.level ?? ""));
      this.#sessionIsolation.set(queryRunner, level);
    }
    return level === "SERIALIZABLE";
  }

  /**
   * A data key row is about to be written on the one connection of a single-connection driver:
   * it commits or rolls back with the transaction open there, if any. The engine was told
   * `scope` (the transaction's, or none) when the call began; a transaction begun since (another
   * request's, on the same connection) would take the row with it on rollback while the engine
   * keeps the key for everyone.
   * @throws ConflictException when a transaction other than the call's is open.
   */
  #refuseOtherTransaction(dataSource: DataSource, scope: string | undefined): void {
    const runner = sharedRunner(dataSource);
    if (runner?.isTransactionActive !== true) return;
    if (scope !== undefined && this.#transactions.get(runner)?.transactionScope === scope) return;
    throw new ConflictError(
      `a data key cannot be stored now: SQLite has one connection, and a transaction this operation is not part of began on it (the key's row would be rolled back with it while the key stayed in use); retry once that transaction has ended`,
    );
  }

  /** The engine options of a call on `queryRunner`: its transaction scope, if any. */
  #callOptions(dataSource: DataSource, queryRunner: QueryRunner | undefined): EncryptCallOptions {
    return this.#scopeOf(dataSource, queryRunner) ?? NO_OPTIONS;
  }

  /**
   * The transaction scope of the transaction open on the connection, made on first use; none
   * outside a transaction, and none on drivers with a pool, whose data key rows are written on a
   * connection of their own and committed at once. On a single-connection driver every runner is
   * the one connection's: a call that passes none (`encryptedWhere` on a repository of the
   * DataSource, `inspect`) is in the transaction another caller opened there, and so are the
   * data key rows it writes.
   */
  #scopeOf(
    dataSource: DataSource,
    queryRunner: QueryRunner | undefined,
  ): (EncryptCallOptions & { transactionScope: string }) | undefined {
    if (!SINGLE_CONNECTION.has(dataSource.options.type)) return undefined;
    const runner = queryRunner ?? sharedRunner(dataSource);
    if (runner?.isTransactionActive !== true) return undefined;
    let options = this.#transactions.get(runner);
    if (options === undefined) {
      transactionCounter += 1;
      options = { transactionScope: `typeorm-tx-${transactionCounter}` };
      this.#transactions.set(runner, options);
    }
    return options;
  }

  /**
   * What a stored value is made of (legacy plaintext, mode, data key, KMS key), read through
   * `dataSource`'s data key table: for rotation reports and audits.
   * @throws InvalidCiphertextException when the value is not ciphertext (in strict mode) or its
   *   data key is unknown.
   */
  inspect(dataSource: DataSource, stored: string | Uint8Array): Promise<StoredValueInfo> {
    return this.run(dataSource, undefined, () => this.engine.inspect(stored));
  }

  /** Encrypts one value for storage (text or bytes form). @internal */
  async seal(
    model: string,
    f: EncryptedField,
    context: EncryptionContext,
    value: unknown,
    options: EncryptCallOptions,
    bound?: SealedBinding,
  ): Promise<Sealed> {
    refuseCiphertext(model, f, value);
    if (hasFieldHeader(value)) await this.#refuseStoredBytes(model, f, value);
    const { spec } = f;
    const binding = bindingFor(model, f.field, spec, context);
    return new Sealed(
      spec.storage === "text"
        ? await this.engine.encryptText(binding, spec, value, options)
        : await this.engine.encrypt(binding, spec, value, options),
      bound,
    );
  }

  /**
   * Bytes that carry a field ciphertext header (FORMAT §6.1) whose data key is in the store are
   * a value this engine wrote, read with listeners off: sealed again, the row would hold a
   * ciphertext of a ciphertext. Other bytes with such a header are ordinary data that happens
   * to start that way.
   * @throws ValidationException when the data key exists.
   */
  async #refuseStoredBytes(model: string, f: EncryptedField, value: Uint8Array): Promise<void> {
    let info: StoredValueInfo;
    try {
      info = await this.engine.inspect(value);
    } catch (error) {
      // Unknown data key: not a value of this store.
      if (error instanceof InvalidCiphertextError) return;
      throw error;
    }
    if (!info.legacy) throw ciphertextError(model, f);
  }

  /**
   * Every stored form an equality lookup of `value` must match (engine `lookupForms`,
   * `blindIndexForms`): deterministic ciphertexts (and, with legacyPlaintext, the legacy form in
   * the same column), or blind indexes, the current one first; `legacy` holds the legacy form of
   * a blind-indexed value, which legacy rows hold in the property's own column. @internal
   */
  async lookupForms(
    model: string,
    f: EncryptedField,
    context: EncryptionContext,
    value: unknown,
    options: EncryptCallOptions,
  ): Promise<{ readonly sealed: readonly Sealed[]; readonly legacy: readonly Sealed[] }> {
    const { spec } = f;
    const binding = bindingFor(model, f.field, spec, context);
    if (spec.mode === "deterministic") {
      refuseCiphertext(model, f, value);
      if (hasFieldHeader(value)) await this.#refuseStoredBytes(model, f, value);
      const forms =
        spec.storage === "text"
          ? await this.engine.lookupFormsText(binding, spec, value, options)
          : await this.engine.lookupForms(binding, spec, value, options);
      return { sealed: forms.map((form) => new Sealed(form)), legacy: [] };
    }
    const index = spec.blindIndex;
    if (index === undefined || f.index === undefined) {
      throw new ValidationError(`${model}.${f.path} has no blind index`);
    }
    const indexes = await this.engine.blindIndexForms(
      bindingFor(model, f.index.field, spec, context),
      index,
      value,
      options,
    );
    const legacy =
      spec.storage === "text"
        ? this.engine.legacyForm(binding, spec, value, "text")
        : this.engine.legacyForm(binding, spec, value, "bytes");
    return {
      sealed: indexes.map((form) => new Sealed(form)),
      legacy: legacy === undefined ? [] : [new Sealed(legacy)],
    };
  }

  /** The blind index of `value` for `f`'s index column. @internal */
  blindIndex(
    model: string,
    f: EncryptedField,
    context: EncryptionContext,
    value: unknown,
    options: EncryptCallOptions,
  ): Promise<string> {
    const index = f.spec.blindIndex;
    if (index === undefined || f.index === undefined) {
      throw new ValidationError(`${model}.${f.path} has no blind index`);
    }
    return this.engine.blindIndex(
      bindingFor(model, f.index.field, f.spec, context),
      index,
      value,
      options,
    );
  }

  /** Decrypts one stored value. @internal */
  open(
    model: string,
    f: EncryptedField,
    context: EncryptionContext,
    stored: unknown,
  ): Promise<FieldValue> {
    const binding = bindingFor(model, f.field, f.spec, context);
    return typeof stored === "string"
      ? this.engine.decryptText(binding, f.spec, stored)
      : this.engine.decrypt(binding, f.spec, stored as Uint8Array);
  }

  /**
   * Encrypts an entity (or an update's value set) in place, remembering the plaintext. Values
   * under a cached data key are sealed right here, without a promise (TypeORM broadcasts
   * beforeInsert for every entity of a save at once); the rest, and blind indexes, take the
   * asynchronous path.
   */
  sealEntity(
    dataSource: DataSource,
    queryRunner: QueryRunner | undefined,
    d: EntityDescriptor,
    entity: Row,
    fallback: Row | undefined,
    write: "insert" | "update",
  ): Promise<void> | undefined {
    const broadcast = this.#broadcast(queryRunner ?? dataSource, queryRunner);
    broadcast.entities.add(entity);
    try {
      this.#bind(dataSource);
      const sealing = this.#sealEntity(
        dataSource,
        queryRunner,
        d,
        entity,
        fallback,
        write,
        broadcast,
      );
      if (sealing === undefined) return undefined;
      broadcast.sealing += 1;
      return sealing.then(
        () => {
          broadcast.sealing -= 1;
        },
        (error: unknown) => {
          broadcast.sealing -= 1;
          this.#abandon(broadcast);
          throw error;
        },
      );
    } catch (error) {
      this.#abandon(broadcast);
      // As before this had a synchronous path: TypeORM sees a rejected hook, not a throw in
      // the middle of its broadcast loop.
      return Promise.reject(error);
    }
  }

  /**
   * The write whose before-write hooks TypeORM is calling in one synchronous loop on `owner`
   * (the entities of one save, insert or upsert): closed once the loop ends.
   */
  #broadcast(owner: object, queryRunner: QueryRunner | undefined): PendingWrite {
    const open = this.#broadcasts.get(owner);
    if (open !== undefined) return open;
    const broadcast: PendingWrite = {
      entities: new Set(),
      remembered: new Set(),
      runner: queryRunner,
      began: this.#sequence,
      sealed: this.#sequence,
      sealing: 0,
    };
    this.#broadcasts.set(owner, broadcast);
    queueMicrotask(() => {
      if (this.#broadcasts.get(owner) === broadcast) this.#broadcasts.delete(owner);
    });
    return broadcast;
  }

  /**
   * One hook of a write failed: TypeORM gives the write up without a query, and without a
   * rollback (which restores) when it runs outside a transaction (insert, upsert, a save with
   * `transaction: false`). Every entity of the write is restored here, once the hooks after
   * this one in the loop have run too; what their sealing still in flight seals is dropped.
   */
  #abandon(broadcast: PendingWrite): void {
    queueMicrotask(() => {
      for (const entity of broadcast.entities) this.restore(entity);
    });
  }

  #sealEntity(
    dataSource: DataSource,
    queryRunner: QueryRunner | undefined,
    d: EntityDescriptor,
    entity: Row,
    fallback: Row | undefined,
    write: "insert" | "update",
    pending: PendingWrite,
  ): Promise<void> | undefined {
    const reads = readFields(d, entity);
    const present = reads.filter((r) => r.value !== undefined);
    for (const { f, value } of present) {
      // `increment`/`decrement` and `set({ column: () => "…" })` hand TypeORM SQL to splice in:
      // arithmetic or string functions on a ciphertext would destroy it.
      if (typeof value === "function") throw expressionError(d, f.path);
    }
    this.#claimEmbeddeds(d, entity, present);
    const values = plaintextsOf(d, present, this.#snapshots.get(entity));
    const snapshot: Snapshot =
      fallback !== undefined && present.length < d.columns.length ? unselected(reads) : new Map();
    const keep = (f: EncryptedField, path: string, property: string, value: unknown) =>
      snapshot.set(path, { embedded: f.embedded, property, value });
    for (const { f, index: value } of this.#keepStoredIndexes(d, entity, reads, fallback) ?? []) {
      const index = f.index as BlindIndexField;
      keep(f, index.path, index.property, value);
    }
    if (present.length === 0 && snapshot.size === 0) return undefined;
    for (const { f, value } of values) {
      keep(f, f.path, f.spec.property, value);
      if (f.index !== undefined) keep(f, f.index.path, f.index.property, COMPUTED_INDEX);
    }
    this.#remember(entity, snapshot, pending);
    // Context columns TypeORM leaves out of this statement bind what the row gets instead.
    const row = writtenRow(d, entity, fallback, write);
    const callOptions = this.#callOptions(dataSource, queryRunner);
    const cached = this.#sealCached(d, row, fallback, values, callOptions);
    if (cached > 0) pending.sealed = this.#sequence;
    if (cached === values.length) return undefined;
    const shared = SINGLE_CONNECTION.has(dataSource.options.type);
    return this.run(dataSource, queryRunner, async (options) => {
      // A failed write restores the caller's object at once (another entity's hook rejected,
      // the transaction rolled back) while this may still be sealing: what it seals after that
      // is dropped, or the object would keep ciphertext.
      const current = () => this.#snapshots.get(entity) === snapshot;
      for (const { f, holder, value } of values.slice(cached)) {
        if (value === null) {
          if (f.index !== undefined) holder[f.index.property] = null;
          continue;
        }
        const context = contextFor(d.model, f, row, fallback);
        const bound = sealedBinding(f, context, fallback);
        const release = await this.#enterScope(options, f.spec, context);
        try {
          for (;;) {
            const rollbacks = this.#rollbacks;
            const sealed = await this.seal(d.model, f, context, value, options, bound);
            const index =
              f.index === undefined
                ? undefined
                : new Sealed(await this.blindIndex(d.model, f, context, value, options), bound);
            if (!current()) return;
            // On SQLite a savepoint of another request may have rolled back meanwhile, with
            // the row of the data key just used (the engine drops the key): sealed again.
            if (shared && rollbacks !== this.#rollbacks) continue;
            holder[f.spec.property] = sealed;
            if (f.index !== undefined) holder[f.index.property] = index;
            pending.sealed = this.#sequence;
            break;
          }
        } finally {
          release?.();
        }
      }
    });
  }

  /**
   * Refuses an embedded object that holds values of two rows, or of two embedded properties of
   * one row, while they are written (`p2.address = p1.address`, then `save([p1, p2])`): the
   * values are sealed in place, so both would be written with one ciphertext, bound to one of
   * the rows only, and the other row's would never decrypt.
   * @throws ValidationException naming the embedded property.
   */
  #claimEmbeddeds(d: EntityDescriptor, entity: Row, present: readonly FieldRead[]): void {
    let own: Map<object, string> | undefined;
    for (const { f, holder } of present) {
      if (f.embedded.length === 0 || holder === undefined) continue;
      own ??= new Map();
      const path = f.embedded.join(".");
      const twin = own.get(holder);
      if (twin !== undefined && twin !== path) {
        throw new ValidationError(
          `${d.model}.${path} and ${d.model}.${twin} are one object holding encrypted values: values are encrypted in place and bound to their column, so give each embedded property its own object`,
        );
      }
      const claim = this.#holders.get(holder);
      if (claim !== undefined && claim !== entity && this.#snapshots.has(claim)) {
        throw new ValidationError(
          `${d.model}.${path} is also the embedded object of another entity being written, and holds encrypted values: values are encrypted in place and bound to their row, so give each entity its own object`,
        );
      }
      own.set(holder, path);
    }
    for (const holder of own?.keys() ?? []) this.#holders.set(holder, entity);
  }

  /**
   * A blind index on the entity without the value it indexes: an entity loaded with a partial
   * `select` (`{ id, panIndex, uses }`). Nothing here can recompute it, and the row may have
   * changed since the load, so an index equal to the one loaded (or the one stored) is left out
   * of the write and put back on the object afterwards. Any other index is refused, as is an
   * index on an insert or in an update's value set: it would be written without its value.
   * @returns the reads whose index was taken off the entity, to restore; undefined when none was.
   * @throws ValidationException naming the index and the property to set instead.
   */
  #keepStoredIndexes(
    d: EntityDescriptor,
    entity: Row,
    reads: readonly FieldRead[],
    stored: Row | undefined,
  ): FieldRead[] | undefined {
    let kept: FieldRead[] | undefined;
    for (const read of reads) {
      const { f, index: value } = read;
      if (f.index === undefined || value === undefined || read.value !== undefined) continue;
      const column = f.index.path;
      if (stored === undefined) {
        throw new ValidationError(
          `${d.model}.${column} is a blind index: it is computed, not written`,
        );
      }
      const loaded = this.#loadedIndexes.get(entity);
      const unchanged =
        (loaded !== undefined && loaded.get(column) === value) || indexIn(f, stored) === value;
      if (!unchanged) {
        throw new ValidationError(
          `${d.model}.${column} is the blind index of ${d.model}.${f.path}: it is computed from ${f.path}, not written, and the value given differs from the one loaded; set ${f.path} instead (select it, or assign it) and the index follows`,
        );
      }
      kept ??= [];
      kept.push(read);
    }
    // Taken off only once every index passed: a refusal leaves the caller's object as it was.
    for (const { f, holder } of kept ?? []) {
      (holder as Row)[(f.index as BlindIndexField).property] = undefined;
    }
    return kept;
  }

  /**
   * Seals, in place and in order, the values whose data key is cached, up to the first that
   * needs a new data key, is deterministic or has a blind index. `row` holds the context values
   * (see writtenRow).
   * @returns how many were sealed: the rest take the asynchronous path.
   */
  #sealCached(
    d: EntityDescriptor,
    row: Row,
    fallback: Row | undefined,
    values: readonly Plaintext[],
    options: EncryptCallOptions,
  ): number {
    let sealed = 0;
    for (const { f, holder, value } of values) {
      const { spec } = f;
      if (value === null) {
        if (f.index !== undefined) holder[f.index.property] = null;
        sealed += 1;
        continue;
      }
      if (f.index !== undefined || spec.mode === "deterministic") return sealed;
      refuseCiphertext(d.model, f, value);
      // Whether its data key exists is a store lookup: the asynchronous path makes it.
      if (hasFieldHeader(value)) return sealed;
      const binding =
        f.binding ?? bindingFor(d.model, f.field, spec, contextFor(d.model, f, row, fallback));
      const stored =
        spec.storage === "text"
          ? this.engine.encryptTextIfCached(binding, spec, value, options)
          : this.engine.encryptIfCached(binding, spec, value, options);
      if (stored === undefined) return sealed;
      holder[spec.property] = new Sealed(stored, sealedBinding(f, binding.context, fallback));
      sealed += 1;
    }
    return sealed;
  }

  /**
   * Inside a transaction scope the engine keeps no in-flight record of the data key it is
   * creating, so a burst (save() of many entities broadcasts every beforeInsert at once) would
   * create one data key per value. The first value of each (scope, mode, data key context)
   * goes alone; the others wait for it and then find its key cached. The data key context, not
   * the whole one: rows told apart only by their `rowIdentity` share the key.
   */
  async #enterScope(
    options: EncryptCallOptions,
    spec: EncryptedColumnSpec,
    context: EncryptionContext,
  ): Promise<(() => void) | undefined> {
    const scope = options.transactionScope;
    if (scope === undefined) return undefined;
    let gates = this.#gates.get(scope);
    if (gates === undefined) {
      gates = new Map();
      this.#gates.set(scope, gates);
    }
    const keyContext = keyContextFor(spec, context);
    const key = `${spec.mode}\u0000${spec.blindIndex === undefined ? "" : "b"}\u0000${JSON.stringify(Object.entries(keyContext).sort())}`;
    const gate = gates.get(key);
    if (gate !== undefined) {
      await gate;
      return undefined;
    }
    let release: () => void = () => {};
    gates.set(
      key,
      new Promise<void>((resolve) => {
        release = resolve;
      }),
    );
    return release;
  }

  /**
   * Before a soft remove or a recover of a loaded entity, which writes no encrypted column:
   * remembers the encrypted columns and indexes it left undefined (a partial `select`), which
   * TypeORM sets to null on the object afterwards, so that restore() puts them back to
   * undefined and a later save() does not write null over them.
   */
  keepUnselected(
    dataSource: DataSource,
    d: EntityDescriptor,
    entity: Row,
    queryRunner: QueryRunner | undefined,
  ): void {
    const snapshot = unselected(readFields(d, entity));
    if (snapshot.size === 0) return;
    const pending = this.#broadcast(queryRunner ?? dataSource, queryRunner);
    pending.entities.add(entity);
    this.#remember(entity, snapshot, pending);
  }

  /** Keeps what restore() puts back on `entity`, also after a failure of its write. */
  #remember(entity: Row, snapshot: Snapshot, pending: PendingWrite): void {
    this.#snapshots.set(entity, snapshot);
    // A write of the same object still in flight gives it up (see plaintextsOf).
    this.#rememberedBy.get(entity)?.remembered.delete(entity);
    this.#rememberedBy.set(entity, pending);
    pending.remembered.add(entity);
    const queryRunner = pending.runner;
    if (queryRunner === undefined) return;
    let set = this.#pending.get(queryRunner);
    if (set === undefined) {
      set = new Set();
      this.#pending.set(queryRunner, set);
    }
    set.add(pending);
    if (set.size > MAX_PENDING_WRITES) {
      // SQLite's one query runner lives as long as the DataSource, and a write whose failed
      // statement carried no ciphertext (its values were null) is never matched to it: such
      // writes, holding nothing sealed, are forgotten rather than kept forever.
      for (const idle of set) {
        if (idle.sealing === 0 && !this.#holdsSealed(idle, () => true)) set.delete(idle);
      }
    }
  }

  /** Puts the plaintext back on the caller's object after a write. */
  restore(entity: object): void {
    const snapshot = this.#snapshots.get(entity);
    if (snapshot === undefined) return;
    this.#snapshots.delete(entity);
    const pending = this.#rememberedBy.get(entity);
    if (pending !== undefined) {
      this.#rememberedBy.delete(entity);
      pending.remembered.delete(entity);
      if (pending.remembered.size === 0 && pending.runner !== undefined) {
        this.#pending.get(pending.runner)?.delete(pending);
      }
    }
    for (const { embedded, property, value } of snapshot.values()) {
      // Looked up again: TypeORM may have created an embedded object absent before the write.
      const holder = holderAt(entity as Row, embedded);
      if (holder === undefined) continue;
      if (value !== COMPUTED_INDEX) holder[property] = value;
      else {
        // The caller sees the index as the string the database holds, as after a load.
        const index = holder[property];
        if (index instanceof Sealed) holder[property] = index.stored;
      }
    }
  }

  /**
   * A statement failed outside a transaction, or a transaction (or savepoint) of `queryRunner`
   * ended: restores every object left holding ciphertext by a write it took with it, or that had
   * no after-write hook. A query runner of a pool serves one caller, and each of these events
   * restores all its writes. The one query runner of a single-connection driver serves every
   * caller at once (see `#ownWrites`).
   * @internal
   */
  restorePending(
    dataSource: DataSource,
    queryRunner: QueryRunner,
    event: "failed" | "commit" | "rollback",
    parameters?: unknown,
  ): void {
    const set = this.#pending.get(queryRunner);
    if (event === "rollback" && SINGLE_CONNECTION.has(dataSource.options.type)) {
      this.#rollbacks += 1;
    }
    if (set === undefined) return;
    const writes =
      queryRunner === sharedRunner(dataSource)
        ? this.#ownWrites(set, queryRunner, event, parameters)
        : [...set];
    for (const pending of writes) {
      set.delete(pending);
      for (const entity of pending.remembered) this.restore(entity);
    }
  }

  /**
   * The writes of the one query runner of a single-connection driver that `event` concerns, where
   * other callers' writes are in flight too (a request's save still waiting for the KMS while
   * another request's transaction fails):
   * - a statement that failed outside a transaction: the writes whose ciphertext it carried;
   * - a rollback: the writes that began inside the transaction or savepoint rolled back, and
   *   those that sealed a value while it was open: a data key made inside it, used by any write
   *   on the connection, lost its row with it (the engine drops the key, and sealing in flight
   *   then seals again: see #sealEntity);
   * - the end of the outermost transaction by a commit: the writes that began inside it, are
   *   done sealing and hold no ciphertext (a save whose UPDATE was left out: no after-write hook).
   */
  #ownWrites(
    set: ReadonlySet<PendingWrite>,
    queryRunner: QueryRunner,
    event: "failed" | "commit" | "rollback",
    parameters: unknown,
  ): PendingWrite[] {
    const out: PendingWrite[] = [];
    if (event === "failed") {
      const sent = sentValues(parameters);
      if (sent.size === 0) return out;
      for (const pending of set) {
        if (this.#holdsSealed(pending, (stored) => sent.has(stored))) out.push(pending);
      }
      return out;
    }
    const levels = this.#levels.get(queryRunner);
    const began = levels?.[levels.length - 1] ?? 0;
    for (const pending of set) {
      if (event === "rollback") {
        if (pending.began >= began || pending.sealed >= began) out.push(pending);
      } else if (
        pending.began >= began &&
        pending.sealing === 0 &&
        !this.#holdsSealed(pending, () => true)
      ) {
        out.push(pending);
      }
    }
    return out;
  }

  /** Whether an entity of `pending` holds a sealed value that `matches`. */
  #holdsSealed(pending: PendingWrite, matches: (sent: string) => boolean): boolean {
    for (const entity of pending.remembered) {
      for (const { embedded, property } of this.#snapshots.get(entity)?.values() ?? []) {
        const value = holderAt(entity as Row, embedded)?.[property];
        if (value instanceof Sealed && matches(sentForm(value.stored))) return true;
      }
    }
    return false;
  }

  /**
   * A transaction began on `queryRunner`, or, inside one, a savepoint (a nested `transaction()`,
   * which TypeORM runs as SAVEPOINT / RELEASE / ROLLBACK TO): the engine learns of the savepoint,
   * so that the data keys made inside it are dropped if it rolls back, as their rows are.
   * @internal
   */
  startTransaction(dataSource: DataSource, queryRunner: QueryRunner): void {
    const depth = (this.#depths.get(queryRunner) ?? 0) + 1;
    this.#depths.set(queryRunner, depth);
    this.#sequence += 1;
    const levels = this.#levels.get(queryRunner) ?? [];
    levels.push(this.#sequence);
    this.#levels.set(queryRunner, levels);
    if (depth === 1) {
      const level = this.#nextIsolation.get(queryRunner);
      this.#nextIsolation.delete(queryRunner);
      if (level === undefined) this.#isolation.delete(queryRunner);
      else this.#isolation.set(queryRunner, level);
      return;
    }
    const scope = this.#scopeOf(dataSource, queryRunner)?.transactionScope;
    if (scope !== undefined) this.engine.beginTransactionSavepoint(scope);
  }

  /**
   * A transaction of `queryRunner` ended. A savepoint: its data keys belong to the transaction
   * around it after a release, and are dropped after a rollback (a rollback whose savepoint the
   * engine never saw begin drops every key of the transaction). The outermost transaction: the
   * data keys it created become the engine's own after a commit (later transactions reuse
   * them) and are dropped after a rollback.
   * @internal
   */
  endTransaction(queryRunner: QueryRunner, outcome: "commit" | "rollback"): void {
    const scope = this.#transactions.get(queryRunner)?.transactionScope;
    this.#levels.get(queryRunner)?.pop();
    if (queryRunner.isTransactionActive) {
      this.#depths.set(queryRunner, Math.max(1, (this.#depths.get(queryRunner) ?? 1) - 1));
      if (scope === undefined) return;
      // The gates' first writers may have made keys that are now dropped.
      if (outcome === "rollback") this.#gates.delete(scope);
      this.engine.endTransactionSavepoint(scope, outcome === "commit" ? "release" : "rollback");
      return;
    }
    this.#depths.delete(queryRunner);
    this.#isolation.delete(queryRunner);
    if (scope !== undefined) {
      this.#gates.delete(scope);
      this.engine.endTransactionScope(scope, outcome);
    }
    this.#transactions.delete(queryRunner);
  }

  /**
   * Decrypts a loaded entity in place. TypeORM calls afterLoad for every entity of a result in
   * one synchronous loop and then awaits the promises returned: every value joins one batch per
   * query runner, decrypted by one `decryptMany` when the loop is done (values under cached data
   * keys opened together, one KMS call per distinct data key for the rest). The first entity of
   * a broadcast returns the promise of them all, which settles once all their values are on them
   * (see `#group`).
   */
  openEntity(
    dataSource: DataSource,
    queryRunner: QueryRunner | undefined,
    d: EntityDescriptor,
    entity: Row,
    broadcast: LoadBroadcast,
  ): Promise<void> | undefined {
    try {
      this.#bind(dataSource);
    } catch (error) {
      return Promise.reject(error);
    }
    if (d.blindIndexes.size > 0) this.#recordLoadedIndexes(d, entity);
    let batch: LoadBatch | undefined;
    let first = 0;
    const columns = d.columns;
    // Indexed: for…of allocated an iterator result per column of every loaded entity.
    for (let c = 0; c < columns.length; c++) {
      const f = columns[c] as EncryptedField;
      const holder = holderOf(f, entity);
      const stored = holder?.[f.spec.property] as string | Uint8Array | null | undefined;
      if (holder === undefined || stored === undefined || stored === null) continue;
      let binding: FieldBinding;
      try {
        binding = readBinding(d, f, entity);
      } catch (error) {
        // Nothing awaits this entity's values once the hook fails: they leave the batch.
        if (batch !== undefined) batch.items.length = first;
        return Promise.reject(error);
      }
      if (batch === undefined) {
        batch = this.#loadBatch(dataSource, queryRunner);
        first = batch.items.length;
      }
      batch.items.push({ binding, spec: f.spec, stored, holder });
    }
    return batch === undefined
      ? undefined
      : this.#group(dataSource, queryRunner, batch, first, broadcast);
  }

  /**
   * The promise of the group of `batch` that the entity whose items start at `start` joins: the
   * last group, unless `broadcast` began since an entity last joined one. A batch is not one
   * caller's: on SQLite's one query runner the loads of concurrent finds (other requests, other
   * tenants) that TypeORM broadcasts in the same tick share it, and `decryptMany` rejects it all
   * at its first bad value. A group never spans two broadcasts, so when a batch of several groups
   * fails, each group's items are decrypted again on their own: only the groups holding a bad
   * value fail, and with them only the finds that loaded them. Groups under one data key and
   * context share its load, as concurrent decryptions do: the retry costs no KMS call per group.
   * One promise per group, returned by the entity that opened it; the others return nothing.
   * TypeORM collects the promises the hooks of a load return, across its broadcasts, and awaits
   * them all before the find returns, so the group's one promise holds the find for all its
   * entities. A promise per entity measured 10–20 ms more CPU per find of 10,000 entities (~20 %
   * of it), and one promise returned by every entity still ~9 % more than returning it once.
   */
  #group(
    dataSource: DataSource,
    queryRunner: QueryRunner | undefined,
    batch: LoadBatch,
    start: number,
    broadcast: LoadBroadcast,
  ): Promise<void> | undefined {
    const last = batch.groups[batch.groups.length - 1];
    if (last !== undefined && !broadcast.began) return undefined;
    broadcast.began = false;
    return this.#newGroup(dataSource, queryRunner, batch, start);
  }

  /**
   * A new group of `batch` from item `start` on, and its promise. Apart from `#group`, which
   * runs for every loaded entity: a function holding a closure allocates the variables the
   * closure captures on every call, before its first line, and this one runs once per broadcast.
   */
  #newGroup(
    dataSource: DataSource,
    queryRunner: QueryRunner | undefined,
    batch: LoadBatch,
    start: number,
  ): Promise<void> {
    const index = batch.groups.push({ start }) - 1;
    const done = batch.done.then(undefined, async (error: unknown) => {
      if (batch.groups.length === 1) throw error;
      const end = batch.groups[index + 1]?.start ?? batch.items.length;
      const own = await this.run(dataSource, queryRunner, () =>
        this.engine.decryptMany(batch.items.slice(start, end)),
      );
      putValues(batch, own, start, end);
    });
    // Handled even if the broadcast never awaits it: a hook after this one (another subscriber's)
    // that throws ends TypeORM's loop before it collects the promises.
    done.catch(() => undefined);
    return done;
  }

  /**
   * Remembers the blind indexes of a partial load (index selected, indexed property not), so
   * that a save can tell the index as loaded, left out of the write, from one the caller set.
   */
  #recordLoadedIndexes(d: EntityDescriptor, entity: Row): void {
    let loaded: Map<string, unknown> | undefined;
    const columns = d.columns;
    // The columns, not `d.blindIndexes`: iterating a Map allocates an iterator and an entry per
    // loaded entity.
    for (let c = 0; c < columns.length; c++) {
      const f = columns[c] as EncryptedField;
      if (f.index === undefined) continue;
      const index = indexIn(f, entity);
      if (index === undefined || valueIn(f, entity) !== undefined) continue;
      loaded ??= new Map();
      loaded.set(f.index.path, index);
    }
    if (loaded !== undefined) this.#loadedIndexes.set(entity, loaded);
  }

  /** The open batch of `queryRunner`'s current load, flushed once the broadcast loop ends. */
  #loadBatch(dataSource: DataSource, queryRunner: QueryRunner | undefined): LoadBatch {
    return (
      this.#loadBatches.get(queryRunner ?? dataSource) ?? this.#openBatch(dataSource, queryRunner)
    );
  }

  /**
   * A new batch for `queryRunner`'s load. Apart from `#loadBatch`, which runs for every loaded
   * entity, for the reason given at `#newGroup`: the closures here would cost ~70 bytes an entity.
   */
  #openBatch(dataSource: DataSource, queryRunner: QueryRunner | undefined): LoadBatch {
    const owner: object = queryRunner ?? dataSource;
    const batch: LoadBatch = {
      items: [],
      groups: [],
      done: Promise.resolve(),
    };
    this.#loadBatches.set(owner, batch);
    // A microtask runs after the synchronous afterLoad loop that is filling the batch.
    batch.done = Promise.resolve()
      .then(() => {
        this.#loadBatches.delete(owner);
        // Every entity failed in its hook: nothing awaits the batch.
        if (batch.groups.length === 0) return [];
        return this.run(dataSource, queryRunner, () => this.engine.decryptMany(batch.items));
      })
      .then((values) => putValues(batch, values, 0, values.length));
    return batch;
  }
}

/** Puts `values` (the values of `batch`'s items `start` to `end`) on their rows. */
function putValues(
  batch: LoadBatch,
  values: readonly FieldValue[],
  start: number,
  end: number,
): void {
  const items = batch.items;
  for (let i = start; i < end; i++) {
    const { holder, spec } = items[i] as LoadItem;
    holder[spec.property] = values[i - start];
  }
}

/**
 * What a value of `f` sealed under `context` records, for the query guards to check against
 * what the statement writes (see query-guards.ts); undefined for a column bound to no row value.
 */
function sealedBinding(
  f: EncryptedField,
  context: EncryptionContext,
  stored: Row | undefined,
): SealedBinding | undefined {
  return f.sealing === undefined ? undefined : { column: f.sealing, context, stored };
}

/** Writes pending on one query runner beyond which those holding nothing sealed are forgotten. */
const MAX_PENDING_WRITES = 1024;

/**
 * The entities of one write: those whose before-write hooks TypeORM called in one synchronous
 * loop (one save, insert, upsert, update, soft remove or recover), what is still to restore on
 * them, and when it began and last sealed a value, on `#sequence` (see `#ownWrites`).
 */
interface PendingWrite {
  readonly entities: Set<object>;
  /** The entities holding a snapshot that restore() has not put back yet. */
  readonly remembered: Set<object>;
  readonly runner: QueryRunner | undefined;
  readonly began: number;
  sealed: number;
  /** Entities of the write whose sealing is in flight. */
  sealing: number;
}

/**
 * The parameters of a statement, as sealed values are compared with them: text as is, bytes
 * as base64 (the driver may have copied them into a Buffer).
 */
function sentValues(parameters: unknown): Set<string> {
  const out = new Set<string>();
  if (!Array.isArray(parameters)) return out;
  for (const p of parameters) {
    if (typeof p === "string" || p instanceof Uint8Array) out.add(sentForm(p));
  }
  return out;
}

function sentForm(value: string | Uint8Array): string {
  return typeof value === "string"
    ? value
    : `\u0000${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64")}`;
}

/** A loaded value to decrypt, and the object (the entity or an embedded one) it is put on. */
interface LoadItem extends DecryptItem {
  readonly spec: EncryptedColumnSpec;
  readonly holder: Row;
}

interface LoadBatch {
  readonly items: LoadItem[];
  /** The groups of entities sharing a promise, in the order of their items (see `#group`). */
  readonly groups: LoadGroup[];
  /** Settles once the values of `items` are on their rows, or the decryption failed. */
  done: Promise<void>;
}

/**
 * A subscriber's load broadcasts: `began` is set when TypeORM starts one (see
 * EncryptionSubscriber.listenTo) and cleared when an entity of it joins a LoadGroup.
 */
interface LoadBroadcast {
  began: boolean;
}

/** Entities of one broadcast in a LoadBatch: their items run from `start` to the next group's. */
interface LoadGroup {
  readonly start: number;
}

/** A value to seal: its column, the object holding it and its plaintext. */
interface Plaintext {
  readonly f: EncryptedField;
  readonly holder: Row;
  readonly value: unknown;
}

/**
 * The plaintext of each value `present` on the entity. A value found sealed was sealed in place
 * by an earlier write of the same object that has not put it back: a concurrent save, or one
 * that failed where nothing restored it. That ciphertext is bound to the context the object had
 * then, and this write's snapshot would put it back as if it were the caller's value: it is
 * sealed again from the plaintext kept by that write (`previous`).
 * @throws ValidationException when that plaintext is unknown.
 */
function plaintextsOf(
  d: EntityDescriptor,
  present: readonly FieldRead[],
  previous: Snapshot | undefined,
): Plaintext[] {
  const values: Plaintext[] = [];
  for (const { f, holder, value: read } of present) {
    let value = read;
    if (value instanceof Sealed) {
      value = previous?.get(f.path)?.value;
      if (value === undefined || value === COMPUTED_INDEX || value instanceof Sealed) {
        throw new ValidationError(
          `${d.model}.${f.path} holds a value sealed for another write of this object, whose plaintext is gone: assign the value again`,
        );
      }
    }
    values.push({ f, holder: holder as Row, value });
  }
  return values;
}

/**
 * The encrypted columns and blind indexes `entity` leaves undefined, to be put back to undefined
 * after a write: TypeORM sets every nullable property an UPDATE (or soft remove, or recover)
 * left undefined to null on the caller's object (typeorm#4910), creating an embedded object
 * that was absent, and a second save() of a partially selected entity would then write null
 * over the stored values.
 */
function unselected(reads: readonly FieldRead[]): Snapshot {
  const snapshot: Snapshot = new Map();
  for (const { f, value, index } of reads) {
    if (value !== undefined) continue;
    snapshot.set(f.path, { embedded: f.embedded, property: f.spec.property, value: undefined });
    if (f.index !== undefined && index === undefined) {
      snapshot.set(f.index.path, {
        embedded: f.embedded,
        property: f.index.property,
        value: undefined,
      });
    }
  }
  return snapshot;
}

/**
 * The binding of `f`'s value in a loaded row. A column without context has one binding for
 * every row; when the context is one row column and nothing from the ambient scope, equal
 * values share one frozen binding (and context) across rows and queries (`f.rowBindings`).
 */
function readBinding(d: EntityDescriptor, f: EncryptedField, row: Row): FieldBinding {
  if (f.binding !== undefined) return f.binding;
  const shared = f.rowBindings;
  const raw = shared === undefined ? undefined : row[shared.key];
  if (shared === undefined || (typeof raw !== "string" && typeof raw !== "number")) {
    return bindingFor(d.model, f.field, f.spec, loadedContext(d, f, row));
  }
  const value = typeof raw === "string" ? raw : String(raw);
  const binding = shared.get(value);
  if (binding !== undefined) return binding;
  const context = Object.freeze(contextFor(d.model, f, row));
  return shared.add(value, Object.freeze(bindingFor(d.model, f.field, f.spec, context)));
}

/**
 * `contextFor` for a loaded row, whose context columns a partial `select` may have left out:
 * the error then says what to select rather than what to write.
 * @throws ValidationException naming the context column.
 */
function loadedContext(d: EntityDescriptor, f: EncryptedField, row: Row): EncryptionContext {
  for (const keys of [f.spec.context.fromRow, f.spec.context.rowIdentity]) {
    for (const key of keys) {
      if (row[key] !== undefined) continue;
      throw new ValidationError(
        `${d.model}.${f.path} is bound to ${d.model}.${key}, which the loaded row lacks: a find that selects ${f.path} must select ${key} too`,
      );
    }
  }
  return contextFor(d.model, f, row);
}

const NO_OPTIONS: EncryptCallOptions = Object.freeze({});

/** Marks a blind index column in a snapshot: restore() unwraps it instead of putting a value back. */
const COMPUTED_INDEX: unique symbol = Symbol("computed blind index");

/**
 * A value that already is ciphertext was written through the base path: never seal it twice.
 * Text carries the prefix; bytes are checked by `hasFieldHeader`, then against the store.
 */
function refuseCiphertext(model: string, f: EncryptedField, value: unknown): void {
  // Any case or width of the prefix: sent as a legacy lookup form, it could collate equal to a
  // stored ciphertext (MySQL's case-insensitive collations) and return that row's plaintext.
  if (typeof value === "string" && mayCollateAsFieldCiphertextText(value)) {
    throw ciphertextError(model, f);
  }
}

function ciphertextError(model: string, f: EncryptedField): ValidationError {
  return new ValidationError(
    `${model}.${f.path} already holds ciphertext: refusing to encrypt it twice`,
  );
}

/**
 * Bytes laid out as a field ciphertext (FORMAT §6.1 item 1): format byte 0xC1 and at least
 * RANDOMIZED_OVERHEAD bytes, or 0xC2 and at least DETERMINISTIC_OVERHEAD.
 */
function hasFieldHeader(value: unknown): value is Uint8Array {
  if (!(value instanceof Uint8Array)) return false;
  const format = value[0];
  return (
    (format === 0xc1 && value.length >= RANDOMIZED_OVERHEAD) ||
    (format === 0xc2 && value.length >= DETERMINISTIC_OVERHEAD)
  );
}

/**
 * The TypeORM side: before insert/update it encrypts in place (and computes blind indexes),
 * after them it puts the plaintext back on the caller's object; after load it decrypts. All
 * hooks are awaited by TypeORM 1.x. beforeQuery refuses plaintext that reached an encrypted
 * column some other way.
 */
class EncryptionSubscriber implements EntitySubscriberInterface {
  readonly owner: TypeormFieldEncryption;
  readonly #loads: LoadBroadcast = { began: true };

  constructor(owner: TypeormFieldEncryption) {
    this.owner = owner;
  }

  /**
   * Every entity (`Object`). TypeORM asks before each broadcast of an entity event, and so
   * before the synchronous loop of a load's afterLoad calls: the entities loaded after it are
   * another broadcast's, and may be another find's (see `openEntity`). A question asked for
   * another event only starts a new group early.
   */
  listenTo(): typeof Object {
    this.#loads.began = true;
    return Object;
  }

  beforeQuery(event: BeforeQueryEvent): void {
    this.owner.noteQuery(event.connection, event.queryRunner, event.query);
    const parameters: unknown = event.parameters;
    if (!Array.isArray(parameters)) return;
    for (const p of parameters) {
      if (isUnsealedValue(p)) throw unsealedError(p);
      if (Array.isArray(p)) for (const q of p) if (isUnsealedValue(q)) throw unsealedError(q);
    }
  }

  beforeInsert(event: InsertEvent<Row>): Promise<void> | undefined {
    const d = describeEvent(event.metadata);
    if (d === undefined || event.entity === undefined) return undefined;
    return this.owner.sealEntity(
      event.connection,
      event.queryRunner,
      d,
      event.entity,
      undefined,
      "insert",
    );
  }

  afterInsert(event: InsertEvent<Row>): void {
    if (event.entity !== undefined) this.owner.restore(event.entity);
  }

  beforeUpdate(event: UpdateEvent<Row>): Promise<void> | undefined {
    const entity = event.entity as Row | undefined;
    if (entity === undefined) return undefined;
    const fallback = event.databaseEntity as Row | undefined;
    // The row stays the entity it was inserted as, whichever repository updates it.
    const d = describeEvent(
      fallback === undefined ? event.metadata : rowMetadata(event.metadata, fallback),
    );
    if (d === undefined) return undefined;
    if (fallback === undefined && hasChildEntities(event.metadata)) {
      const written = d.columns.find((f) => valueIn(f, entity) !== undefined);
      if (written !== undefined) return Promise.reject(inheritedUpdateError(d, written.path));
    }
    return this.owner.sealEntity(
      event.connection,
      event.queryRunner,
      d,
      entity,
      fallback,
      "update",
    );
  }

  afterUpdate(event: UpdateEvent<Row>): void {
    if (event.entity !== undefined) this.owner.restore(event.entity as Row);
  }

  beforeSoftRemove(event: SoftRemoveEvent<Row>): void {
    this.#keepUnselected(event);
  }

  afterSoftRemove(event: SoftRemoveEvent<Row>): void {
    if (event.entity !== undefined) this.owner.restore(event.entity);
  }

  beforeRecover(event: RecoverEvent<Row>): void {
    this.#keepUnselected(event);
  }

  afterRecover(event: RecoverEvent<Row>): void {
    if (event.entity !== undefined) this.owner.restore(event.entity);
  }

  /** A soft remove or recover of a loaded entity (`softDelete` by criteria has no entity). */
  #keepUnselected(event: SoftRemoveEvent<Row> | RecoverEvent<Row>): void {
    const entity = event.entity;
    if (entity === undefined || entity === null) return;
    const d = describeEvent(rowMetadata(event.metadata, entity));
    if (d !== undefined) this.owner.keepUnselected(event.connection, d, entity, event.queryRunner);
  }

  afterLoad(entity: Row, event?: LoadEvent<Row>): Promise<void> | undefined {
    if (event === undefined) return undefined;
    const d = describeEvent(rowMetadata(event.metadata, entity));
    if (d === undefined) return undefined;
    return this.owner.openEntity(event.connection, event.queryRunner, d, entity, this.#loads);
  }

  afterQuery(event: AfterQueryEvent): void {
    if (!event.success && !event.queryRunner.isTransactionActive) {
      this.owner.restorePending(event.connection, event.queryRunner, "failed", event.parameters);
    }
  }

  afterTransactionStart(event: { connection: DataSource; queryRunner: QueryRunner }): void {
    this.owner.startTransaction(event.connection, event.queryRunner);
  }

  afterTransactionCommit(event: TransactionCommitEvent): void {
    // An entity still pending here had no afterUpdate: its save wrote nothing once the blind
    // indexes kept as stored were left out, and they are still off the caller's object.
    if (!event.queryRunner.isTransactionActive) {
      this.owner.restorePending(event.connection, event.queryRunner, "commit");
    }
    this.owner.endTransaction(event.queryRunner, "commit");
  }

  afterTransactionRollback(event: TransactionRollbackEvent): void {
    this.owner.restorePending(event.connection, event.queryRunner, "rollback");
    this.owner.endTransaction(event.queryRunner, "rollback");
  }
}

/** @throws ValidationException when `dataSource` has no entity metadata yet. */
function requireInitialized(dataSource: DataSource, call: string): void {
  if (!dataSource.isInitialized) {
    throw new ValidationError(
      `the DataSource is not initialized: call ${call} after dataSource.initialize(), which builds the entity metadata it reads and replaces the subscriber list`,
    );
  }
}

function describeEvent(metadata: EntityMetadata | undefined): EntityDescriptor | undefined {
  return metadata === undefined ? undefined : describe(metadata);
}

/**
 * The entity a loaded `row` is, where it shares a table with its parent (single-table
 * inheritance). Its values are bound to that entity's name, as they were sealed when it was
 * inserted; a row read or updated through the parent's metadata (`parentRepository.find()`, a
 * relation to the parent, `save()` of a plain object) would otherwise be opened or sealed under
 * the parent's name, and a child's own encrypted columns would be left as ciphertext.
 */
function rowMetadata(
  metadata: EntityMetadata | undefined,
  row: object,
): EntityMetadata | undefined {
  return hasChildEntities(metadata) ? metadata.findInheritanceMetadata(row) : metadata;
}

/**
 * An UPDATE through an entity with child entities, without a loaded row: its rows may be any of
 * them, and a value sealed under the wrong entity's name would never decrypt again.
 */
function inheritedUpdateError(d: EntityDescriptor, property: string): ValidationError {
  return new ValidationError(
    `${d.model}.${property} is encrypted and ${d.model} has child entities (single-table inheritance): an update through ${d.model} cannot tell which entity each row is, and values are bound to it; update through the child entity's repository, or load the entity and save() it`,
  );
}

/**
 * The encryption a DataSource's subscriber belongs to.
 * @throws ValidationException when the DataSource has no `fieldEncryption` subscriber.
 */
export function encryptionOf(dataSource: DataSource, required?: true): TypeormFieldEncryption;
export function encryptionOf(
  dataSource: DataSource,
  required: false,
): TypeormFieldEncryption | undefined;
export function encryptionOf(
  dataSource: DataSource,
  required = true,
): TypeormFieldEncryption | undefined {
  for (const s of dataSource.subscribers) {
    if (s instanceof EncryptionSubscriber) return s.owner;
  }
  if (required) {
    throw new ValidationError(
      `the DataSource has no field encryption subscriber: list fieldEncryption(...).subscriber in its subscribers`,
    );
  }
  return undefined;
}

/**
 * Encrypted columns for TypeORM: `const encryption = fieldEncryption({ kms, keyId })`, then
 * `new DataSource({ entities: [...yours, ...encryption.entities], subscribers:
 * [encryption.subscriber] })`.
 * @throws ValidationException when the options are malformed.
 */
export function fieldEncryption(options: FieldEncryptionOptions): TypeormFieldEncryption {
  return new TypeormFieldEncryption(options);
}
