import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createKms, type Kms, RootKeySource } from "@kms/core";
import { SqliteKeyStore } from "@kms/keystore-sqlite";

/**
 * The demo's KMS: keys in `<dataDir>/kms.db`, wrapped under the root key from KMS_ROOT_KEY, or
 * for a local run a development key file beside it (never do that in production).
 */
export async function openKms(dataDir: string): Promise<Kms> {
  mkdirSync(dataDir, { recursive: true });
  const store = SqliteKeyStore.open({ path: join(dataDir, "kms.db") });
  const rootKey =
    process.env.KMS_ROOT_KEY !== undefined
      ? RootKeySource.fromEnv("KMS_ROOT_KEY")
      : RootKeySource.devFile(join(dataDir, "root.key"));
  return createKms({ store, rootKey });
}
