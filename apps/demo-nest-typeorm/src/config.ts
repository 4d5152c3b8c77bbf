import { resolve } from "node:path";
import { TenantDirectory } from "@kms/demo-shared";
import { type RemoteKmsConfig, remoteKmsConfigFromEnv } from "./remote-kms.ts";

/** PORT or DATABASE_URL is not usable; the message says why, never with credentials. */
export class DemoConfigError extends Error {
  override readonly name = "DemoConfigError";
}

/** How long a delivery may take, connect to the last byte of the answer: WEBHOOK_TIMEOUT_MS. */
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 5_000;

/**
 * How long an unwrapped data key serves from the field engine's cache (@kms/core's default is
 * 5 minutes): the longest an instance keeps reading and writing a clinic whose key another
 * instance has just scheduled for deletion.
 */
export const DEFAULT_DATA_KEY_MAX_AGE_MS = 30_000;

// host[:port] as clients write it in Host: a name or an IPv4 address, or a bracketed IPv6 one.
const AUTHORITY =
  /^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*|\[[0-9a-f:.]+\])(?::([1-9][0-9]{0,4}))?$/i;

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
  /**
   * `host[:port]`s clients name for this server besides its loopback address (behind a proxy
   * that forwards their Host): signed requests naming any other authority are refused.
   */
  readonly publicAuthorities?: readonly string[];
  /** Limit on one webhook delivery; default {@link DEFAULT_WEBHOOK_TIMEOUT_MS}. */
  readonly webhookTimeoutMs?: number;
  /** The field engine's data key cache `maxAgeMs`; default {@link DEFAULT_DATA_KEY_MAX_AGE_MS}. */
  readonly dataKeyMaxAgeMs?: number;
}

/**
 * @throws DemoConfigError when PORT is not a port number, DATABASE_URL is set but not a
 *   postgres:// or postgresql:// URL (anything else used to reach the PostgreSQL driver anyway),
 *   DEMO_PUBLIC_AUTHORITIES is not a comma-separated list of host[:port], or WEBHOOK_TIMEOUT_MS
 *   not a number of milliseconds from 1 to 600000.
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
  const publicAuthorities = authoritiesFromEnv(env.DEMO_PUBLIC_AUTHORITIES);
  const webhookTimeoutMs = Number(env.WEBHOOK_TIMEOUT_MS ?? DEFAULT_WEBHOOK_TIMEOUT_MS);
  if (
    !Number.isSafeInteger(webhookTimeoutMs) ||
    webhookTimeoutMs < 1 ||
    webhookTimeoutMs > 600_000
  ) {
    throw new DemoConfigError(
      `WEBHOOK_TIMEOUT_MS must be an integer from 1 to 600000 (milliseconds), got ${env.WEBHOOK_TIMEOUT_MS}`,
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
    ...(publicAuthorities.length === 0 ? {} : { publicAuthorities }),
    webhookTimeoutMs,
  };
}

/** DEMO_PUBLIC_AUTHORITIES: `host[:port]` entries separated by commas; none when unset. */
function authoritiesFromEnv(value: string | undefined): string[] {
  if (value === undefined || value.trim() === "") return [];
  const entries = value.split(",").map((entry) => entry.trim());
  for (const entry of entries) {
    const match = AUTHORITY.exec(entry);
    if (match === null || Number(match[1] ?? 0) > 65_535) {
      throw new DemoConfigError(
        `DEMO_PUBLIC_AUTHORITIES must be host[:port] entries separated by commas (e.g. records.example.com,records.example.com:8443), got ${JSON.stringify(entry.slice(0, 100))}`,
      );
    }
  }
  return entries;
}
