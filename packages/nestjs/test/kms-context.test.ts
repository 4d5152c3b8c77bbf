import "reflect-metadata";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type EncryptionContext as Context,
  createKms,
  currentEncryptionContext,
  type Kms,
} from "@kms/core";
import {
  Body,
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Inject,
  Injectable,
  Post,
} from "@nestjs/common";
import { APP_GUARD, APP_INTERCEPTOR } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import { map, type Observable, timer } from "rxjs";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EncryptionContext,
  KmsContextInterceptor,
  KmsModule,
  KmsPrincipal,
  KmsService,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

/** A stand-in for authentication: a bearer "user:tenant" token becomes req.user. */
@Injectable()
class BearerGuard implements CanActivate {
  canActivate(execution: ExecutionContext): boolean {
    const req = execution
      .switchToHttp()
      .getRequest<{ headers: Record<string, string>; user?: object }>();
    const auth = req.headers.authorization;
    if (auth?.startsWith("Bearer ")) {
      const [id, tenantId] = auth.slice(7).split(":");
      req.user = { id, tenantId };
    }
    return true;
  }
}

/** Stands in for an ORM repository: several awaits before it reads the ambient context. */
@Injectable()
class SecretsRepository {
  readonly #kms: KmsService;
  keyId = "";

  constructor(@Inject(KmsService) kms: KmsService) {
    this.#kms = kms;
  }

  async contextSeenByQuery(delayMs: number): Promise<Context | undefined> {
    await sleep(delayMs);
    await new Promise((resolve) => setImmediate(resolve));
    return currentEncryptionContext();
  }

  async save(secret: string): Promise<string> {
    await sleep(1);
    const { ciphertextBlob } = await this.#kms.kms.encrypt(
      {
        keyId: this.keyId,
        plaintext: new TextEncoder().encode(secret),
        encryptionContext: currentEncryptionContext() ?? {},
      },
      this.#kms.callOptions(),
    );
    return Buffer.from(ciphertextBlob).toString("base64");
  }

  async read(blob: string): Promise<string> {
    await sleep(1);
    const { plaintext } = await this.#kms.kms.decrypt(
      {
        ciphertextBlob: new Uint8Array(Buffer.from(blob, "base64")),
        encryptionContext: currentEncryptionContext() ?? {},
      },
      this.#kms.callOptions(),
    );
    return new TextDecoder().decode(plaintext);
  }
}

@Controller()
class TenantController {
  readonly #repo: SecretsRepository;
  readonly #kms: KmsService;

  constructor(
    @Inject(SecretsRepository) repo: SecretsRepository,
    @Inject(KmsService) kms: KmsService,
  ) {
    this.#repo = repo;
    this.#kms = kms;
  }

  @Get("context")
  async context(
    @EncryptionContext() param: Context | undefined,
    @KmsPrincipal() principal: string | undefined,
  ): Promise<unknown> {
    const atStart = currentEncryptionContext();
    const delay = Math.floor(Math.random() * 15);
    const inQuery = await this.#repo.contextSeenByQuery(delay);
    return {
      param,
      principal: principal ?? null,
      atStart,
      inQuery,
      afterAwait: currentEncryptionContext(),
      callOptions: this.#kms.callOptions(),
    };
  }

  @Get("observable")
  observable(): Observable<unknown> {
    return timer(5).pipe(map(() => ({ context: currentEncryptionContext() })));
  }

  @Post("secrets")
  async store(@Body() body: { secret: string }): Promise<{ blob: string }> {
    return { blob: await this.#repo.save(body.secret) };
  }

  @Post("secrets/read")
  async read(@Body() body: { blob: string }): Promise<{ secret: string }> {
    return { secret: await this.#repo.read(body.blob) };
  }
}

let app: INestApplication;
let origin: string;
let kms: Kms;

beforeAll(async () => {
  kms = await createKms();
  const moduleRef = await Test.createTestingModule({
    // No authentication in these tests: the client names its tenant (opt-in).
    imports: [
      KmsModule.forRoot({ kms, mapKmsErrors: true, context: { tenantHeader: "x-tenant-id" } }),
    ],
    controllers: [TenantController],
    providers: [
      SecretsRepository,
      { provide: APP_GUARD, useClass: BearerGuard },
      { provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor },
    ],
  }).compile();
  moduleRef.get(SecretsRepository).keyId = (await kms.createKey({})).keyMetadata.keyId;
  app = moduleRef.createNestApplication();
  origin = await listen(app);
});
afterAll(async () => {
  await app.close();
  await kms.close();
});

describe("KmsContextInterceptor", () => {
  it("runs the handler and its awaited calls inside the tenant's encryption context", async () => {
    const res = await request(origin)
      .get("/context")
      .set("x-tenant-id", "acme")
      .set("x-request-id", "req-42");
    expect(res.status).toBe(200);
    // The server chose the request id: the client's is not trusted by default.
    const requestId = res.headers["x-request-id"];
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.body).toEqual({
      param: { tenant: "acme" },
      principal: null,
      atStart: { tenant: "acme" },
      inQuery: { tenant: "acme" },
      afterAwait: { tenant: "acme" },
      callOptions: { requestId },
    });
  });

  it("generates a request id when the client sends a malformed one", async () => {
    const res = await request(origin)
      .get("/context")
      .set("x-tenant-id", "acme")
      .set("x-request-id", "bad id!");
    expect(res.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("prefers the authenticated user's tenant over the header, and names the principal", async () => {
    const res = await request(origin)
      .get("/context")
      .set("authorization", "Bearer u1:globex")
      .set("x-tenant-id", "acme");
    expect(res.body).toMatchObject({
      param: { tenant: "globex" },
      inQuery: { tenant: "globex" },
      principal: "u1",
      callOptions: { principal: "u1" },
    });
  });

  it("keeps the context inside an Observable-returning handler", async () => {
    const res = await request(origin).get("/observable").set("x-tenant-id", "acme");
    expect(res.body).toEqual({ context: { tenant: "acme" } });
  });

  it("keeps concurrent requests of two tenants apart, across awaits", async () => {
    const tenants = Array.from({ length: 30 }, (_, i) => (i % 2 === 0 ? "tenant-a" : "tenant-b"));
    const results = await Promise.all(
      tenants.map((t) => request(origin).get("/context").set("x-tenant-id", t)),
    );
    for (const [i, res] of results.entries()) {
      const expected = { tenant: tenants[i] };
      expect(res.body).toMatchObject({ param: expected, atStart: expected, inQuery: expected });
      expect(res.body.afterAwait).toEqual(expected);
    }
  });

  it.each([
    ["missing", undefined],
    ["malformed", "bad tenant!"],
  ])("answers 400 problem+json to a %s tenant", async (_name, tenant) => {
    const req = request(origin).get("/context");
    const res = await (tenant === undefined ? req : req.set("x-tenant-id", tenant));
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/context/tenant-missing",
      status: 400,
    });
  });

  it("tenant A cannot decrypt tenant B's ciphertext, and the API says so clearly", async () => {
    const stored = await request(origin)
      .post("/secrets")
      .set("x-tenant-id", "tenant-b")
      .send({ secret: "b-only" });
    expect(stored.status).toBe(201);
    const blob = stored.body.blob as string;

    const own = await request(origin)
      .post("/secrets/read")
      .set("x-tenant-id", "tenant-b")
      .send({ blob });
    expect(own.body).toEqual({ secret: "b-only" });

    const other = await request(origin)
      .post("/secrets/read")
      .set("x-tenant-id", "tenant-a")
      .send({ blob });
    expect(other.status).toBe(403);
    expect(other.headers["content-type"]).toMatch(/^application\/problem\+json/);
    const problem = JSON.parse(other.text);
    expect(problem).toMatchObject({
      type: "https://kms.dev/problems/kms/InvalidCiphertextException",
      status: 403,
      code: "InvalidCiphertextException",
    });
    expect(problem.detail).toContain("cannot be decrypted in this request's encryption context");
    expect(other.text).not.toContain("b-only");
  });

  it("answers a KMS client error with its status (unknown key → 404)", async () => {
    const repo = app.get(SecretsRepository);
    const keyId = repo.keyId;
    repo.keyId = "00000000-0000-4000-8000-000000000000";
    try {
      const res = await request(origin)
        .post("/secrets")
        .set("x-tenant-id", "acme")
        .send({ secret: "x" });
      expect(res.status).toBe(404);
      expect(JSON.parse(res.text)).toMatchObject({ code: "NotFoundException" });
    } finally {
      repo.keyId = keyId;
    }
  });
});
