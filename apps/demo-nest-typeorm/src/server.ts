import "reflect-metadata";
import type { INestApplication } from "@nestjs/common";
import { NestFactory } from "@nestjs/core";
import type { NestExpressApplication } from "@nestjs/platform-express";
import { AppModule } from "./app.module.ts";
import type { DemoConfig } from "./config.ts";

/**
 * Builds the app. `rawBody: true` keeps the exact request bytes that the signature guard checks
 * Content-Digest against.
 */
export async function createApp(config: DemoConfig): Promise<INestApplication> {
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config), {
    rawBody: true,
    logger: ["error", "warn"],
  });
  app.enableShutdownHooks();
  return app;
}
