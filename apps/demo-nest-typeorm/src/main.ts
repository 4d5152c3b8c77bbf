import { join } from "node:path";
import { isKmsError } from "@kms/core";
import { configFromEnv, type DemoConfig } from "./config.ts";
import { type DemoKms, kmsDescription } from "./kms.ts";
import { KmsEndpointError } from "./remote-kms.ts";
import { DEMO_KMS } from "./tokens.ts";
import { useBuiltDecoratedPackages } from "./workspace-builds.ts";

// Before anything imports @kms/nestjs: static imports would be resolved before this line runs.
useBuiltDecoratedPackages();
const { createApp } = await import("./server.ts");

function configOrExit(): DemoConfig {
  try {
    return configFromEnv();
  } catch (error) {
    // A KMS_ENDPOINT without an access key is the user's to complete: say so, without a stack.
    if (!(error instanceof KmsEndpointError)) throw error;
    console.error(error.message);
    process.exit(1);
  }
}

const config = configOrExit();
const app = await createApp(config).catch((error: unknown) => {
  // The KMS is the first thing the app calls (the webhook key): name it, since its answer alone
  // (a refused signature, a connection error) does not say which one was tried.
  if (!isKmsError(error)) throw error;
  // A connection error is only in the cause ("connect ECONNREFUSED …").
  const { cause } = error;
  const detail =
    cause instanceof Error && !error.message.includes(cause.message) ? ` (${cause.message})` : "";
  console.error(
    `demo-nest-typeorm could not start: ${error.message}${detail}; KMS: ${kmsDescription(config)}`,
  );
  process.exit(1);
});
await app.listen(config.port, "127.0.0.1");
const origin = `http://127.0.0.1:${config.port}`;
const database =
  config.databaseUrl === undefined
    ? `SQLite (${join(config.dataDir, "records.db")})`
    : "PostgreSQL";

const kms = app.get<DemoKms>(DEMO_KMS);

console.log(`demo-nest-typeorm listening on ${origin}: records on ${database}; KMS: ${kms.description}

  curl -s -X POST ${origin}/patients -H 'x-tenant-id: clinic-a' -H 'content-type: application/json' \\
    -d '{"ssn":"123-45-6789","name":"Ada Lovelace","note":"allergic to penicillin","vitals":{"bpm":72}}'
  curl -s '${origin}/patients?ssn=123-45-6789' -H 'x-tenant-id: clinic-a'
  curl -s ${origin}/patients/1 -H 'x-tenant-id: clinic-b'      # another clinic: 403
  curl -s ${origin}/webhooks/events                             # signed webhooks received

  pnpm --filter @kms/demo-nest-typeorm stored                    # what the database holds

Ctrl-C to stop.`);
