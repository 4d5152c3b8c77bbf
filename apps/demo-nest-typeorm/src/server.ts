import "reflect-metadata";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { retainSqliteHandle } from "@kms/keystore-sqlite";
import type { INestApplication } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import type { NestExpressApplication } from "@nestjs/platform-express";
import Database from "better-sqlite3";
import pg from "pg";
import { AppModule } from "./app.module.ts";
import { ServerAuthorities } from "./authorities.ts";
import { type DemoConfig, DemoConfigError } from "./config.ts";
import { openDemoKms } from "./kms.ts";

/** Largest request body parsed: a patient (note ≤ 10,000 characters) fits many times over. */
export const BODY_LIMIT = "64kb";

/** Where a database URL points, for messages: host, port and database, never the credentials. */
function redacted(url: string): string {
  const parsed = URL.parse(url);
  return parsed === null ? "an unparseable URL" : `${parsed.host}${parsed.pathname}`;
}

/**
 * Connects to DATABASE_URL's server once, before Nest: inside NestFactory a connection error is
 * logged with its stack and ends the process, where the caller should say what is wrong.
 * @returns the columns of its `webhook_events` table (none when there is no such table).
 * @throws DemoConfigError naming the server (never the credentials) and the driver's reason.
 */
async function checkDatabase(url: string): Promise<string[]> {
  let client: pg.Client;
  try {
    client = new pg.Client({ connectionString: url });
    await client.connect();
  } catch (error) {
    throw new DemoConfigError(
      `cannot connect to the PostgreSQL server of DATABASE_URL (${redacted(url)}): ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  try {
    const { rows } = await client.query<{ column_name: string }>(
      `SELECT column_name FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'webhook_events'`,
    );
    return rows.map((row) => row.column_name);
  } finally {
    await client.end();
  }
}

/** The columns of the SQLite records file's `webhook_events` table; none before the first start. */
function sqliteWebhookColumns(file: string): string[] {
  if (!existsSync(file)) return [];
  const db = retainSqliteHandle(new Database(file, { readonly: true, fileMustExist: true }));
  try {
    const statement = retainSqliteHandle(db.prepare(`PRAGMA table_info("webhook_events")`));
    return (statement.all() as { name: string }[]).map((column) => column.name);
  } finally {
    db.close();
  }
}

/**
 * Refuses a `webhook_events` table of a release before events had a random `eventId` (they were
 * named by a row id counting every clinic's events, and named their patient by its row id too):
 * `synchronize` cannot add the new required column to a table with rows, and failed with a
 * stack trace. The demo's events are disposable, so it says what to drop rather than migrate.
 * @throws DemoConfigError naming the table and what to delete.
 */
function checkWebhookTable(columns: readonly string[], where: string, remedy: string): void {
  if (columns.length > 0 && !columns.includes("eventId")) {
    throw new DemoConfigError(
      `the webhook_events table ${where} was written by an earlier release of this demo: ${remedy}, then start again`,
    );
  }
}

/**
 * Builds the app over the demo's KMS (in-process, or the server of `config.kms`), which the app
 * closes when it closes. `rawBody: true` keeps the exact request bytes that the signature guard
 * checks Content-Digest against. Only JSON bodies are parsed: Nest's default urlencoded parser
 * would also turn an HTML form post into a patient. Signed requests must name the authority the
 * server listens on (or one of `config.publicAuthorities`), whatever port it is given.
 * Signals are the caller's: `main.ts` stops the app on SIGINT and SIGTERM.
 * @throws DemoConfigError when DATABASE_URL's server cannot be reached, or the database holds
 *   webhook events of an earlier release.
 * @throws KmsError when the KMS cannot be opened or refuses the webhook key's provisioning.
 */
export async function createApp(config: DemoConfig): Promise<INestApplication> {
  if (config.databaseUrl !== undefined) {
    checkWebhookTable(
      await checkDatabase(config.databaseUrl),
      `of DATABASE_URL (${redacted(config.databaseUrl)})`,
      "drop it",
    );
  } else {
    checkWebhookTable(
      sqliteWebhookColumns(join(config.dataDir, "records.db")),
      `in ${config.dataDir}`,
      `delete ${config.dataDir} (or drop the table)`,
    );
  }
  // Opened before Nest, so that a KMS that cannot be reached or refuses the access key rejects
  // here, for the caller to report, instead of being logged and exiting inside NestFactory.
  const kms = await openDemoKms(config);
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, kms), {
    rawBody: true,
    bodyParser: false,
    logger: ["error", "warn"],
  });
  app.useBodyParser("json", { limit: BODY_LIMIT });
  app.get(ServerAuthorities).follow(app.getHttpServer());
  return app;
}
