import Database from "better-sqlite3";

/**
 * better-sqlite3 12 on Node ≥ 24.19 can abort the whole process (`RemoveEnvironmentCleanupHook:
 * env != nullptr`) when V8 finalizes a Statement or Database from a GC task that runs outside any
 * JavaScript context. This store never leaves a handle for the collector (internal/retain.ts),
 * but other better-sqlite3 users in the same process — Prisma's adapter prepares a statement per
 * query, TypeORM's statement cache drops statements, and `db.pragma()` prepares one per call —
 * leave plenty. A process that aborts at random is worse than a bounded leak, so this opt-in keeps
 * every statement any code prepares reachable until exit. Memory grows with the number of
 * prepared statements: pair it with statement caching (TypeORM's `statementCacheSize`). Remove it
 * when the stack moves to better-sqlite3 13, which fixes the finalizer.
 */
const retained: unknown[] = [];
let installed = false;

/** Patches better-sqlite3 process-wide so that every prepared statement stays reachable. */
export function retainSqliteStatements(): void {
  if (installed) return;
  installed = true;
  const proto = Database.prototype as unknown as {
    prepare: (sql: string) => Database.Statement;
    pragma: (source: string, options?: { simple?: boolean }) => unknown;
  };
  const prepare = proto.prepare;
  proto.prepare = function (this: unknown, sql: string) {
    const statement = prepare.call(this, sql);
    retained.push(statement);
    return statement;
  };
  // pragma() prepares a statement the caller never sees: route it through the retaining prepare.
  proto.pragma = function (this: typeof proto, source: string, options?: { simple?: boolean }) {
    const statement = this.prepare(`PRAGMA ${source}`);
    if (!statement.reader) {
      statement.run();
      return options?.simple === true ? undefined : [];
    }
    return options?.simple === true ? statement.pluck().get() : statement.all();
  };
}

/** Keeps one handle (a Database, an adapter, a DataSource) reachable until exit; returns it. */
export function retainSqliteHandle<T>(handle: T): T {
  retained.push(handle);
  return handle;
}
