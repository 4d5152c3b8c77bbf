import { resolve } from "node:path";
import { TenantDirectory } from "@kms/demo-shared";
import { type RemoteKmsConfig, remoteKmsConfigFromEnv } from "./remote-kms.ts";

/** PORT or DATABASE_URL is not usable; the message says why, never with credentials. */
export class DemoConfigError extends Error {
  override readonly name = "DemoConfigError";
}

/** Everything the demo reads from its environment, resolved once at startup. */
export interface DemoConfig {
  /** Folder for the SQLite database and, without `kms`, the key store and development root key. */
  readonly dataDir: string;
  /** PostgreSQL URL for the records; SQLite in `dataDir` when absent. */
  readonly databaseUrl?: string;
  /** Where POST /patients sends its signed webhook; default: this server's own receiver. */
  readonly webhookUrl?: string;
  /** The KMS server (KMS_ENDPOINT) to use instead of the in-process KMS in `dataDir`. */
  readonly kms?: RemoteKmsConfig;
  /** The clinics served and their bearer tokens (DEMO_TENANTS, else the published demo ones). */
  readonly tenants: TenantDirectory;
  readonly port: number;
}

/**
 * @throws DemoConfigError when PORT is not a port number, or DATABASE_URL is set but not a
 *   postgres:// or postgresql:// URL (anything else used to reach the PostgreSQL driver anyway).
 * @throws TenantConfigError when DEMO_TENANTS is malformed.
 * @throws KmsEndpointError when KMS_ENDPOINT is set but not an http(s) URL, or without an access
 *   key.
 */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): DemoConfig {
  const port = Number(env.PORT ?? 3000);
  if (!Number.isSafeInteger(port) || port < 0 || port > 65_535) {
    throw new DemoConfigError(`PORT must be an integer from 0 to 65535, got ${env.PORT}`);
  }
  if (env.DATABASE_URL && !/^postgres(ql)?:\/\//.test(env.DATABASE_URL)) {
    throw new DemoConfigError(
      "DATABASE_URL must be a postgres:// or postgresql:// URL; unset it to use SQLite",
    );
  }
  const tenants = TenantDirectory.fromEnv(env.DEMO_TENANTS);
  const kms = remoteKmsConfigFromEnv(env);
  return {
    tenants,
    dataDir: resolve(env.DEMO_DATA_DIR ?? ".data"),
    ...(env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL } : {}),
    ...(env.WEBHOOK_URL ? { webhookUrl: env.WEBHOOK_URL } : {}),
    ...(kms === undefined ? {} : { kms }),
    port,
  };
}
