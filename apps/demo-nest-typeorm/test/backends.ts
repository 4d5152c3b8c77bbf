import { mkdtempSync, rmSync } from "node:fs";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKms, type Kms } from "@kms/core";
import { TENANTS } from "@kms/demo-shared/testing";
import { retainSqliteHandle as retainHandle } from "@kms/keystore-sqlite";
import { createKmsServer } from "@kms/server";
import Database from "better-sqlite3";
import pg from "pg";
import type { DemoConfig } from "../src/config.ts";
import { DEFAULT_SERVER_REGION } from "../src/remote-kms.ts";

/** Where one test file's app keeps its records, and a way to read them around TypeORM. */
export interface Backend {
  readonly config: DemoConfig;
  /** Runs SQL with the driver directly: what is really stored. */
  raw(sql: string): Promise<Record<string, unknown>[]>;
  /** Changes rows with the driver directly, around TypeORM and the KMS (an attacker with database access). */
  write(sql: string): Promise<void>;
  /** The SQLite records file, whose bytes can be scanned; undefined on PostgreSQL. */
  readonly recordsFile: string | undefined;
  /** The KMS server the app talks to; undefined when its KMS is in-process. */
  readonly kmsServer?: KmsServer;
  close(): Promise<void>;
}

/** The demo's identity on the server: a role in the server KMS's account (000000000000). */
export const DEMO_PRINCIPAL = "arn:aws:iam::000000000000:role/demo-clinics";
export const ACCESS_KEY_ID = "AKIADEMOCLINICS00001";
export const SECRET_ACCESS_KEY = "demo-clinics-secret-0123456789abcdef";

/** A core Kms behind @kms/server on 127.0.0.1, as `kms serve` runs it. */
export interface KmsServer {
  readonly kms: Kms;
  readonly server: Server;
  readonly endpoint: string;
  close(): Promise<void>;
}

export async function startKmsServer(): Promise<KmsServer> {
  const kms = await createKms();
  // Default key and account policies allow every principal of the KMS's account everything,
  // so the demo's role may create its keys and use them (docs/POLICY.md).
  const server = createKmsServer({
    kms,
    credentials: {
      [ACCESS_KEY_ID]: { secretAccessKey: SECRET_ACCESS_KEY, principal: DEMO_PRINCIPAL },
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    kms,
    server,
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      if (server.listening) await new Promise((resolve) => server.close(resolve));
      await kms.close();
    },
  };
}

/** `open`'s backend with the app's KMS on a KMS server instead, configured as KMS_ENDPOINT does. */
export function onKmsServer(open: () => Promise<Backend>): () => Promise<Backend> {
  return async () => {
    const backend = await open();
    const kmsServer = await startKmsServer();
    return {
      ...backend,
      config: {
        ...backend.config,
        kms: {
          endpoint: kmsServer.endpoint,
          region: DEFAULT_SERVER_REGION,
          accessKeyId: ACCESS_KEY_ID,
          secretAccessKey: SECRET_ACCESS_KEY,
        },
      },
      kmsServer,
      async close() {
        await backend.close();
        await kmsServer.close();
      },
    };
  };
}

export async function sqliteBackend(): Promise<Backend> {
  const dataDir = mkdtempSync(join(tmpdir(), "kms-demo-nest-"));
  const recordsFile = join(dataDir, "records.db");
  let db: Database.Database | undefined;
  let writable: Database.Database | undefined;
  return {
    config: { dataDir, port: 0, tenants: TENANTS },
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
    config: { dataDir, port: 0, databaseUrl: target.href, tenants: TENANTS },
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
