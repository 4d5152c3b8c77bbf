import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createKms, type Kms, RootKeyError, RootKeySource } from "@kms/core";
import { SqliteKeyStore } from "@kms/keystore-sqlite";
import { StaleDemoDataError } from "./database.ts";

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
  try {
    return await createKms({ store, rootKey });
  } catch (error) {
    await store.close();
    // A data dir left by a release before record seals: the demo's data is disposable, and
    // sealing it as it is (unsealedRecords: "seal") is a step for real stores, not for a demo.
    if (error instanceof RootKeyError && error.message.includes("unsealedRecords")) {
      throw new StaleDemoDataError(
        `${dataDir} was written by an earlier release of this demo; delete it to start over`,
        { cause: error },
      );
    }
    throw error;
  }
}
