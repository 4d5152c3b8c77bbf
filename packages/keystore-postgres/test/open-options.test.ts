import { ValidationError } from "@kms/core";
import { describe, expect, it } from "vitest";
import { PostgresAuditSink, PostgresKeyStore } from "../src/index.ts";
import { target } from "./fixtures/database.ts";

type AnyOptions = Parameters<typeof PostgresKeyStore.open>[0];

describe.skipIf(target.skipReason !== undefined)("open() refuses junk options", () => {
  const junk: [string, unknown, RegExp][] = [
    ["no options", undefined, /"options"/],
    ["null", null, /"options"/],
    ["a connection string instead of options", "postgres://localhost/db", /"options"/],
    ["a pool that is a string", { pool: "postgres://localhost/db" }, /"pool"/],
    ["a pool that is an empty object", { pool: {} }, /"pool"/],
    ["listen as a string", { connectionString: target.url, listen: "false" }, /"listen"/],
    ["listen as a number", { connectionString: target.url, listen: 0 }, /"listen"/],
  ];

  it.each(junk)("PostgresKeyStore: %s → ValidationError", async (_, options, message) => {
    const opened = PostgresKeyStore.open(options as AnyOptions);
    await expect(opened).rejects.toBeInstanceOf(ValidationError);
    await expect(opened).rejects.toThrow(message);
  });

  it.each(junk.filter(([, options]) => (options as { pool?: unknown } | null)?.pool !== undefined))(
    "PostgresAuditSink: %s → ValidationError",
    async (_, options, message) => {
      const opened = PostgresAuditSink.open(options as AnyOptions);
      await expect(opened).rejects.toBeInstanceOf(ValidationError);
      await expect(opened).rejects.toThrow(message);
    },
  );
});
