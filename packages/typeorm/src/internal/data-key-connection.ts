import { ValidationError } from "@kms/core";
import { DataSource, type DataSourceOptions, type EntityManager } from "typeorm";

/** Runs data key statements on the connection that commits them apart from the caller's. */
export interface DataKeyWriter {
  /** The application's DataSource: its metadata builds the statements. */
  readonly dataSource: DataSource;
  /** Runs `fn` with a manager of `dataSource` whose statements go through that connection. */
  run<T>(fn: (manager: EntityManager) => Promise<T>): Promise<T>;
}

/**
 * The data key connection of a pooled DataSource (PostgreSQL, MariaDB/MySQL…): one connection
 * of a one-connection DataSource of its own, made on the DataSource's options at the first data
 * key read or written there, so that a data key row never waits for a connection of the
 * application's pool. Every `save()` holds a pooled connection for its transaction: with the key
 * rows written through the same pool, as many saves as connections, each making a data key,
 * waited for one another forever. A connection taken from the application's pool instead would
 * have to be taken before the pool runs out, which no hook allows (the first burst of saves of a
 * fresh process takes every connection before its first data key), and held, it would keep one
 * of them from the application.
 */
class DataKeyConnection implements DataKeyWriter {
  readonly dataSource: DataSource;
  /** The one-connection DataSource, once opened (undefined again when its opening failed). */
  #keys: Promise<DataSource> | undefined;
  /** The end of the queue: statements run one call at a time, on the one connection. */
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(dataSource: DataSource) {
    this.dataSource = dataSource;
  }

  run<T>(fn: (manager: EntityManager) => Promise<T>): Promise<T> {
    const result = this.#tail.then(() => this.#attempts(fn));
    this.#tail = result.catch(() => undefined);
    return result;
  }

  async #attempts<T>(fn: (manager: EntityManager) => Promise<T>): Promise<T> {
    try {
      return await this.#once(fn);
    } catch (error) {
      if (this.#closed) throw error;
      // A connection the server or the network ended while it was idle fails its next statement,
      // and may go back to the pool before the driver has seen it end: the connection is made
      // anew, and the statements (an insert-if-absent and reads) run once more on it.
      await this.#reset();
      return this.#once(fn);
    }
  }

  async #reset(): Promise<void> {
    const keys = await this.#keys?.catch(() => undefined);
    this.#keys = undefined;
    await keys?.destroy().catch(() => undefined);
  }

  async #once<T>(fn: (manager: EntityManager) => Promise<T>): Promise<T> {
    if (this.#closed || !this.dataSource.isInitialized) {
      throw new ValidationError(
        `the DataSource is not initialized: data keys cannot be read or stored through it`,
      );
    }
    const keys = await this.#open();
    const runner = keys.createQueryRunner("master");
    try {
      return await fn(this.dataSource.createEntityManager(runner));
    } finally {
      await runner.release();
    }
  }

  #open(): Promise<DataSource> {
    this.#keys ??= new DataSource(connectionOptions(this.dataSource.options))
      .initialize()
      .catch((error: unknown) => {
        // Tried again at the next data key: the database may be back by then.
        this.#keys = undefined;
        throw error;
      });
    return this.#keys;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#reset();
  }
}

/**
 * The application's options, for a connection: no entities (statements are built with the
 * application's metadata), no subscribers, nothing run at startup, one connection; with
 * replication, the master's.
 */
function connectionOptions(options: DataSourceOptions): DataSourceOptions {
  const { replication, ...own } = options as DataSourceOptions & {
    readonly replication?: { readonly master?: object };
  };
  return {
    ...own,
    ...replication?.master,
    entities: [],
    subscribers: [],
    migrations: [],
    migrationsRun: false,
    synchronize: false,
    dropSchema: false,
    cache: false,
    poolSize: 1,
  } as DataSourceOptions;
}

const connections = new WeakMap<DataSource, DataKeyConnection>();
const closing = new WeakSet<DataSource>();

/**
 * The data key connection of `dataSource`, made on first use. It is closed when `dataSource` is
 * destroyed (TypeORM has no event for that: its `destroy` is wrapped), and made anew if it is
 * initialized again.
 */
export function dataKeyConnection(dataSource: DataSource): DataKeyWriter {
  let connection = connections.get(dataSource);
  if (connection === undefined) {
    connection = new DataKeyConnection(dataSource);
    connections.set(dataSource, connection);
    closeWithDataSource(dataSource);
  }
  return connection;
}

function closeWithDataSource(dataSource: DataSource): void {
  if (closing.has(dataSource)) return;
  closing.add(dataSource);
  const destroy = dataSource.destroy;
  dataSource.destroy = async function (this: DataSource): Promise<void> {
    try {
      await destroy.call(this);
    } finally {
      const connection = connections.get(dataSource);
      connections.delete(dataSource);
      await connection?.close();
    }
  };
}
