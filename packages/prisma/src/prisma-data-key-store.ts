import { AsyncLocalStorage } from "node:async_hooks";
import {
  assertDataKeyId,
  ConflictError,
  type DataKeyRecord,
  type DataKeyStore,
  type EncryptionContext,
  KmsInternalError,
} from "@kms/core";

/** The Prisma model delegate methods the data key table needs (the base, unextended client's). */
export interface DataKeyDelegate {
  create(args: { data: Record<string, unknown> }): Promise<unknown>;
  findUnique(args: { where: { id: string } }): Promise<Record<string, unknown> | null>;
}

/**
 * What the query hook of `fieldEncryption` running now tells the stores on its client: the
 * interactive transaction the query is in (Prisma's handle, its engine scope, and how to tell the
 * engine that the transaction's rows are gone), or, for a query outside any, the scopes of the
 * `$transaction` callbacks it runs inside of (a query on the client, not on `tx`).
 */
export type DataKeyCall =
  | {
      readonly transaction: object;
      readonly scope: string;
      readonly rolledBack: () => void;
    }
  | { readonly transaction: undefined; readonly enclosing: ReadonlySet<string> };

const calls = new AsyncLocalStorage<{
  readonly delegate: object | undefined;
  readonly call: DataKeyCall;
}>();

/**
 * Runs `fn` (the work of one query hook) so that a PrismaDataKeyStore on `delegate`, the data
 * key model's delegate of the hook's client (Prisma's transaction ids are known to that client
 * alone), reads and writes data keys inside the query's interactive transaction, on the
 * connection the transaction already holds. Not exported from the package.
 */
export function runDataKeyCall<T>(delegate: object | undefined, call: DataKeyCall, fn: () => T): T {
  return calls.run({ delegate, call }, fn);
}

/**
 * A stable data key row a transaction inserted: until the transaction ends, only that
 * transaction sees it. Stable key ids are the same for every writer of a context, and a key read
 * back inside the transaction is held by the engine under its id for everyone: when the row rolls
 * back and another writer's row takes the id before the engine is told (the writer's insert was
 * waiting for exactly that), the engine would hand the rolled-back key out for the new row.
 */
interface UnsettledRow {
  readonly wrappedKey: Uint8Array;
  readonly rolledBack: () => void;
}

/** Per data key delegate: data key id → transaction scope → the row that transaction inserted. */
const unsettled = new WeakMap<object, Map<string, Map<string, UnsettledRow>>>();

/**
 * The transaction behind `scope` ended, and the engine was told: the rows it inserted through
 * `delegate` are committed or gone, as the engine knows. Not exported from the package.
 */
export function transactionEnded(delegate: object | undefined, scope: string): void {
  const rows = delegate === undefined ? undefined : unsettled.get(delegate);
  if (rows === undefined) return;
  for (const [id, byScope] of rows) {
    if (byScope.delete(scope) && byScope.size === 0) rows.delete(id);
  }
}

/**
 * Runs a lazy Prisma query inside `transaction`, as `$transaction([…])` runs the queries it is
 * given (`requestTransaction`, no public API); outside any when `transaction` is undefined or
 * the query is not Prisma's.
 */
function within<T>(query: Promise<T>, transaction: object | undefined): Promise<T> {
  const request = (query as { requestTransaction?: unknown }).requestTransaction;
  if (transaction === undefined || typeof request !== "function") return query;
  return request.call(query, transaction) as Promise<T>;
}

/**
 * A Prisma delegate's `createMany`, used where the provider takes `skipDuplicates` (PostgreSQL,
 * MySQL, MariaDB, CockroachDB) to insert a row unless its id exists: a failed insert would end a
 * PostgreSQL transaction.
 */
type CreateMany = (args: {
  data: Record<string, unknown>[];
  skipDuplicates: boolean;
}) => Promise<{ count: number }>;

/**
 * A DataKeyStore in a table of the application's own database, so that the database and the
 * KMS are all a fresh process needs to read every encrypted value back. The model needs the
 * columns of `KmsDataKey` in the README: id String @id, kmsKeyId String, wrappedKey Bytes,
 * encryptionContext String, purpose String, createdAt BigInt.
 *
 * For a query in an interactive transaction of a client that `fieldEncryption` extends, a store
 * on that client's delegate reads and writes through the transaction's own connection: the
 * transaction never waits for a second pooled connection, and the rows of keys made inside it
 * commit or roll back with it (the engine keeps such keys to the transaction until it ends).
 * Elsewhere, and always on another client's delegate, it queries through the delegate as it is.
 */
export class PrismaDataKeyStore implements DataKeyStore {
  readonly #delegate: DataKeyDelegate;
  /** Whether the provider takes `skipDuplicates`; undefined until the first insert tells. */
  #skipsDuplicates: boolean | undefined;

  constructor(delegate: DataKeyDelegate) {
    this.#delegate = delegate;
    this.#skipsDuplicates = this.#createMany() === undefined ? false : undefined;
  }

  /** The running hook's call, when the hook is one of this delegate's client. */
  #call(): DataKeyCall | undefined {
    const ambient = calls.getStore();
    return ambient?.delegate === this.#delegate ? ambient.call : undefined;
  }

  /**
   * @throws ConflictException when a query outside a transaction, run inside that transaction's
   *   callback, would insert a stable key row the transaction holds uncommitted.
   */
  async insert(record: DataKeyRecord): Promise<DataKeyRecord> {
    assertDataKeyId(record.id);
    const call = this.#call();
    const transaction = call?.transaction;
    if (call !== undefined && call.transaction === undefined) {
      for (const scope of unsettled.get(this.#delegate)?.get(record.id)?.keys() ?? []) {
        // The insert would wait for the transaction's row, and the transaction for the caller.
        if (call.enclosing.has(scope)) {
          throw new ConflictError(
            "a data key cannot be stored now: a query on the client, run inside a $transaction callback, needs the stable data key that transaction made and has not committed; run it through the transaction client (tx), or after the transaction",
          );
        }
      }
    }
    const data = {
      id: record.id,
      kmsKeyId: record.kmsKeyId,
      wrappedKey: record.wrappedKey,
      encryptionContext: JSON.stringify(record.encryptionContext),
      purpose: record.purpose,
      createdAt: BigInt(record.createdAt),
    };
    let failure: { cause: unknown } | undefined;
    try {
      if (await this.#create(data, transaction)) {
        if (record.purpose === "stable") inserted(this.#delegate, call, record);
        return record;
      }
    } catch (cause) {
      failure = { cause };
    }
    // Another writer's row holds the id (a stable key's id is the same for every writer of its
    // context): theirs wins. Inside a transaction it is read there first, which waited for that
    // row's commit; a snapshot taken before the commit (REPEATABLE READ) does not see it, and
    // only then is it read outside. After a failed statement nothing else runs outside: it may
    // have ended the transaction, whose queries would fail anyway.
    let existing: DataKeyRecord | undefined;
    if (transaction !== undefined) {
      existing = await this.#read(record.id, transaction).catch(() => undefined);
    }
    if (existing === undefined && (transaction === undefined || failure === undefined)) {
      existing = await this.#read(record.id, undefined).catch(() => undefined);
    }
    if (existing !== undefined) return existing;
    throw new KmsInternalError("could not store a data key", failure);
  }

  #createMany(): CreateMany | undefined {
    const createMany = (this.#delegate as { createMany?: unknown }).createMany;
    return typeof createMany === "function" ? (createMany as CreateMany) : undefined;
  }

  /** Whether the row was inserted: false when one with its id exists. */
  async #create(data: Record<string, unknown>, transaction: object | undefined): Promise<boolean> {
    const createMany = this.#createMany();
    if (this.#skipsDuplicates !== false && createMany !== undefined) {
      try {
        const { count } = await within(
          createMany.call(this.#delegate, { data: [data], skipDuplicates: true }),
          transaction,
        );
        this.#skipsDuplicates = true;
        return count > 0;
      } catch (error) {
        // SQLite and SQL Server lack `skipDuplicates`: Prisma refuses the argument before the
        // query reaches the database, and a failed statement there leaves the transaction open.
        if (this.#skipsDuplicates === true || !isValidationError(error)) throw error;
        this.#skipsDuplicates = false;
      }
    }
    await within(this.#delegate.create({ data }), transaction);
    return true;
  }

  async get(id: string): Promise<DataKeyRecord | undefined> {
    const transaction = this.#call()?.transaction;
    if (transaction !== undefined) {
      // A value the transaction reads has its key's row in the transaction's view (a value and
      // its key's row commit together, or the key's first): a miss needs no second connection.
      try {
        return await this.#read(id, transaction);
      } catch {
        // The transaction ended (timed out) or failed: the committed row, outside it.
      }
    }
    return this.#read(id, undefined);
  }

  async #read(id: string, transaction: object | undefined): Promise<DataKeyRecord | undefined> {
    const row = await within(this.#delegate.findUnique({ where: { id } }), transaction);
    if (row === null) return undefined;
    const wrapped = row.wrappedKey as Uint8Array;
    const record: DataKeyRecord = Object.freeze({
      id: row.id as string,
      kmsKeyId: row.kmsKeyId as string,
      wrappedKey: new Uint8Array(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength),
      encryptionContext: JSON.parse(row.encryptionContext as string) as EncryptionContext,
      purpose: row.purpose === "stable" ? "stable" : "randomized",
      createdAt: Number(row.createdAt),
    });
    found(this.#delegate, this.#call(), record);
    return record;
  }
}

/**
 * `record` was inserted (by `call`, when a query hook made it): inside a transaction, it stays
 * unsettled until that ends; anywhere, a row other transactions inserted under its id is gone.
 */
function inserted(delegate: object, call: DataKeyCall | undefined, record: DataKeyRecord): void {
  const own = call?.transaction === undefined ? undefined : call.scope;
  lost(delegate, record, own, () => true);
  if (call?.transaction === undefined) return;
  let byId = unsettled.get(delegate);
  if (byId === undefined) {
    byId = new Map();
    unsettled.set(delegate, byId);
  }
  let byScope = byId.get(record.id);
  if (byScope === undefined) {
    byScope = new Map();
    byId.set(record.id, byScope);
  }
  byScope.set(call.scope, { wrappedKey: record.wrappedKey, rolledBack: call.rolledBack });
}

/**
 * `record` was read (by `call`, when a query hook read it): a transaction whose unsettled row
 * under the id held another key lost that row (rolled back, maybe to a savepoint), whether or
 * not it has told the engine yet.
 */
function found(delegate: object, call: DataKeyCall | undefined, record: DataKeyRecord): void {
  const own = call?.transaction === undefined ? undefined : call.scope;
  // Wrapped keys are ciphertext: no constant-time compare is needed.
  lost(delegate, record, own, (row) => Buffer.compare(row.wrappedKey, record.wrappedKey) !== 0);
}

/** Tells the transactions (but `own`) whose unsettled row under `record.id` is `gone` so. */
function lost(
  delegate: object,
  record: DataKeyRecord,
  own: string | undefined,
  gone: (row: UnsettledRow) => boolean,
): void {
  const byId = unsettled.get(delegate);
  const rows = byId?.get(record.id);
  if (byId === undefined || rows === undefined) return;
  for (const [scope, row] of [...rows]) {
    if (scope === own || !gone(row)) continue;
    rows.delete(scope);
    row.rolledBack();
  }
  if (rows.size === 0) byId.delete(record.id);
}

/** Prisma's PrismaClientValidationError, by name: one copy of the runtime or another. */
function isValidationError(error: unknown): boolean {
  return error instanceof Error && error.name === "PrismaClientValidationError";
}
