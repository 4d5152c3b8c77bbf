import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { retainSqliteHandle as retainHandle, retainSqliteStatements } from "@kms/keystore-sqlite";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import { PrismaPg } from "@prisma/adapter-pg";
import Database from "better-sqlite3";
import pg from "pg";
import { PrismaClient as PostgresPrismaClient } from "./generated/postgres/client.ts";
import { PrismaClient } from "./generated/sqlite/client.ts";

const prismaDir = join(dirname(fileURLToPath(import.meta.url)), "..", "prisma");

/** The base Prisma client, plus raw driver access to show what is actually stored. */
export interface DemoDatabase {
  readonly kind: "sqlite" | "postgres";
  /** The base client: only ever passed to `$extends` (see records.ts). */
  readonly base: PrismaClient;
  /** A Patient row as stored, by its public id (recordId), read with the driver directly. */
  storedPatient(id: string): Promise<Record<string, unknown> | undefined>;
  /** Writes one stored column with the driver directly (to show tampering fails). */
  overwriteStored(id: string, column: "ssn" | "name" | "note", value: unknown): Promise<void>;
  close(): Promise<void>;
}

/**
 * Columns added since the first release, oldest first. `CREATE TABLE IF NOT EXISTS` keeps a
 * Patient table from before them: its values are bound without `recordId`, or its rows have no
 * row-bound SSN to be checked against, so the demo starts over rather than migrate them.
 */
const LATER_COLUMNS = ["recordId", "ssnOfRecord"] as const;

/** The first later column an existing Patient table lacks; none when there is no table yet. */
function missingColumn(existing: readonly string[]): string | undefined {
  if (existing.length === 0) return undefined;
  return LATER_COLUMNS.find((column) => !existing.includes(column));
}

/** Data left by an earlier release of the demo: the message says what to delete. */
export class StaleDemoDataError extends Error {
  override readonly name = "StaleDemoDataError";
}

function oldTable(where: string, column: string): Error {
  return new StaleDemoDataError(
    `the Patient table in ${where} predates the ${column} column: drop it (or use a fresh DEMO_DATA_DIR) and run again`,
  );
}

/** DATABASE_URL names no database the demo can use; the message says why, without credentials. */
export class DatabaseUrlError extends Error {
  override readonly name = "DatabaseUrlError";
}

/** Where a database URL points, for messages: host, port and database, never the credentials. */
function redacted(url: string): string {
  const parsed = URL.parse(url);
  return parsed === null ? "an unparseable URL" : `${parsed.host}${parsed.pathname}`;
}

/**
 * PostgreSQL when `url` is a postgres:// or postgresql:// URL, SQLite at `sqlitePath` when it is
 * unset or empty.
 * @throws DatabaseUrlError when `url` is another kind of URL (it used to fall back to SQLite
 *   silently) or its server cannot be reached.
 */
export async function openDatabase(options: {
  readonly url?: string | undefined;
  readonly sqlitePath: string;
  readonly postgresSchema?: string;
}): Promise<DemoDatabase> {
  const { url } = options;
  if (url === undefined || url === "") return openSqlite(options.sqlitePath);
  if (!/^postgres(ql)?:\/\//.test(url)) {
    throw new DatabaseUrlError(
      `DATABASE_URL must be a postgres:// or postgresql:// URL; unset it to use SQLite (${options.sqlitePath})`,
    );
  }
  return openPostgres(url, options.postgresSchema ?? "public");
}

async function openSqlite(path: string): Promise<DemoDatabase> {
  retainSqliteStatements();
  // The in-process KMS used to create the data dir first; against a KMS server nothing else does.
  mkdirSync(dirname(path), { recursive: true });
  const raw = new Database(path);
  retainHandle(raw);
  const columns = raw.prepare(`PRAGMA table_info("Patient")`).all() as { name: string }[];
  const missing = missingColumn(columns.map((c) => c.name));
  if (missing !== undefined) {
    raw.close();
    throw oldTable(path, missing);
  }
  raw.exec(readFileSync(join(prismaDir, "sqlite.sql"), "utf8"));
  const base = new PrismaClient({ adapter: new PrismaBetterSqlite3({ url: `file:${path}` }) });
  return {
    kind: "sqlite",
    base,
    async storedPatient(id) {
      return raw.prepare(`SELECT * FROM "Patient" WHERE "recordId" = ?`).get(id) as
        | Record<string, unknown>
        | undefined;
    },
    async overwriteStored(id, column, value) {
      raw.prepare(`UPDATE "Patient" SET "${column}" = ? WHERE "recordId" = ?`).run(value, id);
    },
    async close() {
      await base.$disconnect();
      raw.close();
    },
  };
}

async function openPostgres(url: string, schema: string): Promise<DemoDatabase> {
  let raw: pg.Client;
  try {
    raw = new pg.Client({ connectionString: url });
    await raw.connect();
  } catch (error) {
    throw new DatabaseUrlError(
      `cannot connect to the PostgreSQL server of DATABASE_URL (${redacted(url)}): ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  await raw.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
  await raw.query(`SET search_path TO "${schema}"`);
  const { rows: columns } = await raw.query(
    `SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'Patient'`,
    [schema],
  );
  const missing = missingColumn(columns.map((c: { column_name: string }) => c.column_name));
  if (missing !== undefined) {
    await raw.end();
    throw oldTable(`schema "${schema}"`, missing);
  }
  await raw.query(readFileSync(join(prismaDir, "postgres.sql"), "utf8"));
  // Same models generated for the postgresql provider; the API is identical.
  const base = new PostgresPrismaClient({
    adapter: new PrismaPg({ connectionString: url }, { schema }),
  }) as unknown as PrismaClient;
  return {
    kind: "postgres",
    base,
    async storedPatient(id) {
      const { rows } = await raw.query(`SELECT * FROM "Patient" WHERE "recordId" = $1`, [id]);
      return rows[0] as Record<string, unknown> | undefined;
    },
    async overwriteStored(id, column, value) {
      await raw.query(`UPDATE "Patient" SET "${column}" = $1 WHERE "recordId" = $2`, [value, id]);
    },
    async close() {
      await base.$disconnect();
      await raw.end();
    },
  };
}
