export { retainSqliteHandle, retainSqliteStatements } from "./better-sqlite3-gc.ts";
export { SqliteAuditSink, type SqliteAuditSinkOptions } from "./sqlite-audit-sink.ts";
export {
  SqliteKeyStore,
  type SqliteKeyStoreOptions,
  type SqliteSynchronous,
} from "./sqlite-key-store.ts";
