export { PostgresAuditSink, type PostgresAuditSinkOptions } from "./postgres-audit-sink.ts";
export { PostgresKeyStore, type PostgresKeyStoreOptions } from "./postgres-key-store.ts";
