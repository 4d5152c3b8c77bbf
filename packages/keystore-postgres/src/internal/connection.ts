import { isKmsError, KmsInternalError, ValidationError } from "@kms/core";
import pg from "pg";

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

/**
 * The schema option, defaulting to "kms".
 * @throws ValidationError when it is not a safe unquoted identifier.
 */
export function schemaOption(schema: unknown): string {
  const name = schema ?? "kms";
  if (typeof name !== "string" || !SCHEMA_NAME.test(name)) {
    throw new ValidationError(
      `"schema" expected 1–59 lower-case letters, digits or _ (not starting with a digit), got ${String(name)}`,
    );
  }
  return name;
}

/**
 * The pool from exactly one of `pool` (the caller's; the caller ends it) or `connectionString`
 * (a pool created here, which the opener owns and ends on close).
 * @throws ValidationError when neither or both are given.
 */
export function poolOption(options: {
  readonly pool?: pg.Pool | undefined;
  readonly connectionString?: string | undefined;
}): { pool: pg.Pool; ownsPool: boolean } {
  const hasPool = options.pool !== undefined;
  const hasUrl = options.connectionString !== undefined;
  if (hasPool === hasUrl) {
    throw new ValidationError('expected exactly one of "pool" and "connectionString"');
  }
  if (hasPool) return { pool: options.pool!, ownsPool: false };
  if (typeof options.connectionString !== "string" || !options.connectionString) {
    throw new ValidationError('"connectionString" expected a non-empty string');
  }
  const pool = new pg.Pool({ connectionString: options.connectionString });
  // An idle pooled connection that the server drops emits 'error' on the pool; unhandled, it
  // would crash the process. The pool discards that connection by itself.
  pool.on("error", () => {});
  return { pool, ownsPool: true };
}

/** A KmsError passes through; anything else becomes KMSInternalException naming the SQLSTATE. */
export function storeFailure(description: string, operation: string, error: unknown): Error {
  if (isKmsError(error)) return error;
  return new KmsInternalError(`${description}: ${operation} failed (${pgCode(error)})`, {
    cause: error,
  });
}
