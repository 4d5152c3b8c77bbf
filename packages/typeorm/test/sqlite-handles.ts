import Database from "better-sqlite3";

/**
 * better-sqlite3 12 on Node ≥ 24.19 can abort the process (`RemoveEnvironmentCleanupHook: env
 * != nullptr`) when the GC finalizes a Statement outside a JavaScript context; TypeORM's
 * statement cache drops statements for the GC to collect. Test and benchmark processes keep
 * every statement reachable until exit (see packages/keystore-sqlite/src/internal/retain.ts).
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
  // better-sqlite3's own pragma() prepares a statement the caller never sees (TypeORM calls
  // it on connect and during schema sync): route it through the retaining prepare.
  proto.pragma = function (this: typeof proto, source: string, options?: { simple?: boolean }) {
    const statement = this.prepare(`PRAGMA ${source}`);
    if (!statement.reader) {
      statement.run();
      return options?.simple === true ? undefined : [];
    }
    return options?.simple === true ? statement.pluck().get() : statement.all();
  };
}

export function retain(handle: unknown): void {
  retained.push(handle);
}
