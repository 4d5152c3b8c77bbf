// The README's examples, run as written (plus a client), so the documentation cannot rot.
import "reflect-metadata";
import { createKms, currentEncryptionContext, type Kms } from "@kms/core";
import {
  createKmsSigner,
  createKmsVerifier,
  createSignedFetch,
  verifyMessage,
} from "@kms/http-signatures";
import { retainSqliteHandle, retainSqliteStatements } from "@kms/keystore-sqlite";
import { readmeDrift } from "@kms/tooling/readme";
import { EncryptedColumn, encryptionOf, fieldEncryption } from "@kms/typeorm";
import {
  Body,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Inject,
  Injectable,
  Module,
  NotFoundException,
  Param,
  ParseIntPipe,
  Post,
} from "@nestjs/common";
import { APP_GUARD, APP_INTERCEPTOR, NestFactory } from "@nestjs/core";
import { InjectRepository, TypeOrmModule, type TypeOrmModuleOptions } from "@nestjs/typeorm";
import request from "supertest";
import { Column, DataSource, Entity, PrimaryGeneratedColumn, type Repository } from "typeorm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EncryptionContext,
  KmsContextInterceptor,
  KmsModule,
  KmsService,
  RequireSignature,
  SignResponse,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

// better-sqlite3 12 on Node >= 24.19 aborts when a statement is collected at the wrong moment
// (see retainSqliteStatements in @kms/keystore-sqlite); TypeORM's driver leaves statements to it.
retainSqliteStatements();

let hmacKeyId = "";
let sharedKms: Kms;
// The README names its public host[:port]s; here the one the app listens on, once it does.
const ownAuthorities: string[] = [];

@Controller("orders")
class OrdersController {
  constructor(@Inject(KmsService) private readonly kms: KmsService) {}

  @Post()
  // The partner's signature must cover x-tenant-id: the tenant is one the partner named.
  @RequireSignature({
    requiredComponents: ["@method", "@target-uri", "x-tenant-id"],
    contentDigest: "required",
  })
  @SignResponse()
  async create(@Body() body: { note: string }, @EncryptionContext() context: object) {
    const { ciphertextBlob } = await this.kms.kms.encrypt({
      keyId: "alias/orders",
      plaintext: new TextEncoder().encode(body.note),
      encryptionContext: currentEncryptionContext() ?? {},
    });
    return { stored: ciphertextBlob.length, context };
  }
}

@Module({
  imports: [
    KmsModule.forRootAsync({
      mapKmsErrors: true,
      useFactory: async () => {
        const kms = await createKms();
        const { keyId } = (
          await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
        ).keyMetadata;
        const orders = (await kms.createKey({})).keyMetadata.keyId;
        await kms.createAlias({ aliasName: "alias/orders", targetKeyId: orders });
        sharedKms = kms;
        hmacKeyId = keyId;
        return {
          kms,
          closeOnDestroy: true,
          signature: {
            keyLookup: (id, { kms }) =>
              id === "partner-a"
                ? createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" })
                : undefined,
            authorities: ownAuthorities,
          },
          responseSigning: {
            signer: createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" }),
          },
          // Opt in to the client-written header: every route here requires a signature over it.
          context: { tenantHeader: "x-tenant-id" },
        };
      },
    }),
  ],
  controllers: [OrdersController],
  providers: [{ provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor }],
})
class AppModule {}

let app: INestApplication;
let origin: string;

beforeAll(async () => {
  app = await NestFactory.create(AppModule, { rawBody: true, logger: false });
  origin = await listen(app);
  ownAuthorities.push(new URL(origin).host);
});
afterAll(() => app.close());

it("runs the README example end to end with a signing client", async () => {
  let sentHeaders = new Headers();
  const signedFetch = createSignedFetch({
    signer: createKmsSigner({
      kms: sharedKms,
      keyId: hmacKeyId,
      algorithm: "hmac-sha256",
      publishedKeyId: "partner-a",
    }),
    nonce: true,
    components: ["@method", "@target-uri", "content-digest", "content-type", "x-tenant-id"],
    fetch: (input, init) => {
      sentHeaders = new Headers(init?.headers);
      return fetch(input, init);
    },
  });
  const url = `${origin}/orders`;
  const init = {
    method: "POST",
    headers: { "content-type": "application/json", "x-tenant-id": "acme" },
    body: '{"note":"hi"}',
  };
  const res = await signedFetch(url, init);
  const text = await res.text();
  expect(res.status).toBe(201);
  expect(JSON.parse(text)).toMatchObject({ context: { tenant: "acme" } });

  // The response verifies with the server's key, bound to the request that was sent.
  sentHeaders.set("host", new URL(url).host);
  const response = {
    status: res.status,
    headers: res.headers,
    body: new TextEncoder().encode(text),
  };
  const policy = {
    keyLookup: () =>
      createKmsVerifier({ kms: sharedKms, keyId: hmacKeyId, algorithm: "hmac-sha256" }),
    contentDigest: "required" as const,
    requiredComponents: [{ component: "signature", key: "sig1", req: true }],
  };
  expect(
    await verifyMessage(response, policy, { method: "POST", url, headers: sentHeaders }),
  ).toMatchObject({
    ok: true,
  });

  // An unsigned request is refused before the handler.
  const unsigned = await fetch(url, init);
  expect(unsigned.status).toBe(401);
  expect(unsigned.headers.get("content-type")).toMatch(/^application\/problem\+json/);

  // So is one whose signature leaves the tenant header out: the client could change it.
  const uncovered = createSignedFetch({
    signer: createKmsSigner({
      kms: sharedKms,
      keyId: hmacKeyId,
      algorithm: "hmac-sha256",
      publishedKeyId: "partner-a",
    }),
    nonce: true,
  });
  const tenantUnsigned = await uncovered(url, init);
  expect(tenantUnsigned.status).toBe(401);
  expect(JSON.parse(await tenantUnsigned.text())).toMatchObject({
    type: "https://kms.dev/problems/signature/components",
  });
});

it("is the README's examples: a line changed on one side only fails here", () => {
  const drift = readmeDrift({
    readme: new URL("../README.md", import.meta.url),
    test: new URL(import.meta.url),
    pkg: "@kms/nestjs",
    blocks: 2,
    adapted: [
      // The authority the test listens on; Nest's logger off, and a free loopback port
      // (test/helpers.ts) instead of 3000.
      'authorities: ["api.example.com", "api.example.com:8443"], // this server\'s host[:port]s',
      "const app = await NestFactory.create(AppModule, { rawBody: true });",
      "await app.listen(3000);",
    ],
  });
  expect(drift).toEqual([]);
});

// "With TypeORM": the README's second example.

/** Stands in for the app's authentication: a bearer "user:tenant" token becomes req.user. */
@Injectable()
class AuthGuard implements CanActivate {
  canActivate(execution: ExecutionContext): boolean {
    const req = execution
      .switchToHttp()
      .getRequest<{ headers: Record<string, string | undefined>; user?: object }>();
    const auth = req.headers.authorization;
    if (auth?.startsWith("Bearer ")) {
      const [id, tenantId] = auth.slice(7).split(":");
      req.user = { id, tenantId };
    }
    return true;
  }
}

@Entity()
class Note {
  @PrimaryGeneratedColumn() id!: number;
  @Column() tenantId!: string;
  @EncryptedColumn({ context: { fromScope: ["tenant"] } }) text!: string;
}

@Controller("notes")
class NotesController {
  constructor(@InjectRepository(Note) private readonly notes: Repository<Note>) {}

  @Post()
  async create(@Body() body: { text: string }, @EncryptionContext() context: { tenant: string }) {
    const note = Object.assign(new Note(), { tenantId: context.tenant, text: body.text });
    return { id: (await this.notes.save(note)).id };
  }

  @Get()
  list(@EncryptionContext() context: { tenant: string }) {
    return this.notes.findBy({ tenantId: context.tenant });
  }

  @Get(":id")
  async read(@Param("id", ParseIntPipe) id: number) {
    const note = await this.notes.findOneBy({ id });
    if (note === null) throw new NotFoundException();
    return note;
  }
}

const kms = await createKms();
const { keyId } = (await kms.createKey({ description: "notes" })).keyMetadata;

@Module({
  imports: [
    KmsModule.forRoot({ kms, mapKmsErrors: true }),
    TypeOrmModule.forRootAsync({
      inject: [KmsService],
      useFactory: (service: KmsService): TypeOrmModuleOptions => {
        const encryption = fieldEncryption({ kms: service.kms, keyId });
        return {
          type: "better-sqlite3",
          database: ":memory:",
          entities: [Note, ...encryption.entities],
          subscribers: [encryption.subscriber],
          synchronize: true,
        };
      },
      dataSourceFactory: async (options) => {
        if (options === undefined) throw new Error("TypeORM options missing");
        const dataSource = await new DataSource(options).initialize();
        encryptionOf(dataSource).check(dataSource);
        return dataSource;
      },
    }),
    TypeOrmModule.forFeature([Note]),
  ],
  controllers: [NotesController],
  providers: [
    { provide: APP_GUARD, useClass: AuthGuard },
    { provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor },
  ],
})
class NotesModule {}

/** What better-sqlite3 holds, read past TypeORM and its subscriber. */
function storedNotes(dataSource: DataSource): { tenantId: string; text: string }[] {
  const db = (
    dataSource.driver as unknown as {
      databaseConnection: { prepare(sql: string): { all(): unknown[] } };
    }
  ).databaseConnection;
  return db.prepare('SELECT "tenantId", "text" FROM "note" ORDER BY "id"').all() as {
    tenantId: string;
    text: string;
  }[];
}

describe("the README's TypeORM example", () => {
  let notesApp: INestApplication;
  let notes: string;
  const as = (tenant: string) => ({ authorization: `Bearer ${tenant}-user:${tenant}` });

  beforeAll(async () => {
    notesApp = await NestFactory.create(NotesModule, { logger: false });
    retainSqliteHandle(notesApp.get(DataSource));
    notes = `${await listen(notesApp)}/notes`;
  });
  afterAll(async () => {
    await notesApp?.close();
    await kms.close();
  });

  it("reads a tenant's rows decrypted and refuses another tenant's row with 403 problem+json", async () => {
    const write = async (tenant: string, text: string): Promise<number> => {
      const res = await request(notes).post("").set(as(tenant)).send({ text });
      expect(res.status).toBe(201);
      return (res.body as { id: number }).id;
    };
    await write("tenant-a", "a's first note");
    await write("tenant-a", "a's second note");
    const bRow = await write("tenant-b", "b's private note");

    // Stored encrypted: the database holds no plaintext.
    const stored = storedNotes(notesApp.get(DataSource));
    expect(stored.map((row) => row.tenantId)).toEqual(["tenant-a", "tenant-a", "tenant-b"]);
    for (const row of stored) {
      expect(row.text).toMatch(/^kms1:/);
      expect(row.text).not.toContain("note");
    }

    const listed = await request(notes).get("").set(as("tenant-a"));
    expect(listed.status).toBe(200);
    expect((listed.body as Note[]).map((note) => note.text)).toEqual([
      "a's first note",
      "a's second note",
    ]);

    const own = await request(notes).get(`/${bRow}`).set(as("tenant-b"));
    expect(own.status).toBe(200);
    expect(own.body).toMatchObject({ tenantId: "tenant-b", text: "b's private note" });

    const other = await request(notes).get(`/${bRow}`).set(as("tenant-a"));
    expect(other.status).toBe(403);
    expect(other.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(other.text)).toMatchObject({
      type: "https://kms.dev/problems/kms/InvalidCiphertextException",
      status: 403,
      code: "InvalidCiphertextException",
    });
    expect(other.text).not.toContain("private");
    expect(other.text).not.toContain(stored[2]?.text);
  });

  it("names the tenant only through authentication: x-tenant-id alone is refused", async () => {
    const res = await request(notes).get("").set("x-tenant-id", "tenant-a");
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/context/tenant-missing",
    });
  });
});
