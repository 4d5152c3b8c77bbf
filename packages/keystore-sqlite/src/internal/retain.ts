/**
 * Keeps better-sqlite3's native wrappers (Database, Statement) reachable for the life of the
 * process.
 *
 * better-sqlite3 12 wraps them in node::ObjectWrap. Since Node 24.19 the ObjectWrap destructor
 * calls RemoveEnvironmentCleanupHook, which aborts the process (`Assertion failed: (env) !=
 * nullptr`) when the garbage collector destroys a wrapper while no JavaScript context is
 * entered, e.g. in an idle-time GC. A KMS that kill -9s itself at random is worse than a leak,
 * so nothing this package creates is ever left for the collector: Node's own environment
 * cleanup hooks free the wrappers at exit, which is safe. The cost is a few hundred bytes per
 * statement per store ever opened (a closed database finalizes its statements' SQLite side).
 * better-sqlite3 13 fixes this upstream; drop this module when the workspace moves to it.
 */
import type Database from "better-sqlite3";

const retained: object[] = [];

export function retain<T extends object>(value: T): T {
  retained.push(value);
  return value;
}

/** `db.prepare`, retained. Never use `db.pragma()`: it prepares a statement per call. */
export function prepare<P extends unknown[] = unknown[], R = unknown>(
  db: Database.Database,
  sql: string,
): Database.Statement<P, R> {
  return retain(db.prepare<P, R>(sql));
}
