import "reflect-metadata";
import type { INestApplication } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import type { NestExpressApplication } from "@nestjs/platform-express";
import pg from "pg";
import { AppModule } from "./app.module.ts";
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
 * @throws DemoConfigError naming the server (never the credentials) and the driver's reason.
 */
async function checkDatabase(url: string): Promise<void> {
  try {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.end();
  } catch (error) {
    throw new DemoConfigError(
      `cannot connect to the PostgreSQL server of DATABASE_URL (${redacted(url)}): ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
}

/**
 * Builds the app over the demo's KMS (in-process, or the server of `config.kms`), which the app
 * closes when it closes. `rawBody: true` keeps the exact request bytes that the signature guard
 * checks Content-Digest against. Only JSON bodies are parsed: Nest's default urlencoded parser
 * would also turn an HTML form post into a patient.
 * Signals are the caller's: `main.ts` stops the app on SIGINT and SIGTERM.
 * @throws DemoConfigError when DATABASE_URL's server cannot be reached.
 * @throws KmsError when the KMS cannot be opened or refuses the webhook key's provisioning.
 */
export async function createApp(config: DemoConfig): Promise<INestApplication> {
  if (config.databaseUrl !== undefined) await checkDatabase(config.databaseUrl);
  // Opened before Nest, so that a KMS that cannot be reached or refuses the access key rejects
  // here, for the caller to report, instead of being logged and exiting inside NestFactory.
  const kms = await openDemoKms(config);
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, kms), {
    rawBody: true,
    bodyParser: false,
    logger: ["error", "warn"],
  });
  app.useBodyParser("json", { limit: BODY_LIMIT });
  return app;
}
