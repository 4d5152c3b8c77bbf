import { resolve } from "node:path";

/** Everything the demo reads from its environment, resolved once at startup. */
export interface DemoConfig {
  /** Folder for the key store, the development root key and the SQLite database. */
  readonly dataDir: string;
  /** PostgreSQL URL for the records; SQLite in `dataDir` when absent. */
  readonly databaseUrl?: string;
  /** Where POST /patients sends its signed webhook; default: this server's own receiver. */
  readonly webhookUrl?: string;
  readonly port: number;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): DemoConfig {
  const port = Number(env.PORT ?? 3000);
  if (!Number.isSafeInteger(port) || port < 0 || port > 65_535) {
    throw new Error(`PORT must be an integer from 0 to 65535, got ${env.PORT}`);
  }
  return {
    dataDir: resolve(env.DEMO_DATA_DIR ?? ".data"),
    ...(env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL } : {}),
    ...(env.WEBHOOK_URL ? { webhookUrl: env.WEBHOOK_URL } : {}),
    port,
  };
}
