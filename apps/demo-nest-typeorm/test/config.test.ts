import "reflect-metadata";
import { createKms } from "@kms/core";
import { TenantConfigError, TenantDirectory } from "@kms/demo-shared";
import { describe, expect, test } from "vitest";
import { configFromEnv, DEFAULT_WEBHOOK_TIMEOUT_MS, DemoConfigError } from "../src/config.ts";
import { TenantKeys, tenantKeyAlias } from "../src/tenant-keys.service.ts";

const A = "token-of-clinic-a-0123456789";

describe("the demo's configuration and key provisioning", () => {
  test("configFromEnv reads DEMO_TENANTS and refuses a DATABASE_URL that is not PostgreSQL's", () => {
    expect(configFromEnv({}).tenants.tenants).toEqual(["clinic-a", "clinic-b"]);
    expect(configFromEnv({ DEMO_TENANTS: `north-7=${A}` }).tenants.tenants).toEqual(["north-7"]);
    expect(() => configFromEnv({ DEMO_TENANTS: "north-7=short" })).toThrow(TenantConfigError);
    for (const url of ["postgres://h/db", "postgresql://u:p@h:5432/db"]) {
      expect(configFromEnv({ DATABASE_URL: url }).databaseUrl).toBe(url);
    }
    for (const url of ["mysql://u:p@h/db", "file:records.db", "postgres:db"]) {
      expect(() => configFromEnv({ DATABASE_URL: url })).toThrow(
        new DemoConfigError(
          "DATABASE_URL must be a postgres:// or postgresql:// URL; unset it to use SQLite",
        ),
      );
    }
  });

  test("configFromEnv reads DEMO_PUBLIC_AUTHORITIES and WEBHOOK_TIMEOUT_MS, and refuses bad ones", () => {
    expect(configFromEnv({})).not.toHaveProperty("publicAuthorities");
    expect(configFromEnv({}).webhookTimeoutMs).toBe(DEFAULT_WEBHOOK_TIMEOUT_MS);
    expect(
      configFromEnv({ DEMO_PUBLIC_AUTHORITIES: " records.example.com, records.example.com:8443" })
        .publicAuthorities,
    ).toEqual(["records.example.com", "records.example.com:8443"]);
    expect(configFromEnv({ DEMO_PUBLIC_AUTHORITIES: "[::1]:3000" }).publicAuthorities).toEqual([
      "[::1]:3000",
    ]);
    for (const value of [
      "https://records.example.com",
      "records.example.com/path",
      "records.example.com:0",
      "records.example.com:70000",
      "user@records.example.com",
      "a,,b",
    ]) {
      expect(() => configFromEnv({ DEMO_PUBLIC_AUTHORITIES: value }), value).toThrow(
        DemoConfigError,
      );
    }
    expect(configFromEnv({ WEBHOOK_TIMEOUT_MS: "250" }).webhookTimeoutMs).toBe(250);
    for (const value of ["0", "-1", "1.5", "soon", "600001"]) {
      expect(() => configFromEnv({ WEBHOOK_TIMEOUT_MS: value }), value).toThrow(
        new DemoConfigError(
          `WEBHOOK_TIMEOUT_MS must be an integer from 1 to 600000 (milliseconds), got ${value}`,
        ),
      );
    }
  });

  test("TenantKeys creates a key for a configured clinic only, even if a route forgot the guard", async () => {
    const kms = await createKms();
    try {
      const demoKms = { crypto: kms, keys: kms, description: "memory", close: () => kms.close() };
      const config = { dataDir: ".", port: 0, tenants: new TenantDirectory({ "clinic-a": A }) };
      const keys = new TenantKeys(demoKms, config);
      await expect(keys.ensure("clinic-x")).rejects.toThrow(
        "no KMS key is made for clinic-x: not a configured clinic",
      );
      const keyId = await keys.ensure("clinic-a");
      expect((await kms.describeKey({ keyId: tenantKeyAlias("clinic-a") })).keyMetadata.keyId).toBe(
        keyId,
      );
      expect((await kms.listKeys({})).keys.map((k) => k.keyId)).toEqual([keyId]);
    } finally {
      await kms.close();
    }
  });
});
