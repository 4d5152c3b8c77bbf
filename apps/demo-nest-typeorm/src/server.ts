import "reflect-metadata";
import type { INestApplication } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import type { NestExpressApplication } from "@nestjs/platform-express";
import { AppModule } from "./app.module.ts";
import type { DemoConfig } from "./config.ts";
import { openDemoKms } from "./kms.ts";

/** Largest request body parsed: a patient (note ≤ 10,000 characters) fits many times over. */
export const BODY_LIMIT = "64kb";

/**
 * Builds the app over the demo's KMS (in-process, or the server of `config.kms`), which the app
 * closes when it closes. `rawBody: true` keeps the exact request bytes that the signature guard
 * checks Content-Digest against. Only JSON bodies are parsed: Nest's default urlencoded parser
 * would also turn an HTML form post into a patient.
 * @throws KmsError when the KMS cannot be opened or refuses the webhook key's provisioning.
 */
export async function createApp(config: DemoConfig): Promise<INestApplication> {
  // Opened before Nest, so that a KMS that cannot be reached or refuses the access key rejects
  // here, for the caller to report, instead of being logged and exiting inside NestFactory.
  const kms = await openDemoKms(config);
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, kms), {
    rawBody: true,
    bodyParser: false,
    logger: ["error", "warn"],
  });
  app.useBodyParser("json", { limit: BODY_LIMIT });
  app.enableShutdownHooks();
  return app;
}
