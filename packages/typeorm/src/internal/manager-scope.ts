import { AsyncLocalStorage } from "node:async_hooks";
import type { EntityManager } from "typeorm";
import type { DataKeyWriter } from "./data-key-connection.ts";

/** The connections data key rows go through during one engine call. */
export interface DataKeyConnections {
  /**
   * Reads data key rows first: the caller's own connection on pooled drivers, where it has one.
   * A caller holding a pooled connection (a transaction, a find still loading) that waited for
   * another one to read a key would wait forever once every connection of the pool is held that
   * way. Undefined when every read goes through `write`.
   */
  readonly read: EntityManager | undefined;
  /**
   * Writes data key rows and reads back what it wrote: on pooled drivers a connection apart from
   * the DataSource's pool (see data-key-connection.ts), so that a key commits at once, whatever
   * becomes of the caller's transaction, and never waits for a pooled connection; on SQLite the
   * one connection (see TypeormFieldEncryption.run).
   */
  readonly write: DataKeyWriter;
  /** Called before a data key row is written; throws when it must not be written now. */
  readonly beforeWrite: (() => void) | undefined;
  /**
   * Whether a read through `read` takes locks (a SERIALIZABLE transaction on MySQL or MariaDB);
   * undefined when it never does.
   */
  readonly readLocks: (() => Promise<boolean>) | undefined;
}

export const managerScope: AsyncLocalStorage<DataKeyConnections> =
  new AsyncLocalStorage<DataKeyConnections>();
