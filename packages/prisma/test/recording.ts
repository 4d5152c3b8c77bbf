import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKms, type Kms } from "@kms/core";
import { retainSqliteHandle } from "@kms/keystore-sqlite";
import { databaseTarget } from "@kms/tooling/databases";
import type { SeededRandom as Rng } from "@kms/tooling/random";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import { PrismaPg } from "@prisma/adapter-pg";
import Database from "better-sqlite3";
import pg from "pg";
import { fieldEncryption } from "../src/index.ts";
import { openPostgres, openSqlite, schemaText, type TestDatabase } from "./backends.ts";
import { PrismaClient } from "./generated/client.ts";
import { PrismaClient as PgPrismaClient } from "./generated-pg/client.ts";

// Helpers shared by the property tests (where-properties, write-properties): databases whose
// driver adapter records every statement and bound argument, the backends they run on, and the
// leak check over what was recorded.

const here = dirname(fileURLToPath(import.meta.url));

export function extendClient(base: PrismaClient, kms: Kms, keyId: string) {
  return base.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
}
export type Extended = ReturnType<typeof extendClient>;

export const show = (v: unknown): string =>
  JSON.stringify(v, (_k, x: unknown) => (x instanceof Uint8Array ? `<bytes:${x.length}>` : x));

// ---------------------------------------------------------------------------------------------
// A SQLite database built as openSqlite builds it, whose driver adapter records every statement
// and bound argument (what actually reaches the database), with Prisma's query log beside it.
// ---------------------------------------------------------------------------------------------

export type DriverAdapter = Awaited<ReturnType<PrismaBetterSqlite3["connect"]>>;
export type SqlQuery = Parameters<DriverAdapter["queryRaw"]>[0];

export interface Recorded {
  readonly sql: string;
  readonly args: readonly unknown[];
}

export function recording<T extends object>(target: T, log: Recorded[]): T {
  return new Proxy(target, {
    get(t, prop) {
      const value: unknown = Reflect.get(t, prop, t);
      if (typeof value !== "function") return value;
      if (prop === "queryRaw" || prop === "executeRaw") {
        return (query: SqlQuery) => {
          log.push({ sql: query.sql, args: query.args });
          return (value as (q: SqlQuery) => Promise<unknown>).call(t, query);
        };
      }
      if (prop === "executeScript") {
        return (script: string) => {
          log.push({ sql: script, args: [] });
          return (value as (s: string) => Promise<unknown>).call(t, script);
        };
      }
      if (prop === "startTransaction") {
        // Statements inside a transaction go through the transaction object.
        return async (...args: unknown[]) => {
          const tx = (await (value as (...a: unknown[]) => Promise<object>).apply(t, args)) as T;
          return recording(tx, log);
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(t);
    },
  });
}

class RecordingSqliteAdapter extends PrismaBetterSqlite3 {
  readonly log: Recorded[] = [];
  override async connect(): ReturnType<PrismaBetterSqlite3["connect"]> {
    const adapter = retainSqliteHandle(await super.connect());
    return recording(adapter, this.log);
  }
}

export interface RecordingDatabase {
  readonly base: PrismaClient;
  readonly driver: Recorded[];
  /** Prisma's `query` log events: the statement and its parameters as Prisma reports them. */
  readonly events: Recorded[];
  /**
   * Every row of a table, ordered by id, read with the driver directly (not through Prisma, the
   * recording adapter or the extension). Byte columns come back as Uint8Array.
   */
  rawRows(table: string): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}

export async function openRecordingSqlite(): Promise<RecordingDatabase> {
  const dir = mkdtempSync(join(tmpdir(), "kms-prisma-where-"));
  const file = join(dir, "test.db");
  const db = retainSqliteHandle(new Database(file));
  db.exec(readFileSync(join(here, "prisma", "sqlite.sql"), "utf8"));
  const adapter = new RecordingSqliteAdapter({ url: `file:${file}` });
  const base = new PrismaClient({ adapter, log: [{ emit: "event", level: "query" }] });
  const events: Recorded[] = [];
  base.$on("query", (e) => {
    events.push({ sql: e.query, args: [e.params] });
  });
  return {
    base,
    driver: adapter.log,
    events,
    async rawRows(table) {
      return db.prepare(`SELECT * FROM "${table}" ORDER BY "id"`).all() as Record<
        string,
        unknown
      >[];
    },
    async close() {
      await base.$disconnect();
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

class RecordingPgAdapter extends PrismaPg {
  readonly log: Recorded[] = [];
  override async connect(): ReturnType<PrismaPg["connect"]> {
    return recording(await super.connect(), this.log);
  }
}

/** A fresh schema with the test tables, as openPostgres makes it, behind a recording adapter. */
export async function openRecordingPostgres(url: string): Promise<RecordingDatabase> {
  const schema = `kms_prisma_where_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE SCHEMA "${schema}"`);
  await admin.query(`SET search_path TO "${schema}"`);
  await admin.query(readFileSync(join(here, "prisma", "postgres.sql"), "utf8"));
  const adapter = new RecordingPgAdapter({ connectionString: url }, { schema });
  // The PostgreSQL client of the same models, typed as the SQLite one (as backends.ts does).
  const client = new PgPrismaClient({ adapter, log: [{ emit: "event", level: "query" }] });
  const events: Recorded[] = [];
  client.$on("query", (e) => {
    events.push({ sql: e.query, args: [e.params] });
  });
  const base = client as unknown as PrismaClient;
  return {
    base,
    driver: adapter.log,
    events,
    async rawRows(table) {
      const { rows } = await admin.query(`SELECT * FROM "${table}" ORDER BY "id"`);
      return rows as Record<string, unknown>[];
    },
    async close() {
      await base.$disconnect();
      await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
      await admin.end();
    },
  };
}

export interface PropertyBackend {
  /** SQLite's LIKE (contains, startsWith, endsWith) folds ASCII case; PostgreSQL's does not. */
  readonly likeFoldsCase: boolean;
  readonly name: string;
  /** Why the backend's suite is skipped (no server configured), or undefined. */
  readonly skipReason: string | undefined;
  /** The backend takes `mode: "insensitive"`; SQLite's filters have none. */
  readonly mode: boolean;
  openRecording(): Promise<RecordingDatabase>;
  openPlain(): Promise<TestDatabase>;
}

const postgres = databaseTarget("postgres");
export const BACKENDS: readonly PropertyBackend[] = [
  {
    name: "SQLite",
    skipReason: undefined,
    likeFoldsCase: true,
    mode: false,
    openRecording: openRecordingSqlite,
    openPlain: openSqlite,
  },
  {
    name: "PostgreSQL",
    skipReason: postgres.skipReason,
    likeFoldsCase: false,
    mode: true,
    openRecording: () => openRecordingPostgres(postgres.url as string),
    openPlain: () => openPostgres(postgres.url as string),
  },
];

/** Recorded statements or arguments that carry one of the plaintexts. */
export function leaks(
  recorded: readonly Recorded[],
  secrets: readonly (string | number)[],
): string[] {
  const out: string[] = [];
  for (const { sql, args } of recorded) {
    for (const arg of [sql, ...args]) {
      const text =
        typeof arg === "string"
          ? arg
          : arg instanceof Uint8Array
            ? Buffer.from(arg).toString("utf8")
            : undefined;
      for (const secret of secrets) {
        const hit =
          typeof secret === "number"
            ? arg === secret || (text?.includes(String(secret)) ?? false)
            : (text?.includes(secret) ?? false);
        if (hit) out.push(`${show(secret)} in ${show(arg)} (${sql.slice(0, 80)})`);
      }
    }
  }
  return out;
}

export type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

export async function attempt(run: () => Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: true, value: await run() };
  } catch (error) {
    return { ok: false, error };
  }
}

export function describeError(error: unknown): string {
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}

/**
 * Plaintexts that cannot turn up by chance: "§" is outside base64url and outside every other
 * value these tests write, so a hit inside ciphertext or a data key row is never a coincidence.
 */
export function secretText(rng: Rng, serial: number): string {
  const chars = [..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 @._-éü😀"];
  let s = "§";
  for (let n = 4 + rng.int(10); n > 0; n--) s += rng.pick(chars);
  return `${s}§${serial}`;
}

/** A recording database with a freshly keyed, extended client on it. */
export async function openRecordingClient(
  backend: PropertyBackend = BACKENDS[0] as PropertyBackend,
): Promise<{ rec: RecordingDatabase; prisma: Extended; kms: Kms; keyId: string }> {
  const rec = await backend.openRecording();
  const kms = await createKms();
  const keyId = (await kms.createKey()).keyMetadata.keyId;
  return { rec, prisma: extendClient(rec.base, kms, keyId), kms, keyId };
}
