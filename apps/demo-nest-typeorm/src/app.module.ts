import { join } from "node:path";
import { createKmsSigner, createKmsVerifier } from "@kms/http-signatures";
import {
  retainSqliteHandle as retainHandle,
  retainSqliteStatements as retainSqliteHandles,
} from "@kms/keystore-sqlite";
import { defaultKmsContext, KmsModule, KmsService } from "@kms/nestjs";
import { encryptionOf, fieldEncryption } from "@kms/typeorm";
import { type DynamicModule, Module } from "@nestjs/common";
import { APP_FILTER } from "@nestjs/core";
import { TypeOrmModule, type TypeOrmModuleOptions } from "@nestjs/typeorm";
import { DataSource, type DataSourceOptions } from "typeorm";
import { AdminController } from "./admin.controller.ts";
import { ServerAuthorities } from "./authorities.ts";
import { DEFAULT_DATA_KEY_MAX_AGE_MS, type DemoConfig } from "./config.ts";
import { DemoKmsModule } from "./demo-kms.module.ts";
import { type DemoKms, WEBHOOK_KEY_ALIAS, WEBHOOK_KEY_ID } from "./kms.ts";
import { Patient } from "./patient.entity.ts";
import { PatientsController } from "./patients.controller.ts";
import { PatientsService } from "./patients.service.ts";
import { ProblemsFilter } from "./problems.filter.ts";
import { TenantKeys, tenantKeyAlias } from "./tenant-keys.service.ts";
import { DEMO_CONFIG, DEMO_KMS } from "./tokens.ts";
import { WebhookEvent } from "./webhook-event.entity.ts";
import { WebhookSender } from "./webhook-sender.service.ts";
import { WebhooksController } from "./webhooks.controller.ts";

function databaseOptions(config: DemoConfig): DataSourceOptions {
  if (config.databaseUrl !== undefined) {
    return {
      type: "postgres",
      url: config.databaseUrl,
      // A request that waits for a pooled connection longer than this fails (an opaque 500)
      // instead of waiting forever: pg's pool has no limit of its own.
      extra: { connectionTimeoutMillis: 10_000 },
    };
  }
  retainSqliteHandles();
  // A cache larger than the set of distinct statements: each SQL text is prepared once, so the
  // statements the workaround retains stay bounded (retainSqliteStatements in @kms/keystore-sqlite).
  return {
    type: "better-sqlite3",
    database: join(config.dataDir, "records.db"),
    statementCacheSize: 1_000,
  };
}

/**
 * The demo application: KmsModule (the demo's KMS, in-process or a server's, with signature
 * guard, response signing, tenant context, KMS errors → problem+json) and TypeORM wired
 * through @nestjs/typeorm with @kms/typeorm's subscriber, so that every patient column is
 * encrypted under its clinic's KMS key. `createApp` points the provided `ServerAuthorities` at
 * the HTTP server, whose port the signature policy's `authorities` follow.
 */
@Module({})
export class AppModule {
  static forRoot(config: DemoConfig, kms: DemoKms): DynamicModule {
    const authorities = new ServerAuthorities(config.publicAuthorities);
    return {
      module: AppModule,
      imports: [
        DemoKmsModule.forRoot(kms),
        KmsModule.forRootAsync({
          mapKmsErrors: true,
          inject: [DEMO_KMS],
          // The in-process Kms or the server's: both sign and verify MACs, so the webhook
          // signatures below do not tell them apart. DemoKmsModule closes it.
          useFactory: ({ crypto: kms }: DemoKms) => {
            const verifier = createKmsVerifier({
              kms,
              keyId: WEBHOOK_KEY_ALIAS,
              algorithm: "hmac-sha256",
            });
            return {
              kms,
              signature: {
                keyLookup: (keyId) => (keyId === WEBHOOK_KEY_ID ? verifier : undefined),
                // Every signed route (the webhook receiver, the admin calls) layers its policy
                // over this one: a signature made for another instance is refused here
                // (`components`) rather than accepted once more by this instance's nonces.
                authorities: authorities.list,
              },
              responseSigning: {
                signer: createKmsSigner({
                  kms,
                  keyId: WEBHOOK_KEY_ALIAS,
                  algorithm: "hmac-sha256",
                  publishedKeyId: WEBHOOK_KEY_ID,
                }),
              },
              context: {
                // The clinic DemoAuthGuard authenticated, and only a clinic this demo knows: the
                // default setup would take any tenant the user object names.
                setup: (req) => {
                  const user = req.user as { tenantId?: unknown } | undefined;
                  const tenant = user?.tenantId;
                  if (typeof tenant !== "string" || !config.tenants.tenants.includes(tenant)) {
                    return undefined;
                  }
                  // The default request id is the server's (the client's x-request-id only
                  // with trustRequestIdHeader), the one the webhook guard already used: a
                  // client cannot file its log lines and audit events under another request's id.
                  const context = defaultKmsContext(req);
                  return context?.encryptionContext.tenant === tenant ? context : undefined;
                },
              },
            };
          },
        }),
        TypeOrmModule.forRootAsync({
          inject: [KmsService],
          useFactory: (kms: KmsService): TypeOrmModuleOptions => {
            // One KMS key per clinic, chosen from the value's context (the request's tenant).
            const encryption = fieldEncryption({
              kms: kms.kms,
              keyId: (context) => tenantKeyAlias(context.tenant ?? "-"),
              // A clinic shredded through another instance sharing the data stays readable here
              // while its data keys are cached: bounded by this, not core's 5 minutes.
              cache: { maxAgeMs: config.dataKeyMaxAgeMs ?? DEFAULT_DATA_KEY_MAX_AGE_MS },
            });
            return {
              ...databaseOptions(config),
              entities: [Patient, WebhookEvent, ...encryption.entities],
              subscribers: [encryption.subscriber],
              // Fail at once: the database was reached before Nest started (server.ts), and ten
              // retries three seconds apart would only print ten stack traces.
              toRetry: () => false,
              // Demo only: a real deployment runs migrations.
              synchronize: true,
            };
          },
          dataSourceFactory: async (options) => {
            if (options === undefined) throw new Error("TypeORM options missing");
            const dataSource = await new DataSource(options).initialize();
            retainHandle(dataSource);
            // A misnamed context column fails here, at start, not at a clinic's first request.
            encryptionOf(dataSource).check(dataSource);
            return dataSource;
          },
        }),
        TypeOrmModule.forFeature([Patient, WebhookEvent]),
      ],
      controllers: [PatientsController, WebhooksController, AdminController],
      providers: [
        { provide: DEMO_CONFIG, useValue: config },
        { provide: ServerAuthorities, useValue: authorities },
        { provide: APP_FILTER, useClass: ProblemsFilter },
        TenantKeys,
        PatientsService,
        WebhookSender,
      ],
    };
  }
}
