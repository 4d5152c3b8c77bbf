import { useBuiltDecoratedPackages } from "./workspace-builds.ts";

// Before anything imports @kms/nestjs: static imports would be resolved before this line runs.
useBuiltDecoratedPackages();
const { configFromEnv } = await import("./config.ts");
const { createApp } = await import("./server.ts");

const config = configFromEnv();
const app = await createApp(config);
await app.listen(config.port, "127.0.0.1");
const origin = `http://127.0.0.1:${config.port}`;
const database = config.databaseUrl === undefined ? "SQLite (.data/records.db)" : "PostgreSQL";

console.log(`demo-nest-typeorm listening on ${origin}: records on ${database}, keys in ${config.dataDir}

  curl -s -X POST ${origin}/patients -H 'x-tenant-id: clinic-a' -H 'content-type: application/json' \\
    -d '{"ssn":"123-45-6789","name":"Ada Lovelace","note":"allergic to penicillin","vitals":{"bpm":72}}'
  curl -s '${origin}/patients?ssn=123-45-6789' -H 'x-tenant-id: clinic-a'
  curl -s ${origin}/patients/1 -H 'x-tenant-id: clinic-b'      # another clinic: 403
  curl -s ${origin}/webhooks/events                             # signed webhooks received

  pnpm --filter @kms/demo-nest-typeorm stored                    # what the database holds

Ctrl-C to stop.`);
