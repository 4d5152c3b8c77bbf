import { AsyncLocalStorage } from "node:async_hooks";
import type { EntityManager } from "typeorm";

/**
 * The entity manager data key rows are read and written through during one engine call. On
 * SQLite it is the caller's (there is one connection, so a data key created inside a
 * transaction belongs to it); on pooled drivers it is the DataSource's own manager, so data
 * keys commit independently of the application's transaction.
 */
export const managerScope: AsyncLocalStorage<EntityManager> =
  new AsyncLocalStorage<EntityManager>();
