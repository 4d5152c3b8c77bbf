import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { retainSqliteHandle as retainHandle } from "@kms/keystore-sqlite";
import Database from "better-sqlite3";
import pg from "pg";
import type { DemoConfig } from "../src/config.ts";

/** Where one test file's app keeps its records, and a way to read them around TypeORM. */
export interface Backend {
  readonly config: DemoConfig;
  /** Runs SQL with the driver directly: what is really stored. */
  raw(sql: string): Promise<Record<string, unknown>[]>;
  /** Changes rows with the driver directly, around TypeORM and the KMS (an attacker with database access). */
  write(sql: string): Promise<void>;
  /** The SQLite records file, whose bytes can be scanned; undefined on PostgreSQL. */
  readonly recordsFile: string | undefined;
  close(): Promise<void>;
}

export async function sqliteBackend(): Promise<Backend> {
  const dataDir = mkdtempSync(join(tmpdir(), "kms-demo-nest-"));
  const recordsFile = join(dataDir, "records.db");
  let db: Database.Database | undefined;
  let writable: Database.Database | undefined;
  return {
    config: { dataDir, port: 0 },
    recordsFile,
    async raw(sql) {
      // Opened lazily: the app creates the file. Kept alive (retainSqliteStatements in @kms/keystore-sqlite).
      db ??= retainHandle(new Database(recordsFile, { readonly: true }));
      return retainHandle(db.prepare(sql)).all() as Record<string, unknown>[];
    },
    async write(sql) {
      writable ??= retainHandle(new Database(recordsFile));
      retainHandle(writable.prepare(sql)).run();
    },
    async close() {
      db?.close();
      writable?.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function postgresBackend(url: string): Promise<Backend> {
  const dataDir = mkdtempSync(join(tmpdir(), "kms-demo-nest-"));
  const database = `kms_demo_nest_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${database}"`);
  const target = new URL(url);
  target.pathname = `/${database}`;
  const client = new pg.Client({ connectionString: target.href });
  await client.connect();
  return {
    config: { dataDir, port: 0, databaseUrl: target.href },
    recordsFile: undefined,
    async raw(sql) {
      return (await client.query(sql)).rows as Record<string, unknown>[];
    },
    async write(sql) {
      await client.query(sql);
    },
    async close() {
      await client.end();
      await admin.query(`DROP DATABASE "${database}" WITH (FORCE)`);
      await admin.end();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
