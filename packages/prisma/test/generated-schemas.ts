import { copyFileSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createKms, type Kms } from "@kms/core";
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { runPrismaGenerate } from "./generate-client.ts";

/**
 * Support for the tests that generate a client of their own schema (native types need models
 * the shared test schema cannot hold) and run it on a PostgreSQL schema made for one test.
 */

const here = dirname(fileURLToPath(import.meta.url));

/** Runs `prisma generate` offline on `text` in `dir`, emptied first; returns `dir`. */
export function generateSchema(dir: string, text: string): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "schema.prisma"), text);
  copyFileSync(join(here, "prisma", "prisma.config.ts"), join(dir, "prisma.config.ts"));
  runPrismaGenerate(join(dir, "schema.prisma"));
  return dir;
}

/** What a test gets of its PostgreSQL schema. */
export interface SchemaDb<Client> {
  /** A generated client on the schema. */
  readonly client: Client;
  readonly kms: Kms;
  readonly keyId: string;
  /** Every row of `table` as the driver reads it, ordered by `orderBy` when given. */
  raw(table: string, orderBy?: string): Promise<Record<string, unknown>[]>;
}

/**
 * Runs `body` on a fresh PostgreSQL schema named `<prefix>_<pid>_<random>` holding `tables`
 * (DDL), with a client of the generated class on it (`makeClient` given the adapter), a new
 * in-process KMS with one key, and the raw driver; drops the schema afterwards, whatever `body`
 * does.
 */
export async function withPostgresSchema<Client extends { $disconnect(): Promise<void> }>(
  options: {
    readonly url: string;
    readonly prefix: string;
    readonly tables: string;
    readonly makeClient: (adapter: PrismaPg) => Client;
  },
  body: (db: SchemaDb<Client>) => Promise<void>,
): Promise<void> {
  const name = `${options.prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = new pg.Client({ connectionString: options.url });
  await admin.connect();
  await admin.query(`CREATE SCHEMA "${name}"`);
  const client = options.makeClient(
    new PrismaPg({ connectionString: options.url }, { schema: name }),
  );
  try {
    await admin.query(`SET search_path TO "${name}"`);
    await admin.query(options.tables);
    const kms = await createKms();
    const { keyId } = (await kms.createKey()).keyMetadata;
    const raw = async (table: string, orderBy?: string) =>
      (
        await admin.query(
          `SELECT * FROM "${table}"${orderBy === undefined ? "" : ` ORDER BY "${orderBy}"`}`,
        )
      ).rows as Record<string, unknown>[];
    await body({ client, kms, keyId, raw });
  } finally {
    await client.$disconnect();
    await admin.query(`DROP SCHEMA "${name}" CASCADE`);
    await admin.end();
  }
}
