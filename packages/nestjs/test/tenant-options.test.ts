// The tenant options of KmsContextInterceptor's default setup, over HTTP: the header is read only
// when `tenantHeader` names it, and the tenant is bound under `tenantKey`.
import "reflect-metadata";
import {
  type EncryptionContext as Context,
  createKms,
  currentEncryptionContext,
  type Kms,
} from "@kms/core";
import {
  type CanActivate,
  Controller,
  type ExecutionContext,
  Get,
  type INestApplication,
  Injectable,
} from "@nestjs/common";
import { APP_GUARD, APP_INTERCEPTOR } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  EncryptionContext,
  KmsContextInterceptor,
  KmsModule,
  type KmsModuleOptions,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

/** Stand-in authentication: a bearer "user:tenant" token becomes req.user. */
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

let handled = 0;

@Controller()
class ContextController {
  @Get("context")
  context(@EncryptionContext() param: Context | undefined): object {
    handled++;
    return { param, ambient: currentEncryptionContext() };
  }
}

let kms: Kms;

/** `forRootAsync({ useClass })`: Nest calls the class's `create()`. */
@Injectable()
class KmsConfig {
  create(): KmsModuleOptions {
    return { kms, context: { tenantHeader: "x-org", tenantKey: "org" } };
  }
}

async function serve(
  imports: NonNullable<Parameters<typeof Test.createTestingModule>[0]["imports"]>,
) {
  const moduleRef = await Test.createTestingModule({
    imports,
    controllers: [ContextController],
    providers: [
      { provide: APP_GUARD, useClass: BearerGuard },
      { provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor },
    ],
  }).compile();
  const app = moduleRef.createNestApplication({ logger: false });
  return { app, origin: await listen(app) };
}

let byDefault: { app: INestApplication; origin: string };
let configured: { app: INestApplication; origin: string };

beforeAll(async () => {
  kms = await createKms();
  byDefault = await serve([KmsModule.forRoot({ kms })]);
  configured = await serve([KmsModule.forRootAsync({ useClass: KmsConfig })]);
});
afterAll(async () => {
  await byDefault?.app.close();
  await configured?.app.close();
  await kms?.close();
});

describe("without tenantHeader (the default)", () => {
  it("refuses a request that names its tenant only in x-tenant-id, before the handler", async () => {
    const before = handled;
    const res = await request(byDefault.origin).get("/context").set("x-tenant-id", "acme");
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/context/tenant-missing",
      detail: "the request names no valid tenant (an authenticated user)",
    });
    expect(handled).toBe(before);
  });

  it("takes the tenant from the authenticated user", async () => {
    const res = await request(byDefault.origin)
      .get("/context")
      .set("authorization", "Bearer u1:globex")
      .set("x-tenant-id", "acme");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ param: { tenant: "globex" }, ambient: { tenant: "globex" } });
  });
});

describe("with tenantHeader and tenantKey, through forRootAsync({ useClass })", () => {
  it("reads the tenant from the configured header and binds it under the tenantKey", async () => {
    const res = await request(configured.origin).get("/context").set("x-org", "acme");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ param: { org: "acme" }, ambient: { org: "acme" } });
  });

  it("ignores x-tenant-id, and names the configured header when the tenant is missing", async () => {
    const res = await request(configured.origin).get("/context").set("x-tenant-id", "acme");
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/context/tenant-missing",
      detail: "the request names no valid tenant (header x-org or an authenticated user)",
    });
  });

  it("prefers the authenticated user's tenant over the configured header", async () => {
    const res = await request(configured.origin)
      .get("/context")
      .set("authorization", "Bearer u1:globex")
      .set("x-org", "acme");
    expect(res.body).toEqual({ param: { org: "globex" }, ambient: { org: "globex" } });
  });

  it("refuses a malformed tenant in the configured header", async () => {
    const res = await request(configured.origin).get("/context").set("x-org", "bad tenant!");
    expect(res.status).toBe(400);
  });
});
