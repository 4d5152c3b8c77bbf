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
  close(): Promise<void>;
}

export async function sqliteBackend(): Promise<Backend> {
  const dataDir = mkdtempSync(join(tmpdir(), "kms-demo-nest-"));
  let db: Database.Database | undefined;
  return {
    config: { dataDir, port: 0 },
    async raw(sql) {
      // Opened lazily: the app creates the file. Kept alive (retainSqliteStatements in @kms/keystore-sqlite).
      db ??= retainHandle(new Database(join(dataDir, "records.db"), { readonly: true }));
      return retainHandle(db.prepare(sql)).all() as Record<string, unknown>[];
    },
    async close() {
      db?.close();
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
    async raw(sql) {
      return (await client.query(sql)).rows as Record<string, unknown>[];
    },
    async close() {
      await client.end();
      await admin.query(`DROP DATABASE "${database}" WITH (FORCE)`);
      await admin.end();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
