import { describeGoldenVectors } from "@kms/core/testing";
import { describe } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

describe.skipIf(target.skipReason !== undefined)("PostgresKeyStore", () => {
  describeGoldenVectors("PostgresKeyStore", async () => {
    const schema = randomSchema("golden");
    const store = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    return {
      store,
      cleanup: async () => {
        await store.close();
        await dropSchema(schema);
      },
    };
  });
});
