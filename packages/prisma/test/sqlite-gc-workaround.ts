import Database from "better-sqlite3";

/**
 * Node 24.21's `node::ObjectWrap` registers an environment cleanup hook per wrapped object and
 * removes it in the destructor through `Isolate::GetCurrent()`. When V8 finalizes a
 * better-sqlite3 Statement or Database from a GC task that runs outside any context, the
 * environment lookup fails and the process aborts (`RemoveEnvironmentCleanupHook: env !=
 * nullptr`). Prisma's adapter prepares a statement per query, so Prisma-heavy runs hit it.
 * Keeping every handle reachable until the process exits sidesteps the finalizer entirely.
 * Test and benchmark processes only: memory grows with the number of queries.
 */
const retained: unknown[] = [];
let installed = false;

export function retainSqliteHandles(): void {
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

export function retain(handle: unknown): void {
  retained.push(handle);
}
