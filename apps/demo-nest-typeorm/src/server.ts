import "reflect-metadata";
import type { INestApplication } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import type { NestExpressApplication } from "@nestjs/platform-express";
import { AppModule } from "./app.module.ts";
import type { DemoConfig } from "./config.ts";

/** Largest request body parsed: a patient (note ≤ 10,000 characters) fits many times over. */
export const BODY_LIMIT = "64kb";

/**
 * Builds the app. `rawBody: true` keeps the exact request bytes that the signature guard checks
 * Content-Digest against. Only JSON bodies are parsed: Nest's default urlencoded parser would
 * also turn an HTML form post into a patient.
 */
export async function createApp(config: DemoConfig): Promise<INestApplication> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    rawBody: true,
    bodyParser: false,
    logger: ["error", "warn"],
  });
  app.useBodyParser("json", { limit: BODY_LIMIT });
  app.enableShutdownHooks();
  return app;
}
