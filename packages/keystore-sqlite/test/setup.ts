import { retainSqliteStatements } from "../src/index.ts";

// Tests open databases and prepare statements with better-sqlite3 directly (to read or tamper
// with what the store wrote). On Node >= 24.19 a statement the GC finalizes can abort the
// worker, so every statement any test prepares stays reachable (see better-sqlite3-gc.ts).
retainSqliteStatements();
