import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DataKeyRecord, type DataKeyStore, MemoryDataKeyStore } from "@kms/core";
import {
  retainSqliteHandle as retain,
  retainSqliteStatements as retainSqliteHandles,
} from "@kms/keystore-sqlite";
import type Database from "better-sqlite3";
import mysql from "mysql2/promise";
import pg from "pg";
import { DataSource, type DataSourceOptions, type EntitySchema, type Logger } from "typeorm";
import type { DataKeyRow, TypeormFieldEncryption } from "../src/index.ts";
import { Note, Post, User } from "./entities.ts";

export const ENTITIES = [User, Post, Note];

/** What some suites add to a DataSource: their own entities, a logger that records statements. */
export interface ConnectOptions {
  readonly entities?: readonly (new () => object)[];
  readonly logger?: Logger;
  /** Leave the encryption's subscriber out (a DataSource built elsewhere, for `install()`). */
  readonly withoutSubscriber?: boolean;
  /** Data key entities listed instead of the encryption's own. */
  readonly dataKeyEntities?: readonly EntitySchema<DataKeyRow>[];
  /** Connection pool options (PostgreSQL and MariaDB; SQLite has one connection). */
  readonly pool?: { readonly poolSize: number; readonly extra?: Record<string, unknown> };
}

/** The entities, subscribers and logger of a DataSource for `encryption`. */
function extraOptions(encryption: TypeormFieldEncryption, extra: ConnectOptions | undefined) {
  return {
    entities: [
      ...ENTITIES,
      ...(extra?.entities ?? []),
      ...(extra?.dataKeyEntities ?? encryption.entities),
    ],
    subscribers: extra?.withoutSubscriber === true ? [] : [encryption.subscriber],
    ...(extra?.logger === undefined ? {} : { logger: extra.logger }),
  };
}

/** A fresh database for one test, plus raw driver access that bypasses TypeORM. */
export interface TestDatabase {
  readonly kind: "sqlite" | "postgres" | "mariadb";
  /** A DataSource on this database with `encryption`'s subscriber and tables. */
  connect(encryption: TypeormFieldEncryption, extra?: ConnectOptions): Promise<DataSource>;
  /** Runs SQL with the driver directly (`?` placeholders, rewritten for PostgreSQL). */
  raw(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** Quotes an identifier for raw SQL. */
  q(name: string): string;
  close(): Promise<void>;
}

function pgPlaceholders(sql: string): string {
  let i = 0;
  return sql.replace(/\?/g, () => `$${++i}`);
}

export async function openSqlite(): Promise<TestDatabase> {
  retainSqliteHandles();
  const dir = mkdtempSync(join(tmpdir(), "kms-typeorm-"));
  const file = join(dir, "test.db");
  const sources: DataSource[] = [];
  let first: DataSource | undefined;
  return {
    kind: "sqlite",
    async connect(encryption, extra) {
      const ds = new DataSource({
        type: "better-sqlite3",
        database: file,
        ...extraOptions(encryption, extra),
        synchronize: true,
      } as DataSourceOptions);
      await ds.initialize();
      retain(ds);
      sources.push(ds);
      first ??= ds;
      return ds;
    },
    async raw(sql, params = []) {
      if (first === undefined) throw new Error("connect() first");
      const db = (first.driver as unknown as { databaseConnection: Database.Database })
        .databaseConnection;
      const stmt = db.prepare(sql);
      if (stmt.reader) return stmt.all(...params) as Record<string, unknown>[];
      stmt.run(...params);
      return [];
    },
    q: (name) => `"${name}"`,
    async close() {
      for (const ds of sources) await ds.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function openPostgres(url: string): Promise<TestDatabase> {
  const schema = `kms_typeorm_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE SCHEMA "${schema}"`);
  await admin.query(`SET search_path TO "${schema}"`);
  const sources: DataSource[] = [];
  return {
    kind: "postgres",
    async connect(encryption, extra) {
      const ds = new DataSource({
        type: "postgres",
        url,
        schema,
        ...extraOptions(encryption, extra),
        ...extra?.pool,
        synchronize: true,
      });
      await ds.initialize();
      sources.push(ds);
      return ds;
    },
    async raw(sql, params = []) {
      const { rows } = await admin.query(pgPlaceholders(sql), params);
      return rows as Record<string, unknown>[];
    },
    q: (name) => `"${name}"`,
    async close() {
      for (const ds of sources) await ds.destroy();
      await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
      await admin.end();
    },
  };
}

export async function openMariadb(url: string): Promise<TestDatabase> {
  const database = `kms_typeorm_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = await mysql.createConnection(url);
  await admin.query(`CREATE DATABASE \`${database}\``);
  await admin.query(`USE \`${database}\``);
  const base = new URL(url);
  const sources: DataSource[] = [];
  return {
    kind: "mariadb",
    async connect(encryption, extra) {
      const ds = new DataSource({
        type: "mariadb",
        host: base.hostname,
        port: Number(base.port || 3306),
        username: decodeURIComponent(base.username),
        password: decodeURIComponent(base.password),
        database,
        ...extraOptions(encryption, extra),
        ...extra?.pool,
        synchronize: true,
      });
      await ds.initialize();
      sources.push(ds);
      return ds;
    },
    async raw(sql, params = []) {
      const [rows] = await admin.query(sql, params);
      return Array.isArray(rows) ? (rows as Record<string, unknown>[]) : [];
    },
    q: (name) => `\`${name}\``,
    async close() {
      for (const ds of sources) await ds.destroy();
      await admin.query(`DROP DATABASE \`${database}\``);
      await admin.end();
    },
  };
}

/** The error of `run`, thrown or rejected (a QueryBuilder refuses while it is being built). */
export async function failure(run: () => Promise<unknown>): Promise<unknown> {
  return Promise.resolve()
    .then(run)
    .then(
      () => undefined,
      (error: unknown) => error,
    );
}

/**
 * A data key store that holds the first data key written until `release()`: the entity sealed
 * with it is still in flight while the rest of the write goes on (and fails).
 */
export function holdFirstDataKey(): {
  readonly store: DataKeyStore;
  /** Waits for the first data key to be written, lets it through, waits for what awaited it. */
  release(): Promise<void>;
} {
  const memory = new MemoryDataKeyStore();
  let open: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let reach: () => void = () => {};
  const reached = new Promise<void>((resolve) => {
    reach = resolve;
  });
  let held: Promise<DataKeyRecord> | undefined;
  return {
    store: {
      get: (id) => memory.get(id),
      insert: (record) => {
        if (held !== undefined) return memory.insert(record);
        reach();
        held = gate.then(() => memory.insert(record));
        return held;
      },
    },
    async release() {
      await reached;
      open();
      await held;
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}
