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
 * The options argument of `open`.
 * @throws ValidationError when it is not an object.
 */
export function optionsObject<T>(options: T): T {
  if (typeof options !== "object" || options === null) {
    throw new ValidationError('"options" expected { connectionString } or { pool }');
  }
  return options;
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
  if (hasPool) {
    const pool = options.pool as Partial<pg.Pool> | null;
    if (
      typeof pool !== "object" ||
      pool === null ||
      typeof pool.connect !== "function" ||
      typeof pool.options !== "object"
    ) {
      throw new ValidationError('"pool" expected a pg.Pool');
    }
    return { pool: pool as pg.Pool, ownsPool: false };
  }
  if (typeof options.connectionString !== "string" || !options.connectionString) {
    throw new ValidationError('"connectionString" expected a non-empty string');
  }
  const pool = new pg.Pool({ connectionString: options.connectionString });
  // An idle pooled connection that the server drops emits 'error' on the pool; unhandled, it
  // would crash the process. The pool discards that connection by itself.
  pool.on("error", () => {});
  return { pool, ownsPool: true };
}

/** A client checked out of a pool for one transaction; see {@link checkOut}. */
export interface CheckedOutClient {
  readonly client: pg.PoolClient;
  /**
   * Returns the client to the pool, or has the pool discard it when `failure` is given or its
   * connection broke while it was out.
   */
  release(failure?: Error): void;
}

/**
 * Checks a client out of `pool` with an 'error' listener for as long as it is out. pg-pool
 * listens for a client's errors only while it sits idle, and a client whose connection ends
 * under it (pg_terminate_backend, a failover, a network reset) emits 'error' after the query in
 * flight has already failed: unheard, that is an uncaught exception, and the whole process dies
 * of one broken connection. The query's own failure still reaches the caller; the listener only
 * remembers the loss, so that the client is discarded rather than reused.
 */
export async function checkOut(pool: pg.Pool): Promise<CheckedOutClient> {
  const client = await pool.connect();
  let lost: Error | undefined;
  const onError = (error: Error): void => {
    lost ??= error;
  };
  client.on("error", onError);
  return {
    client,
    release(failure) {
      // The pool puts its own listener back (or ends the client) before this one goes.
      client.release(failure ?? lost);
      client.removeListener("error", onError);
    },
  };
}

/**
 * An integer option from `min` to `max`, `fallback` when absent.
 * @throws ValidationError otherwise.
 */
export function integerOption(
  name: string,
  value: unknown,
  fallback: number,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new ValidationError(
      `"${name}" expected an integer from ${min} to ${max}, got ${String(value)}`,
    );
  }
  return value;
}

/**
 * A boolean option, `fallback` when absent.
 * @throws ValidationError otherwise.
 */
export function booleanOption(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") {
    throw new ValidationError(`"${name}" expected a boolean, got ${typeof value}`);
  }
  return value;
}

/**
 * The `lockTimeoutMs` option, default 10 s: how long a write transaction waits for the lock
 * that serializes writers (the change counter, the audit head) before it fails. Without it, one
 * stuck transaction — a client paused mid-transaction, a manual `SELECT … FOR UPDATE` left
 * open — stalls every KMS write indefinitely. 0 waits forever, as PostgreSQL's default; the
 * largest value PostgreSQL accepts is 2^31 − 1.
 * @throws ValidationError when it is not an integer in that range.
 */
export function lockTimeoutOption(value: unknown): number {
  return integerOption("lockTimeoutMs", value, 10_000, 0, 2_147_483_647);
}

/**
 * Starts every transaction of the store, the audit sink and the migrations. The isolation level
 * is explicit because the compare-and-set writes, the queue on the writers' lock and the
 * migration check all rely on READ COMMITTED re-reading rows committed while they waited: under
 * a database or role default of REPEATABLE READ or SERIALIZABLE, every writer that queued behind
 * another would fail with 40001 instead.
 */
export const BEGIN = "BEGIN ISOLATION LEVEL READ COMMITTED";

/** Applies the validated timeout to the current transaction only (no pooled-session leak). */
export function setLockTimeout(ms: number): string {
  return `SET LOCAL lock_timeout = ${ms}`;
}

/** PostgreSQL's lock_not_available: lock_timeout expired. */
const LOCK_NOT_AVAILABLE = "55P03";

/** A KmsError passes through; anything else becomes KMSInternalException naming the SQLSTATE. */
export function storeFailure(description: string, operation: string, error: unknown): Error {
  if (isKmsError(error)) return error;
  if ((error as { code?: unknown } | undefined)?.code === LOCK_NOT_AVAILABLE) {
    return new KmsInternalError(
      `${description}: ${operation} timed out waiting for the write lock another transaction holds (${pgCode(error)}); see lockTimeoutMs`,
      { cause: error },
    );
  }
  return new KmsInternalError(`${description}: ${operation} failed (${pgCode(error)})`, {
    cause: error,
  });
}
