import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKms } from "@kms/core";
import {
  retainSqliteHandle as retain,
  retainSqliteStatements as retainSqliteHandles,
} from "@kms/keystore-sqlite";
import { PrismaBetterSqlite3 } from "@prisma/adapter-better-sqlite3";
import { PrismaPg } from "@prisma/adapter-pg";
import Database from "better-sqlite3";
import pg from "pg";
import { test } from "vitest";
import { PrismaClient } from "./generated/client.ts";
import { PrismaClient as PgPrismaClient } from "./generated-pg/client.ts";

const here = dirname(fileURLToPath(import.meta.url));
export const schemaText = readFileSync(join(here, "prisma", "schema.prisma"), "utf8");

/** A fresh database with the test schema, a base Prisma client on it, and raw driver access. */
export interface TestDatabase {
  readonly prisma: PrismaClient;
  /** Where the database is, for a second client on it (another ORM). */
  readonly location:
    | { readonly kind: "sqlite"; readonly file: string }
    | { readonly kind: "postgres"; readonly url: string; readonly schema: string };
  /** Rows read with the driver directly, bypassing Prisma and the extension. */
  raw(table: string, id: number): Promise<Record<string, unknown>>;
  /** Writes a column with the driver directly (to simulate copying ciphertext around). */
  rawSet(table: string, id: number, column: string, value: unknown): Promise<void>;
  close(): Promise<void>;
}

retainSqliteHandles();

class RetainingSqliteAdapter extends PrismaBetterSqlite3 {
  override async connect(): ReturnType<PrismaBetterSqlite3["connect"]> {
    const adapter = await super.connect();
    retain(adapter);
    return adapter;
  }
}

export async function openSqlite(): Promise<TestDatabase> {
  const dir = mkdtempSync(join(tmpdir(), "kms-prisma-"));
  const file = join(dir, "test.db");
  const db = new Database(file);
  retain(db);
  db.exec(readFileSync(join(here, "prisma", "sqlite.sql"), "utf8"));
  const prisma = new PrismaClient({ adapter: new RetainingSqliteAdapter({ url: `file:${file}` }) });
  return {
    prisma,
    location: { kind: "sqlite", file },
    async raw(table, id) {
      return db.prepare(`SELECT * FROM "${table}" WHERE "id" = ?`).get(id) as Record<
        string,
        unknown
      >;
    },
    async rawSet(table, id, column, value) {
      db.prepare(`UPDATE "${table}" SET "${column}" = ? WHERE "id" = ?`).run(value, id);
    },
    async close() {
      await prisma.$disconnect();
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `test` with fixtures, each set up only for the tests that name it: `db` (a fresh SQLite
 * database, closed after the test), `kms` and `keyId` (a key in that KMS).
 */
export const sqliteTest = test
  // biome-ignore lint/correctness/noEmptyPattern: vitest reads a fixture's dependencies from it.
  .extend("db", async ({}, { onCleanup }) => {
    const db = await openSqlite();
    onCleanup(() => db.close());
    return db;
  })
  .extend("kms", () => createKms())
  .extend("keyId", async ({ kms }) => (await kms.createKey()).keyMetadata.keyId);

export async function openPostgres(url: string): Promise<TestDatabase> {
  const schema = `kms_prisma_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE SCHEMA "${schema}"`);
  await admin.query(`SET search_path TO "${schema}"`);
  await admin.query(readFileSync(join(here, "prisma", "postgres.sql"), "utf8"));
  // Same models, generated for the postgresql provider; typed as the SQLite client so that one
  // behaviour suite drives both.
  // The adapter's `schema` qualifies Prisma's own queries; raw ones (the re-encryption source's
  // row count) find the tables through the search path.
  const prisma = new PgPrismaClient({
    adapter: new PrismaPg(
      { connectionString: url, options: `-c search_path=${schema}` },
      { schema },
    ),
  }) as unknown as PrismaClient;
  return {
    prisma,
    location: { kind: "postgres", url, schema },
    async raw(table, id) {
      const { rows } = await admin.query(`SELECT * FROM "${table}" WHERE "id" = $1`, [id]);
      return rows[0] as Record<string, unknown>;
    },
    async rawSet(table, id, column, value) {
      await admin.query(`UPDATE "${table}" SET "${column}" = $1 WHERE "id" = $2`, [value, id]);
    },
    async close() {
      await prisma.$disconnect();
      await admin.query(`DROP SCHEMA "${schema}" CASCADE`);
      await admin.end();
    },
  };
}
