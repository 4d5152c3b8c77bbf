import { retainSqliteStatements } from "@kms/keystore-sqlite";

// The CLI opens its key store with better-sqlite3 in the test worker; on Node >= 24.19 a
// statement the GC finalizes can abort the worker, so every prepared statement stays reachable.
retainSqliteStatements();
