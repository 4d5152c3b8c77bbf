import { join, resolve } from "node:path";
import { createApp } from "./app.ts";
import { openDatabase, StaleDemoDataError } from "./database.ts";
import { openDemoKms } from "./kms.ts";
import { recordsClient } from "./records.ts";
import { KmsEndpointError } from "./remote-kms.ts";
import { WalkthroughStoppedError, walkthrough } from "./walkthrough.ts";

const mode = process.argv[2] ?? "walkthrough";
const dataDir = resolve(process.env.DEMO_DATA_DIR ?? ".demo-data");
/**
 * Stale data from an earlier release is the user's to delete, a KMS_ENDPOINT without an access
 * key theirs to complete: say so, without a stack trace.
 */
function exitOnSetupError(error: unknown): never {
  if (!(error instanceof StaleDemoDataError || error instanceof KmsEndpointError)) throw error;
  console.error(error.message);
  process.exit(1);
}

const kms = await openDemoKms(dataDir).catch(exitOnSetupError);
const database = await openDatabase({
  url: process.env.DATABASE_URL,
  sqlitePath: join(dataDir, "records.db"),
}).catch(async (error: unknown) => {
  await kms.close();
  return exitOnSetupError(error);
});

if (mode === "serve") {
  const { db } = recordsClient(database.base, kms.crypto);
  const port = Number(process.env.PORT ?? 3000);
  createApp({ db, kms: kms.keys }).listen(port, () => {
    console.log(
      `patient records API on http://127.0.0.1:${port} (${database.kind}; KMS: ${kms.description}); send x-tenant-id`,
    );
  });
} else {
  try {
    await walkthrough(database, kms, (line) => console.log(line));
  } catch (error) {
    if (!(error instanceof WalkthroughStoppedError)) throw error;
    console.error(error.message);
    process.exitCode = 1;
  } finally {
    await database.close();
    await kms.close();
  }
}
