import "reflect-metadata";
import { createKms } from "@kms/core";
import { TenantConfigError, TenantDirectory } from "@kms/demo-shared";
import { describe, expect, test } from "vitest";
import { configFromEnv, DemoConfigError } from "../src/config.ts";
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
