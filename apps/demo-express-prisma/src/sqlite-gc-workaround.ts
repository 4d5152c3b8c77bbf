import Database from "better-sqlite3";

/**
 * better-sqlite3 12.11.1 built against Node 24.21's `node::ObjectWrap` aborts the process when
 * V8 finalizes a Statement from a GC task outside any context (`RemoveEnvironmentCleanupHook:
 * env != nullptr`). Prisma's adapter prepares a statement per query, so a busy process hits it.
 * Until better-sqlite3 ships a fix, the demo keeps its statements reachable; a production
 * service on this exact stack should pin a Node or better-sqlite3 version without the problem.
 */
const retained: unknown[] = [];
let installed = false;

export function retainSqliteStatements(): void {
  if (installed) return;
  installed = true;
  const proto = Database.prototype as unknown as { prepare: (...args: unknown[]) => unknown };
  const prepare = proto.prepare;
  proto.prepare = function (this: unknown, ...args: unknown[]) {
    const statement = prepare.apply(this, args);
    retained.push(statement);
    return statement;
  };
}

export function retainHandle(handle: unknown): void {
  retained.push(handle);
}
