import "reflect-metadata";
import { databaseTarget } from "@kms/tooling/databases";
import { TypeormFieldEncryption } from "@kms/typeorm";
import { getDataSourceToken } from "@nestjs/typeorm";
import { afterEach, expect, test, vi } from "vitest";
import { DemoConfigError } from "../src/config.ts";
import { createApp } from "../src/server.ts";
import { postgresBackend, sqliteBackend } from "./backends.ts";

afterEach(() => {
  vi.restoreAllMocks();
});

test("the app checks its encrypted entities once the DataSource is up, before any request", async () => {
  const check = vi.spyOn(TypeormFieldEncryption.prototype, "check");
  const backend = await sqliteBackend();
  const app = await createApp(backend.config);
  try {
    const dataSource = app.get(getDataSourceToken());
    expect(check).toHaveBeenCalledTimes(1);
    expect(check).toHaveBeenCalledWith(dataSource);
    expect(dataSource.isInitialized).toBe(true);
  } finally {
    await app.close();
    await backend.close();
  }
});

/** The receiver's table as releases before random event ids created it, with one event. */
const OLD_WEBHOOK_EVENTS = [
  `CREATE TABLE "webhook_events" ("id" integer PRIMARY KEY NOT NULL, "event" varchar(60) NOT NULL,
    "tenantId" varchar(40) NOT NULL, "patientId" integer NOT NULL,
    "signatureKeyId" varchar(100) NOT NULL, "signatureLabel" varchar(100) NOT NULL)`,
  `INSERT INTO "webhook_events" VALUES (1, 'patient.created', 'clinic-a', 1, 'demo-webhooks', 'sig1')`,
];

const postgres = databaseTarget("postgres");

test.each([
  ["SQLite", false],
  ["PostgreSQL", postgres.skipReason !== undefined],
] as const)(
  "webhook events of an earlier release on %s are refused at start with what to drop",
  async (name, skip) => {
    if (skip) return;
    const backend =
      name === "SQLite" ? await sqliteBackend() : await postgresBackend(postgres.url as string);
    try {
      for (const sql of OLD_WEBHOOK_EVENTS) await backend.write(sql);
      const refused = createApp(backend.config);
      await expect(refused).rejects.toThrow(DemoConfigError);
      await expect(refused).rejects.toThrow(
        name === "SQLite"
          ? `the webhook_events table in ${backend.config.dataDir} was written by an earlier release of this demo: delete ${backend.config.dataDir} (or drop the table), then start again`
          : /^the webhook_events table of DATABASE_URL \(127\.0\.0\.1:5432\/kms_demo_nest_\w+\) was written by an earlier release of this demo: drop it, then start again$/,
      );
      // Dropped, the table is made anew.
      await backend.write(`DROP TABLE "webhook_events"`);
      const app = await createApp(backend.config);
      await app.close();
      expect(await backend.raw(`SELECT "eventId", "patientId" FROM "webhook_events"`)).toEqual([]);
    } finally {
      await backend.close();
    }
  },
);
