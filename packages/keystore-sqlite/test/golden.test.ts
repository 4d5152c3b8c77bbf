import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeGoldenVectors } from "@kms/core/testing";
import { SqliteKeyStore } from "../src/index.ts";

describeGoldenVectors("SqliteKeyStore", async () => {
  const folder = mkdtempSync(join(tmpdir(), "kms-golden-"));
  const store = SqliteKeyStore.open({ path: join(folder, "keys.db") });
  return {
    store,
    cleanup: async () => {
      await store.close();
      rmSync(folder, { recursive: true, force: true });
    },
  };
});
