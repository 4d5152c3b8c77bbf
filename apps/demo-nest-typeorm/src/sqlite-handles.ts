import Database from "better-sqlite3";

/**
 * better-sqlite3 12 on Node ≥ 24.19 can abort the process (`RemoveEnvironmentCleanupHook: env
 * != nullptr`) when the GC finalizes a Statement outside a JavaScript context, and TypeORM's
 * statement cache drops statements for the GC to collect; `db.pragma()` (TypeORM calls it on
 * connect and during schema sync) prepares one per call. A server that kill -9s itself at
 * random is worse than a bounded leak, so every statement stays reachable until exit: the
 * database layer raises TypeORM's statement cache so that prepares happen once per distinct SQL
 * text. Same approach as packages/typeorm/test/sqlite-handles.ts; better-sqlite3 13 fixes it.
 */
const retained: unknown[] = [];
let installed = false;

export function retainSqliteHandles(): void {
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
  proto.pragma = function (this: typeof proto, source: string, options?: { simple?: boolean }) {
    const statement = this.prepare(`PRAGMA ${source}`);
    if (!statement.reader) {
      statement.run();
      return options?.simple === true ? undefined : [];
    }
    return options?.simple === true ? statement.pluck().get() : statement.all();
  };
}

/** Keeps a native handle (a Database, a DataSource holding one) reachable until exit. */
export function retainHandle<T>(handle: T): T {
  retained.push(handle);
  return handle;
}
