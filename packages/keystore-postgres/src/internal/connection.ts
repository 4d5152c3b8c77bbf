import type pg from "pg";

/** Schema names the store and the audit sink accept: unquoted-identifier safe, ≤ 59 chars. */
export const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,58}$/;

/** host:port/database of a pool, for messages; never the password. */
export function hostOf(options: pg.PoolOptions): string {
  if (options.connectionString !== undefined) {
    try {
      const url = new URL(options.connectionString);
      return `${url.host}${url.pathname}`;
    } catch {
      return "(connection string)";
    }
  }
  return `${options.host ?? "localhost"}:${options.port ?? 5432}/${options.database ?? ""}`;
}

/** The SQLSTATE of a driver error (e.g. 40001), or the error's name, for messages. */
export function pgCode(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" ? `${error.name} ${code}` : error.name;
  }
  return "unknown error";
}
