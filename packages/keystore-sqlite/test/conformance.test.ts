import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describeKeyStoreConformance } from "@kms/core/testing";
import { SqliteKeyStore } from "../src/index.ts";

describeKeyStoreConformance("SqliteKeyStore (file)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "kms-sqlite-conformance-"));
  const store = SqliteKeyStore.open({ path: join(dir, "keys.db") });
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describeKeyStoreConformance("SqliteKeyStore (file, cache disabled)", async () => {
  const dir = await mkdtemp(join(tmpdir(), "kms-sqlite-conformance-"));
  const store = SqliteKeyStore.open({ path: join(dir, "keys.db"), cacheSize: 0 });
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});
