import { resolve } from "node:path";
import { type RemoteKmsConfig, remoteKmsConfigFromEnv } from "./remote-kms.ts";

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
  readonly port: number;
}

/**
 * @throws KmsEndpointError when KMS_ENDPOINT is set but not an http(s) URL, or without an access
 *   key.
 */
export function configFromEnv(env: NodeJS.ProcessEnv = process.env): DemoConfig {
  const port = Number(env.PORT ?? 3000);
  if (!Number.isSafeInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`PORT must be an integer from 0 to 65535, got ${env.PORT}`);
  }
  const kms = remoteKmsConfigFromEnv(env);
  return {
    dataDir: resolve(env.DEMO_DATA_DIR ?? ".data"),
    ...(env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL } : {}),
    ...(env.WEBHOOK_URL ? { webhookUrl: env.WEBHOOK_URL } : {}),
    ...(kms === undefined ? {} : { kms }),
    port,
  };
}
