import { join } from "node:path";
import { isKmsError } from "@kms/core";
import { DEMO_TENANT_TOKENS, TenantConfigError } from "@kms/demo-shared";
import { configFromEnv, type DemoConfig, DemoConfigError } from "./config.ts";
import { type DemoKms, kmsDescription } from "./kms.ts";
import { KmsEndpointError } from "./remote-kms.ts";
import { DEMO_KMS } from "./tokens.ts";
import { useBuiltDecoratedPackages } from "./workspace-builds.ts";

// Before anything imports @kms/nestjs: static imports would be resolved before this line runs.
useBuiltDecoratedPackages();
const { createApp } = await import("./server.ts");

/**
 * A KMS_ENDPOINT without an access key, a malformed PORT, DATABASE_URL or DEMO_TENANTS, or a
 * database that cannot be reached are the user's to correct: say so, without a stack.
 */
function exitOnSetupError(error: unknown): never {
  if (
    !(
      error instanceof KmsEndpointError ||
      error instanceof DemoConfigError ||
      error instanceof TenantConfigError
    )
  ) {
    throw error;
  }
  console.error(error.message);
  process.exit(1);
}

function configOrExit(): DemoConfig {
  try {
    return configFromEnv();
  } catch (error) {
    return exitOnSetupError(error);
  }
}

const config = configOrExit();
const app = await createApp(config).catch((error: unknown) => {
  if (error instanceof DemoConfigError) exitOnSetupError(error);
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
// Loopback only: the published demo tokens must not open the API to the network.
await app.listen(config.port, "127.0.0.1");
// SIGINT and SIGTERM close the app (HTTP server, TypeORM, the KMS through DemoKmsModule), then
// exit 0, where Nest's default re-raises the signal and the process ends killed by it.
app.enableShutdownHooks(["SIGINT", "SIGTERM"], { useProcessExit: true });
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => console.log(`${signal}: stopping`));
}
const { port } = app.getHttpServer().address() as { port: number };
const origin = `http://127.0.0.1:${port}`;
const database =
  config.databaseUrl === undefined
    ? `SQLite (${join(config.dataDir, "records.db")})`
    : "PostgreSQL";

const kms = app.get<DemoKms>(DEMO_KMS);
const published = (process.env.DEMO_TENANTS ?? "").trim() === "";
const clinics = config.tenants.tenants;
const [first = "", second = first] = clinics;
const bearer = (tenant: string) =>
  `-H 'authorization: Bearer ${published ? DEMO_TENANT_TOKENS[tenant] : `<${tenant}'s token>`}'`;

console.log(`demo-nest-typeorm listening on ${origin}: records on ${database}; KMS: ${kms.description}

Clinics: ${clinics.join(", ")}${published ? " (the published demo tokens; set DEMO_TENANTS for your own)" : " (tokens from DEMO_TENANTS)"}.
A request acts for the clinic whose bearer token it sends, and only for it:

  curl -s -X POST ${origin}/patients ${bearer(first)} -H 'content-type: application/json' \\
    -d '{"ssn":"123-45-6789","name":"Ada Lovelace","note":"allergic to penicillin","vitals":{"bpm":72}}'
  curl -s '${origin}/patients?ssn=123-45-6789' ${bearer(first)}
  curl -s ${origin}/patients/<the id POST answered> ${bearer(second)}  # another clinic's row: 403
  curl -s ${origin}/webhooks/events ${bearer(first)}  # the clinic's signed webhooks received

  pnpm --filter @kms/demo-nest-typeorm stored                    # what the database holds

Ctrl-C (or SIGTERM) stops it.`);
