import {
  type AuditEvent,
  type AuditHead,
  type AuditReadOptions,
  type AuditSink,
  assertExtendsAuditHead,
  chainAuditEvents,
  GENESIS_HASH,
  isKmsError,
  KmsInternalError,
  parseStoredAuditEvent,
  type UnchainedAuditEvent,
  ValidationError,
} from "@kms/core";
import Database from "better-sqlite3";
import { refuseOuterTransaction } from "./internal/outer-transaction.ts";
import { createPrivateFile } from "./internal/private-file.ts";
import { prepare, retain } from "./internal/retain.ts";

/** Options of {@link SqliteAuditSink}: a file path, or a database the caller opened. */
export type SqliteAuditSinkOptions =
  | {
      /**
       * Database file (may be the key store's own file), created if missing (mode 0600; an
       * existing file keeps its mode).
       */
      readonly path: string;
      readonly database?: never;
    }
  | {
      /** An open better-sqlite3 database; the sink leaves closing it to the caller. */
      readonly database: Database.Database;
      readonly path?: never;
    };

interface HeadRow {
  sequence: number;
  hash: string;
}

/**
 * Audit events in a SQLite table (`kms_audit_events`), one row per event keyed by its chain
 * sequence, and the chain head in a one-row table (`kms_audit_head`).
 *
 * A shared-chain sink: every append is one `BEGIN IMMEDIATE` transaction (SQLite's write lock,
 * held across processes) that reads the head, chains the batch onto it with core's
 * `chainAuditEvents`, inserts the events and moves the head. Any number of Kms instances and
 * processes on the same file therefore write one contiguous chain; either every event of a
 * batch is stored or none. `write` (pre-chained events) refuses events that do not extend the
 * head, so no writer can fork the chain.
 * @throws KMSInternalException when SQLite fails (cause attached; the constructor too, e.g. for
 * a file that is not a database, or a `path` that is a symbolic link to nothing), when written
 * events do not extend the head, when the sink is closed, or when a caller's database is inside
 * a transaction the sink did not start.
 */
export class SqliteAuditSink implements AuditSink {
  readonly description: string;
  readonly #db: Database.Database;
  readonly #ownsDatabase: boolean;
  readonly #insert: Database.Statement<[number, string]>;
  readonly #readAfter: Database.Statement<[number, number], string>;
  readonly #last: Database.Statement<[], string>;
  readonly #head: Database.Statement<[], HeadRow>;
  readonly #moveHead: Database.Statement<[number, string]>;
  readonly #append: (
    chain: (head: AuditHead | undefined) => readonly AuditEvent[],
  ) => readonly AuditEvent[];
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
        createPrivateFile(options.path);
        this.#db = retain(new Database(options.path));
      } catch (error) {
        if (isKmsError(error)) throw error;
        throw new KmsInternalError(`cannot open audit database ${options.path}`, { cause: error });
      }
      this.#ownsDatabase = true;
      this.description = `sqlite:${options.path}#kms_audit_events`;
    }
    try {
      // synchronous is set, not left to the default: better-sqlite3 builds SQLite with
      // SQLITE_DEFAULT_WAL_SYNCHRONOUS=1, so a connection that opens a file already in WAL mode
      // starts at NORMAL, and a power cut could take acknowledged events with it.
      if (this.#ownsDatabase) {
        this.#db.exec(
          "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000",
        );
      }
      this.#db.exec(`
        CREATE TABLE IF NOT EXISTS kms_audit_events (
          sequence INTEGER NOT NULL PRIMARY KEY,
          event    TEXT    NOT NULL
        ) STRICT;
        CREATE TABLE IF NOT EXISTS kms_audit_head (
          singleton INTEGER NOT NULL PRIMARY KEY CHECK (singleton = 1),
          sequence  INTEGER NOT NULL,
          hash      TEXT    NOT NULL
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
      // A caller's database may have safeIntegers on; a BigInt head would break chaining (and
      // JSON) from the second event on. Sequences stay far below 2^53.
      this.#head = prepare<[], HeadRow>(
        this.#db,
        "SELECT sequence, hash FROM kms_audit_head WHERE singleton = 1",
      ).safeIntegers(false);
      this.#moveHead = prepare(
        this.#db,
        "INSERT INTO kms_audit_head (singleton, sequence, hash) VALUES (1, ?, ?) ON CONFLICT (singleton) DO UPDATE SET sequence = excluded.sequence, hash = excluded.hash",
      );
      // Files written before the head table existed: the head starts at their last event.
      this.#db
        .transaction(() => {
          if (this.#head.get() !== undefined) return;
          const text = this.#last.get();
          const last = text === undefined ? undefined : this.#parse(text);
          this.#moveHead.run(last?.sequence ?? -1, last?.hash ?? GENESIS_HASH);
        })
        .immediate();
    } catch (error) {
      if (this.#ownsDatabase && this.#db.open) this.#db.close();
      if (isKmsError(error)) throw error;
      throw new KmsInternalError(`cannot open the audit trail ${this.description}`, {
        cause: error,
      });
    }
    const append = this.#db.transaction(
      (chain: (head: AuditHead | undefined) => readonly AuditEvent[]) => {
        const row = this.#head.get();
        if (row === undefined) {
          throw new KmsInternalError(`${this.description}: the kms_audit_head row is missing`);
        }
        const chained = chain(row.sequence < 0 ? undefined : row);
        for (const e of chained) this.#insert.run(e.sequence, JSON.stringify(e));
        const last = chained[chained.length - 1];
        if (last !== undefined) this.#moveHead.run(last.sequence, last.hash);
        return chained;
      },
    );
    this.#append = (chain) => {
      // Events acknowledged inside the owner's transaction would vanish with a rollback, head
      // and all, leaving an intact-looking chain without them.
      refuseOuterTransaction(this.#db, this.description, "audit sink");
      return append.immediate(chain);
    };
  }

  #check(): void {
    if (this.#closed) throw new KmsInternalError(`audit sink ${this.description} is closed`);
  }

  /** Appends events chained elsewhere; they must extend the stored head. */
  async write(events: readonly AuditEvent[]): Promise<void> {
    this.#check();
    if (events.length === 0) return;
    this.#run("write", (head) => {
      assertExtendsAuditHead(head, events, this.description);
      return events;
    });
  }

  /** Chains `events` onto the stored head and appends them in one IMMEDIATE transaction. */
  async appendAndChain(events: readonly UnchainedAuditEvent[]): Promise<readonly AuditEvent[]> {
    this.#check();
    if (events.length === 0) return [];
    return this.#run("append", (head) => chainAuditEvents(head, events));
  }

  /** The head recorded in `kms_audit_head`; undefined while the trail is empty. */
  async chainHead(): Promise<AuditHead | undefined> {
    this.#check();
    const row = this.#query("read the head", () => this.#head.get());
    return row === undefined || row.sequence < 0
      ? undefined
      : { sequence: row.sequence, hash: row.hash };
  }

  #run(
    operation: string,
    chain: (head: AuditHead | undefined) => readonly AuditEvent[],
  ): readonly AuditEvent[] {
    return this.#query(operation, () => this.#append(chain));
  }

  async read(options: AuditReadOptions = {}): Promise<readonly AuditEvent[]> {
    this.#check();
    const rows = this.#query("read", () =>
      this.#readAfter.all(options.after ?? -1, options.limit ?? -1),
    );
    return rows.map((text) => this.#parse(text));
  }

  async last(): Promise<AuditEvent | undefined> {
    this.#check();
    const text = this.#query("read the last event", () => this.#last.get());
    return text === undefined ? undefined : this.#parse(text);
  }

  /** Runs a statement; a driver error becomes KMSInternalException with it as cause. */
  #query<T>(operation: string, fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      throw new KmsInternalError(`audit sink ${this.description} could not ${operation}`, {
        cause: error,
      });
    }
  }

  /**
   * As the other sinks: a row that is not even JSON cannot be returned for verifyAuditLog to
   * report, so it is a KMSInternalException whose cause is the parser's SyntaxError.
   */
  #parse(text: string): AuditEvent {
    return parseStoredAuditEvent(text, this.description);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#ownsDatabase) this.#db.close();
  }
}
