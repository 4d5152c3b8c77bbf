import {
  assertDataKeyId,
  type DataKeyRecord,
  type DataKeyStore,
  type EncryptionContext,
  KmsInternalError,
  ValidationError,
} from "@kms/core";
import { type DataSource, type EntityManager, EntitySchema } from "typeorm";
import { type DataKeyConnections, managerScope } from "./internal/manager-scope.ts";

/** A row of the data key table, as TypeORM sees it. */
export interface DataKeyRow {
  id: string;
  kmsKeyId: string;
  /** base64 of the KMS ciphertext blob: one portable column type on every driver. */
  wrappedKey: string;
  encryptionContext: string;
  purpose: string;
  createdAt: string | number;
}

/**
 * The entity of the data key table: add it to the DataSource's `entities` (it is in
 * `fieldEncryption(...).entities`). Columns: id (32 hex), kmsKeyId, wrappedKey (base64),
 * encryptionContext (JSON), purpose, createdAt (ms since epoch).
 */
export function dataKeyEntity(tableName = "kms_data_keys"): EntitySchema<DataKeyRow> {
  return new EntitySchema<DataKeyRow>({
    name: "KmsDataKey",
    tableName,
    columns: {
      id: { type: String, length: 32, primary: true },
      kmsKeyId: { type: "text" },
      wrappedKey: { type: "text" },
      encryptionContext: { type: "text" },
      purpose: { type: String, length: 16 },
      createdAt: { type: "bigint" },
    },
  });
}

/**
 * Checks that `dataSource` maps `entity` to its table: TypeORM finds an entity schema by its
 * name ("KmsDataKey"), so another encryption's data key entity, on another table, would answer
 * for it.
 * @throws ValidationException when the DataSource has no such entity, or maps it elsewhere.
 */
export function checkDataKeyEntity(dataSource: DataSource, entity: EntitySchema<DataKeyRow>): void {
  const table = entity.options.tableName as string;
  const metadata = dataSource.hasMetadata(entity) ? dataSource.getMetadata(entity) : undefined;
  if (metadata === undefined) {
    throw new ValidationError(
      `the DataSource has no entity for the data key table "${table}": list fieldEncryption(...).entities in its entities (or give fieldEncryption a dataKeyStore)`,
    );
  }
  if (metadata.givenTableName !== table) {
    throw new ValidationError(
      `the DataSource's ${metadata.name} entity is the table "${String(metadata.givenTableName)}", not this encryption's data key table "${table}": list this fieldEncryption(...)'s entities instead`,
    );
  }
}

/**
 * A DataKeyStore in a table of the application's own database, so that the database and the
 * KMS are all a fresh process needs to read every encrypted value back. It writes through the
 * connection that keeps a key row's fate apart from the caller's transaction (on pooled drivers
 * a connection of its own, beside the pool), and reads through the caller's own connection where
 * it has one (see the README on transactions).
 */
export class TypeormDataKeyStore implements DataKeyStore {
  readonly #entity: EntitySchema<DataKeyRow>;

  constructor(entity: EntitySchema<DataKeyRow>) {
    this.#entity = entity;
  }

  /** @throws ValidationException when the DataSource lacks the data key entity. */
  #connections(): DataKeyConnections {
    const connections = managerScope.getStore();
    if (connections === undefined) {
      throw new KmsInternalError("the TypeORM data key store was used outside an operation");
    }
    // A DataSource that `install()` or `check()` never saw: say what is missing rather than
    // fail inside TypeORM.
    checkDataKeyEntity(connections.write.dataSource, this.#entity);
    return connections;
  }

  async insert(record: DataKeyRecord): Promise<DataKeyRecord> {
    assertDataKeyId(record.id);
    const { write, beforeWrite } = this.#connections();
    beforeWrite?.();
    const stored = await write.run(async (manager) => {
      try {
        // Insert-if-absent without an error, so that a PostgreSQL transaction is not aborted.
        await manager
          .createQueryBuilder()
          .insert()
          .into(this.#entity)
          .values({
            id: record.id,
            kmsKeyId: record.kmsKeyId,
            wrappedKey: Buffer.from(record.wrappedKey).toString("base64"),
            encryptionContext: JSON.stringify(record.encryptionContext),
            purpose: record.purpose,
            createdAt: String(record.createdAt),
          })
          .orIgnore()
          .callListeners(false)
          .updateEntity(false)
          .execute();
      } catch (cause) {
        throw new KmsInternalError("could not store a data key", { cause });
      }
      return this.#read(manager, record.id);
    });
    if (stored === undefined) throw new KmsInternalError("could not store a data key");
    return stored;
  }

  async get(id: string): Promise<DataKeyRecord | undefined> {
    const { read, write, readLocks } = this.#connections();
    const committed = () => write.run((manager) => this.#read(manager, id));
    if (read === undefined) return committed();
    // Under SERIALIZABLE, MariaDB and MySQL make the caller's read a locking one: a key not found
    // there (a stable key about to be made) leaves a gap lock on the table until the caller's
    // transaction ends, and the key's insert would wait for it while the caller waits for the
    // insert. The data key connection reads without locks.
    if (readLocks !== undefined && (await readLocks().catch(() => false))) return committed();
    // The caller's transaction may have begun before the row was committed (REPEATABLE READ
    // snapshots, MariaDB's default), or be unable to run a statement: the data key connection
    // reads the committed row then. A row seen there is committed: writes never go through the
    // caller.
    const row = await this.#read(read, id).catch(() => undefined);
    return row ?? committed();
  }

  async #read(manager: EntityManager, id: string): Promise<DataKeyRecord | undefined> {
    const row = await manager
      .createQueryBuilder()
      .select("k.id", "id")
      .addSelect("k.kmsKeyId", "kmsKeyId")
      .addSelect("k.wrappedKey", "wrappedKey")
      .addSelect("k.encryptionContext", "encryptionContext")
      .addSelect("k.purpose", "purpose")
      .addSelect("k.createdAt", "createdAt")
      .from(this.#entity, "k")
      .where("k.id = :id", { id })
      .getRawOne<DataKeyRow>();
    if (row === undefined || row === null) return undefined;
    const wrapped = Buffer.from(row.wrappedKey, "base64");
    return Object.freeze({
      id: row.id,
      kmsKeyId: row.kmsKeyId,
      wrappedKey: new Uint8Array(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength),
      encryptionContext: Object.freeze(JSON.parse(row.encryptionContext) as EncryptionContext),
      purpose: row.purpose === "stable" ? "stable" : "randomized",
      createdAt: Number(row.createdAt),
    });
  }
}
