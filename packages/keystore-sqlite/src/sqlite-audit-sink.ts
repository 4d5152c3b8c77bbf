import {
  type AuditEvent,
  type AuditReadOptions,
  type AuditSink,
  KmsInternalError,
  ValidationError,
} from "@kms/core";
import Database from "better-sqlite3";
import { prepare, retain } from "./internal/retain.ts";

/** Options of {@link SqliteAuditSink}: a file path, or a database the caller opened. */
export type SqliteAuditSinkOptions =
  | {
      /** Database file (may be the key store's own file), created if missing. */
      readonly path: string;
      readonly database?: never;
    }
  | {
      /** An open better-sqlite3 database; the sink leaves closing it to the caller. */
      readonly database: Database.Database;
      readonly path?: never;
    };

/**
 * Audit events in a SQLite table (`kms_audit_events`), one row per event keyed by its chain
 * sequence. The primary key makes a second writer that forked the chain fail instead of
 * interleaving. Each batch is one transaction: either every event of it is stored or none.
 * @throws KMSInternalException when SQLite fails (cause attached).
 */
export class SqliteAuditSink implements AuditSink {
  readonly description: string;
  readonly #db: Database.Database;
  readonly #ownsDatabase: boolean;
  readonly #insert: Database.Statement<[number, string]>;
  readonly #readAfter: Database.Statement<[number, number], string>;
  readonly #last: Database.Statement<[], string>;
  #closed = false;

  constructor(options: SqliteAuditSinkOptions) {
    if (typeof options !== "object" || options === null) {
      throw new ValidationError(`"options" must be { path } or { database }`);
    }
    if (options.database !== undefined) {
      this.#db = options.database;
      this.#ownsDatabase = false;
      this.description = `sqlite:${options.database.name}#kms_audit_events`;
    } else {
      if (typeof options.path !== "string" || options.path.length === 0) {
        throw new ValidationError(`"path" must be a non-empty string`);
      }
      try {
        this.#db = retain(new Database(options.path));
      } catch (error) {
        throw new KmsInternalError(`cannot open audit database ${options.path}`, { cause: error });
      }
      this.#ownsDatabase = true;
      this.description = `sqlite:${options.path}#kms_audit_events`;
      this.#db.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000");
    }
    this.#db.exec(`
      CREATE TABLE IF NOT EXISTS kms_audit_events (
        sequence INTEGER NOT NULL PRIMARY KEY,
        event    TEXT    NOT NULL
      ) STRICT`);
    this.#insert = prepare(
      this.#db,
      "INSERT INTO kms_audit_events (sequence, event) VALUES (?, ?)",
    );
    this.#readAfter = prepare<[number, number], string>(
      this.#db,
      "SELECT event FROM kms_audit_events WHERE sequence > ? ORDER BY sequence LIMIT ?",
    ).pluck();
    this.#last = prepare<[], string>(
      this.#db,
      "SELECT event FROM kms_audit_events ORDER BY sequence DESC LIMIT 1",
    ).pluck();
  }

  #check(): void {
    if (this.#closed) throw new KmsInternalError(`audit sink ${this.description} is closed`);
  }

  async write(events: readonly AuditEvent[]): Promise<void> {
    this.#check();
    try {
      this.#db
        .transaction(() => {
          for (const e of events) this.#insert.run(e.sequence, JSON.stringify(e));
        })
        .immediate();
    } catch (error) {
      throw new KmsInternalError(`audit sink ${this.description} could not write`, {
        cause: error,
      });
    }
  }

  async read(options: AuditReadOptions = {}): Promise<readonly AuditEvent[]> {
    this.#check();
    const rows = this.#readAfter.all(options.after ?? -1, options.limit ?? -1);
    return rows.map((text) => JSON.parse(text) as AuditEvent);
  }

  async last(): Promise<AuditEvent | undefined> {
    this.#check();
    const text = this.#last.get();
    return text === undefined ? undefined : (JSON.parse(text) as AuditEvent);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsDatabase) this.#db.close();
  }
}
