import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join, resolve } from "node:path";
import { RootKeyError } from "@kms/core";
import { DEMO_TENANT_TOKENS, TenantConfigError, TenantDirectory } from "@kms/demo-shared";
import { createApp } from "./app.ts";
import {
  DatabaseUrlError,
  type DemoDatabase,
  openDatabase,
  StaleDemoDataError,
} from "./database.ts";
import { type DemoKms, openDemoKms } from "./kms.ts";
import { recordsClient } from "./records.ts";
import { KmsEndpointError } from "./remote-kms.ts";
import { WalkthroughStoppedError, walkthrough } from "./walkthrough.ts";

/** How long `serve` waits for in-flight requests and connections to close once told to stop. */
const STOP_TIMEOUT_MS = 10_000;

/**
 * Stale data from an earlier release is the user's to delete, a KMS_ENDPOINT without an access
 * key, a DATABASE_URL that is not PostgreSQL's, a malformed DEMO_TENANTS or a KMS_ROOT_KEY that
 * is malformed or not the one the key store was created with theirs to correct: say so, without
 * a stack trace. A RootKeyError's message names the key's source and id, never the key.
 */
function exitOnSetupError(error: unknown): never {
  if (
    !(
      error instanceof StaleDemoDataError ||
      error instanceof KmsEndpointError ||
      error instanceof DatabaseUrlError ||
      error instanceof TenantConfigError ||
      error instanceof RootKeyError
    )
  ) {
    throw error;
  }
  console.error(error.message);
  process.exit(1);
}

/** What `serve` reads from its environment, checked before anything is opened. */
function serveConfig(): { readonly port: number; readonly tenants: TenantDirectory } {
  const port = Number(process.env.PORT ?? 3000);
  if (!Number.isSafeInteger(port) || port < 0 || port > 65_535) {
    console.error(`PORT must be an integer from 0 to 65535, got ${process.env.PORT}`);
    process.exit(1);
  }
  try {
    return { port, tenants: TenantDirectory.fromEnv(process.env.DEMO_TENANTS) };
  } catch (error) {
    return exitOnSetupError(error);
  }
}

const mode = process.argv[2] ?? "walkthrough";
const config = mode === "serve" ? serveConfig() : undefined;
const dataDir = resolve(process.env.DEMO_DATA_DIR ?? ".demo-data");
const kms = await openDemoKms(dataDir).catch(exitOnSetupError);
const database = await openDatabase({
  url: process.env.DATABASE_URL,
  sqlitePath: join(dataDir, "records.db"),
}).catch(async (error: unknown) => {
  await kms.close();
  return exitOnSetupError(error);
});

if (config !== undefined) {
  await serve(config.port, config.tenants, database, kms);
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

/** The API on 127.0.0.1:`port` until SIGINT or SIGTERM, then everything closed and exit 0. */
async function serve(
  port: number,
  tenants: TenantDirectory,
  database: DemoDatabase,
  kms: DemoKms,
): Promise<void> {
  const { db } = recordsClient(database.base, kms.crypto);
  // Loopback only: the published demo tokens must not open the API to the network.
  const server = createApp({ db, kms: kms.keys, tenants }).listen(port, "127.0.0.1");
  try {
    await once(server, "listening");
  } catch (error) {
    console.error(`cannot listen on 127.0.0.1:${port}: ${(error as Error).message}`);
    await database.close();
    await kms.close();
    process.exit(1);
  }
  // Before the banner: whoever reads the banner may signal at once, and a signal with no
  // listener yet would kill the process instead of stopping it.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    // Once: a second Ctrl-C while stopping ends the process at once (the default action).
    process.once(signal, () => void stop(signal, server, database, kms));
  }
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const published = (process.env.DEMO_TENANTS ?? "").trim() === "";
  const [first = "", second = first] = tenants.tenants;
  const token = (tenant: string) =>
    published ? DEMO_TENANT_TOKENS[tenant] : `<${tenant}'s token>`;
  console.log(
    `patient records API on ${origin} (${database.kind}; KMS: ${kms.description})

Clinics: ${tenants.tenants.join(", ")}${published ? " (the published demo tokens; set DEMO_TENANTS for your own)" : " (tokens from DEMO_TENANTS)"}.
A request acts for the clinic whose bearer token it sends, and only for it:

  curl -s -X POST ${origin}/patients -H 'authorization: Bearer ${token(first)}' \\
    -H 'content-type: application/json' -d '{"ssn":"123-45-6789","name":"Ann","vitals":{"bp":"120/80"}}'
  curl -s '${origin}/patients?ssn=123-45-6789' -H 'authorization: Bearer ${token(first)}'
  curl -s ${origin}/patients -H 'authorization: Bearer ${token(second)}'

Ctrl-C (or SIGTERM) stops it.`,
  );
}

/** Stops accepting requests, lets those in flight finish, closes the database and the KMS. */
async function stop(
  signal: NodeJS.Signals,
  server: Server,
  database: DemoDatabase,
  kms: DemoKms,
): Promise<never> {
  console.log(`${signal}: stopping`);
  setTimeout(() => {
    console.error(`still stopping after ${STOP_TIMEOUT_MS / 1000} s: exiting anyway`);
    process.exit(1);
  }, STOP_TIMEOUT_MS).unref();
  try {
    await new Promise<void>((done, fail) =>
      server.close((error) => (error ? fail(error) : done())),
    );
    await database.close();
    await kms.close();
  } catch (error) {
    console.error(`stopping failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  }
  console.log("stopped");
  process.exit(0);
}
