import { describeKeyStoreConformance } from "@kms/core/testing";
import { describe } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

describe.skipIf(target.skipReason !== undefined)("PostgresKeyStore", () => {
  describeKeyStoreConformance("PostgresKeyStore", async () => {
    const schema = randomSchema("conf");
    const store = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    return { store, cleanup: () => dropSchema(schema) };
  });

  describeKeyStoreConformance("PostgresKeyStore (cache disabled, no LISTEN)", async () => {
    const schema = randomSchema("conf");
    const store = await PostgresKeyStore.open({
      connectionString: target.url!,
      schema,
      cacheSize: 0,
      listen: false,
    });
    return { store, cleanup: () => dropSchema(schema) };
  });
});
