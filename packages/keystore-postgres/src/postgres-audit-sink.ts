import {
  type AuditEvent,
  type AuditHead,
  type AuditReadOptions,
  type AuditSink,
  assertExtendsAuditHead,
  chainAuditEvents,
  isKmsError,
  KmsInternalError,
  parseStoredAuditEvent,
  type UnchainedAuditEvent,
} from "@kms/core";
import type pg from "pg";
import {
  BEGIN,
  type CheckedOutClient,
  checkOut,
  hostOf,
  lockTimeoutOption,
  optionsObject,
  pgCode,
  poolOption,
  schemaOption,
  setLockTimeout,
  storeFailure,
} from "./internal/connection.ts";
import { migrate, quoteIdent } from "./internal/migrations.ts";

/** Options of {@link PostgresAuditSink.open}: a connection string, or a pool the caller owns. */
export type PostgresAuditSinkOptions = {
  /**
   * Schema holding the `kms_audit_events` and `kms_audit_head` tables, created and migrated
   * like the key store's (the key store's own schema is a fine place).
   * @defaultValue "kms"
   */
  readonly schema?: string;
  /**
   * How long an append waits for the chain-head row lock that serializes writers before it
   * fails (the call then fails too: the sink is fail-closed). 0 waits forever.
   * @defaultValue 10000
   */
  readonly lockTimeoutMs?: number;
} & (
  | {
      /** `postgres://user@host:5432/db`. The sink creates a pool and ends it on `close()`. */
      readonly connectionString: string;
      readonly pool?: never;
    }
  | {
      /** A pg Pool, e.g. the one the application already has; ending it is the caller's job. */
      readonly pool: pg.Pool;
      readonly connectionString?: never;
    }
);

interface HeadRow {
  sequence: string;
  hash: string;
}

/**
 * The audit trail in PostgreSQL, one chain shared by every Kms instance and process that
 * writes to the schema.
 *
 * It is a shared-chain sink: `appendAndChain` runs one transaction that locks the single row
 * of `kms_audit_head` (`SELECT … FOR UPDATE`), chains the batch onto that head with core's
 * `chainAuditEvents`, inserts the events and moves the head, then commits. Writers queue on
 * the row lock, so sequence numbers are contiguous and every prevHash is the hash committed
 * before it; a failed transaction stores nothing of its batch. `write` (pre-chained events)
 * takes the same lock and refuses events that do not extend the head.
 *
 * @throws KmsInternalError when PostgreSQL fails (cause attached), when written events do not
 * extend the chain head, or when the sink is closed.
 */
export class PostgresAuditSink implements AuditSink {
  readonly description: string;
  readonly #pool: pg.Pool;
  readonly #ownsPool: boolean;
  readonly #sql: ReturnType<typeof statements>;
  #closed = false;

  private constructor(
    pool: pg.Pool,
    ownsPool: boolean,
    sql: ReturnType<typeof statements>,
    description: string,
  ) {
    this.#pool = pool;
    this.#ownsPool = ownsPool;
    this.#sql = sql;
    this.description = description;
  }

  /**
   * Connects and creates or upgrades the schema (safe when several instances start at once).
   *
   * @example
   * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
   * const kms = await createKms({
   *   store: await PostgresKeyStore.open({ pool }),
   *   audit: await PostgresAuditSink.open({ pool }),
   * });
   *
   * @throws ValidationError when `options` is not an object, the schema name is invalid, `pool`
   * is not a pg.Pool, or neither/both of pool and connectionString are given. KmsInternalError
   * when the database cannot be reached or its schema was written by a newer version of this
   * package.
   */
  static async open(options: PostgresAuditSinkOptions): Promise<PostgresAuditSink> {
    optionsObject(options);
    const schema = schemaOption(options.schema);
    const lockTimeoutMs = lockTimeoutOption(options.lockTimeoutMs);
    const { pool, ownsPool } = poolOption(options);
    const description = `postgres:${hostOf(pool.options)}/${schema}#kms_audit_events`;
    try {
      await migrate(pool, schema, description);
    } catch (error) {
      if (ownsPool) await pool.end().catch(() => {});
      if (isKmsError(error)) throw error;
      throw new KmsInternalError(`${description}: cannot open the audit sink (${pgCode(error)})`, {
        cause: error,
      });
    }
    return new PostgresAuditSink(pool, ownsPool, statements(schema, lockTimeoutMs), description);
  }

  /**
   * Chains `events` onto the stored head and appends them in one transaction.
   * @throws KmsInternalError when the transaction fails (nothing of the batch is stored).
   */
  async appendAndChain(events: readonly UnchainedAuditEvent[]): Promise<readonly AuditEvent[]> {
    this.#checkOpen();
    if (events.length === 0) return [];
    return this.#appendLocked("appendAndChain", (head) => chainAuditEvents(head, events));
  }

  /**
   * Appends events chained elsewhere; they must extend the stored head.
   * @throws KmsInternalError when they do not, or when PostgreSQL fails (nothing is stored).
   */
  async write(events: readonly AuditEvent[]): Promise<void> {
    this.#checkOpen();
    if (events.length === 0) return;
    await this.#appendLocked("write", (head) => {
      assertExtendsAuditHead(head, events, this.description);
      return events;
    });
  }

  async #appendLocked(
    operation: string,
    chain: (head: AuditHead | undefined) => readonly AuditEvent[],
  ): Promise<readonly AuditEvent[]> {
    let checkedOut: CheckedOutClient;
    try {
      checkedOut = await checkOut(this.#pool);
    } catch (error) {
      throw this.#wrap(operation, error);
    }
    const { client } = checkedOut;
    let broken: Error | undefined;
    try {
      // BEGIN, the lock timeout and the locking read travel in one round trip (simple query
      // protocol).
      const results = (await client.query(this.#sql.beginAndLockHead)) as unknown as [
        pg.QueryResult,
        pg.QueryResult,
        pg.QueryResult<HeadRow>,
      ];
      const row = results[2].rows[0];
      if (row === undefined) {
        throw new KmsInternalError(`${this.description}: the kms_audit_head row is missing`);
      }
      const sequence = Number(row.sequence);
      const chained = chain(sequence < 0 ? undefined : { sequence, hash: row.hash });
      const last = chained[chained.length - 1]!;
      await client.query(this.#sql.insertAndMoveHead, [
        chained.map((e) => e.sequence),
        chained.map((e) => JSON.stringify(e)),
        last.sequence,
        last.hash,
      ]);
      await client.query("COMMIT");
      return chained;
    } catch (error) {
      await client.query("ROLLBACK").catch((rollbackError: Error) => {
        broken = rollbackError;
      });
      throw this.#wrap(operation, error);
    } finally {
      checkedOut.release(broken);
    }
  }

  async read(options: AuditReadOptions = {}): Promise<readonly AuditEvent[]> {
    this.#checkOpen();
    const rows = await this.#query<{ event: string }>("read", this.#sql.read, [
      options.after ?? -1,
      options.limit ?? null,
    ]);
    return rows.map((r) => this.#parse(r.event));
  }

  async last(): Promise<AuditEvent | undefined> {
    this.#checkOpen();
    const rows = await this.#query<{ event: string }>("last", this.#sql.last, []);
    return rows[0] === undefined ? undefined : this.#parse(rows[0].event);
  }

  /** The head recorded in `kms_audit_head`; undefined while the trail is empty. */
  async chainHead(): Promise<AuditHead | undefined> {
    this.#checkOpen();
    const rows = await this.#query<HeadRow>("chainHead", this.#sql.head, []);
    const row = rows[0];
    if (row === undefined) {
      throw new KmsInternalError(`${this.description}: the kms_audit_head row is missing`);
    }
    const sequence = Number(row.sequence);
    return sequence < 0 ? undefined : { sequence, hash: row.hash };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsPool) await this.#pool.end();
  }

  #parse(text: string): AuditEvent {
    return parseStoredAuditEvent(text, this.description);
  }

  #checkOpen(): void {
    if (this.#closed) throw new KmsInternalError(`audit sink ${this.description} is closed`);
  }

  async #query<R extends pg.QueryResultRow>(
    operation: string,
    text: string,
    values: unknown[],
  ): Promise<R[]> {
    try {
      return (await this.#pool.query<R>(text, values)).rows;
    } catch (error) {
      throw this.#wrap(operation, error);
    }
  }

  #wrap(operation: string, error: unknown): Error {
    return storeFailure(this.description, operation, error);
  }
}

function statements(schema: string, lockTimeoutMs: number) {
  const s = quoteIdent(schema);
  return {
    beginAndLockHead: `${BEGIN}; ${setLockTimeout(lockTimeoutMs)}; SELECT sequence, hash FROM ${s}.kms_audit_head FOR UPDATE`,
    // A data-modifying CTE runs whether or not it is referenced: one round trip for both.
    insertAndMoveHead: `
      WITH inserted AS (
        INSERT INTO ${s}.kms_audit_events (sequence, event)
        SELECT * FROM unnest($1::bigint[], $2::text[])
      )
      UPDATE ${s}.kms_audit_head SET sequence = $3, hash = $4`,
    read: `SELECT event FROM ${s}.kms_audit_events WHERE sequence > $1 ORDER BY sequence LIMIT $2`,
    last: `SELECT event FROM ${s}.kms_audit_events ORDER BY sequence DESC LIMIT 1`,
    head: `SELECT sequence, hash FROM ${s}.kms_audit_head`,
  };
}
