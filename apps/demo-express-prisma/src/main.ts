import { join, resolve } from "node:path";
import { createApp } from "./app.ts";
import { openDatabase, StaleDemoDataError } from "./database.ts";
import { openKms } from "./kms.ts";
import { recordsClient } from "./records.ts";
import { walkthrough } from "./walkthrough.ts";

const mode = process.argv[2] ?? "walkthrough";
const dataDir = resolve(process.env.DEMO_DATA_DIR ?? ".demo-data");
/** Stale data from an earlier release is the user's to delete: say so, without a stack trace. */
function exitIfStale(error: unknown): never {
  if (!(error instanceof StaleDemoDataError)) throw error;
  console.error(error.message);
  process.exit(1);
}

const kms = await openKms(dataDir).catch(exitIfStale);
const database = await openDatabase({
  url: process.env.DATABASE_URL,
  sqlitePath: join(dataDir, "records.db"),
}).catch(async (error: unknown) => {
  await kms.close();
  return exitIfStale(error);
});

if (mode === "serve") {
  const { db } = recordsClient(database.base, kms);
  const port = Number(process.env.PORT ?? 3000);
  createApp({ db, kms }).listen(port, () => {
    console.log(
      `patient records API on http://127.0.0.1:${port} (${database.kind}); send x-tenant-id`,
    );
  });
} else {
  await walkthrough(database, kms, (line) => console.log(line));
  await database.close();
  await kms.close();
}
