/**
 * The request id `KmsContextInterceptor` computes reaches the audit events of KMS calls the
 * field engine makes while the request is handled — in the handler, and in an Observable it
 * returns that does its work only once subscribed — with no call options passed by hand. The
 * server chooses it (the client's x-request-id only with `trustRequestIdHeader`), and the
 * guard's verification and the response signing are audited under the same id.
 */
import "reflect-metadata";
import {
  createKms,
  currentEncryptionContext,
  currentRequestId,
  FieldEncryptionEngine,
  type FieldSpec,
  type Kms,
  MemoryAuditSink,
  MemoryDataKeyStore,
} from "@kms/core";
import { createKmsSigner, createKmsVerifier, signRequest } from "@kms/http-signatures";
import {
  Body,
  Controller,
  Get,
  type INestApplication,
  Param,
  Post,
  UseInterceptors,
} from "@nestjs/common";
import { APP_INTERCEPTOR } from "@nestjs/core";
import { Test } from "@nestjs/testing";
import { defer, type Observable, switchMap, timer } from "rxjs";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  KmsContextInterceptor,
  KmsModule,
  type KmsModuleOptions,
  RequireSignature,
  SignResponse,
} from "../src/index.ts";
import { listen } from "./helpers.ts";

const BODY: FieldSpec = { type: "string" };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let kms: Kms;
let sink: MemoryAuditSink;
let engine: FieldEncryptionEngine;
let app: INestApplication;
let origin: string;
const rows = new Map<number, string>();

const binding = () => ({ model: "Note", field: "body", context: currentEncryptionContext() ?? {} });

@Controller("notes")
class NotesController {
  @Post()
  async create(@Body() body: { body: string }): Promise<{ id: number }> {
    rows.set(rows.size + 1, await engine.encryptText(binding(), BODY, String(body.body)));
    return { id: rows.size };
  }

  @Get(":id")
  async read(@Param("id") id: string): Promise<{ body: unknown }> {
    // A hop through the event loop, as a database driver makes.
    await new Promise((resolve) => setTimeout(resolve, 1));
    return { body: await engine.decryptText(binding(), BODY, rows.get(Number(id)) ?? "") };
  }

  /** Nothing runs before Nest subscribes, and the decryption only after a timer. */
  @Get(":id/later")
  later(@Param("id") id: string): Observable<{ body: unknown }> {
    return defer(() => timer(5)).pipe(
      switchMap(async () => ({
        body: await engine.decryptText(binding(), BODY, rows.get(Number(id)) ?? ""),
      })),
    );
  }
}

/** The audit events (name, request id) recorded while `run` ran. */
async function eventsOf(run: () => Promise<unknown>) {
  const before = sink.events.length;
  await run();
  return sink.events.slice(before).map((e) => ({ eventName: e.eventName, requestID: e.requestID }));
}

async function create(
  tenant: string,
  requestId?: string,
  at = origin,
): Promise<{ id: number; echoed: unknown }> {
  const req = request(at).post("/notes").set("x-tenant-id", tenant);
  const res = await (requestId === undefined ? req : req.set("x-request-id", requestId)).send({
    body: "secret",
  });
  expect(res.status).toBe(201);
  return { id: res.body.id as number, echoed: res.headers["x-request-id"] };
}

beforeAll(async () => {
  sink = new MemoryAuditSink();
  kms = await createKms({ audit: sink });
  const { keyId } = (await kms.createKey({})).keyMetadata;
  engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
  // These tests follow the client's id through the request, so the module trusts it.
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        kms,
        mapKmsErrors: true,
        context: { tenantHeader: "x-tenant-id", trustRequestIdHeader: true },
      }),
    ],
    controllers: [NotesController],
    providers: [{ provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor }],
  }).compile();
  app = moduleRef.createNestApplication();
  origin = await listen(app);
});
afterAll(async () => {
  await app.close();
  await kms.close();
});

describe("KmsContextInterceptor: the request id in the audit trail", () => {
  it("with trustRequestIdHeader, tags the field engine's calls with the client's x-request-id", async () => {
    let id = 0;
    const written = await eventsOf(async () => {
      const created = await create("acme", "req-123");
      expect(created.echoed).toBe("req-123");
      id = created.id;
    });
    expect(written).toEqual([{ eventName: "GenerateDataKey", requestID: "req-123" }]);
    engine.clearCache();
    const read = await eventsOf(async () => {
      const res = await request(origin)
        .get(`/notes/${id}`)
        .set({ "x-tenant-id": "acme", "x-request-id": "req-456" });
      expect(res.body).toEqual({ body: "secret" });
    });
    expect(read).toEqual([{ eventName: "Decrypt", requestID: "req-456" }]);
  });

  it("also inside an Observable the handler returns, subscribed to after the handler", async () => {
    const { id } = await create("initech");
    engine.clearCache();
    const read = await eventsOf(async () => {
      const res = await request(origin)
        .get(`/notes/${id}/later`)
        .set({ "x-tenant-id": "initech", "x-request-id": "req-later" });
      expect(res.body).toEqual({ body: "secret" });
    });
    expect(read).toEqual([{ eventName: "Decrypt", requestID: "req-later" }]);
  });

  it("without x-request-id, the events carry the id the response names", async () => {
    let echoed: unknown;
    const events = await eventsOf(async () => {
      echoed = (await create("globex")).echoed;
    });
    expect(echoed).toMatch(UUID);
    expect(events).toEqual([{ eventName: "GenerateDataKey", requestID: echoed }]);
    expect(currentRequestId()).toBeUndefined();
  });
});

describe("KmsContextInterceptor: by default the server chooses the request id", () => {
  it("ignores the client's x-request-id: the events carry the id the response names", async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({
          kms,
          closeOnDestroy: false,
          context: { tenantHeader: "x-tenant-id" },
        }),
      ],
      controllers: [NotesController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor }],
    }).compile();
    const untrusting = moduleRef.createNestApplication({ logger: false });
    try {
      const at = await listen(untrusting);
      let echoed: unknown;
      const events = await eventsOf(async () => {
        echoed = (await create("umbrella", "req-123", at)).echoed;
      });
      expect(echoed).toMatch(UUID);
      expect(events).toEqual([{ eventName: "GenerateDataKey", requestID: echoed }]);
    } finally {
      await untrusting.close();
    }
  });
});

// The guard runs before the interceptor, and Nest writes the reply after the handler's scope:
// the verification's VerifyMac and the response's GenerateMac once had ids of their own.
describe("SignatureGuard and @SignResponse: their KMS calls carry the request's id", () => {
  let macKeyId: string;

  @Controller("signed")
  class SignedController {
    @Get()
    @RequireSignature({ requiredComponents: ["@method", "@target-uri", "x-tenant-id"] })
    @SignResponse()
    signed(): { ok: number } {
      return { ok: 1 };
    }
  }

  async function signedApp(context: KmsModuleOptions["context"]) {
    macKeyId = (await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" }))
      .keyMetadata.keyId;
    const keyId = macKeyId;
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({
          kms,
          closeOnDestroy: false,
          responseSigning: { signer: createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" }) },
          signature: {
            keyLookup: (id) =>
              id === "partner"
                ? createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" })
                : undefined,
          },
          ...(context === undefined ? {} : { context }),
        }),
      ],
      controllers: [SignedController],
      providers: [{ provide: APP_INTERCEPTOR, useClass: KmsContextInterceptor }],
    }).compile();
    const nest = moduleRef.createNestApplication({ logger: false });
    return { nest, at: await listen(nest) };
  }

  /** A signed GET; the server's audit events (not the client's own signing). */
  async function signedGet(at: string, headers: Record<string, string>, method = "GET") {
    const url = `${at}/signed`;
    const signer = createKmsSigner({
      kms,
      keyId: macKeyId,
      algorithm: "hmac-sha256",
      publishedKeyId: "partner",
    });
    const added = await signRequest(
      { method: "GET", url, headers },
      { signer, nonce: true, components: ["@method", "@target-uri", "x-tenant-id"] },
    );
    const before = sink.events.length;
    const res = await fetch(url, { method, headers: { ...headers, ...added } });
    await res.text();
    const events = sink.events.slice(before).map((e) => `${e.eventName}:${e.requestID}`);
    return { res, events };
  }

  it("VerifyMac and GenerateMac are audited under the id the response names", async () => {
    const { nest, at } = await signedApp({ tenantHeader: "x-tenant-id" });
    try {
      const { res, events } = await signedGet(at, { "x-tenant-id": "acme", "x-request-id": "r-1" });
      expect(res.status).toBe(200);
      const echoed = res.headers.get("x-request-id");
      expect(echoed).toMatch(UUID);
      expect(events).toEqual([`VerifyMac:${echoed}`, `GenerateMac:${echoed}`]);

      // Refused by the guard: its VerifyMac carries the id the 401 names.
      const refused = await signedGet(at, { "x-tenant-id": "acme" }, "HEAD");
      expect(refused.res.status).toBe(401);
      const refusedId = refused.res.headers.get("x-request-id");
      expect(refusedId).toMatch(UUID);
      expect(refused.events).toEqual([`VerifyMac:${refusedId}`]);
    } finally {
      await nest.close();
    }
  });

  it("with trustRequestIdHeader, the client's id", async () => {
    const { nest, at } = await signedApp({
      tenantHeader: "x-tenant-id",
      trustRequestIdHeader: true,
    });
    try {
      const { res, events } = await signedGet(at, {
        "x-tenant-id": "acme",
        "x-request-id": "req-42",
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("x-request-id")).toBe("req-42");
      expect(events).toEqual(["VerifyMac:req-42", "GenerateMac:req-42"]);
    } finally {
      await nest.close();
    }
  });

  it("a request without a KMS context: the response is signed under the guard's id", async () => {
    // No tenant header configured: the request has no context, and `required: false` lets the
    // handler run without one.
    const { nest, at } = await signedApp({ required: false });
    try {
      const { res, events } = await signedGet(at, { "x-tenant-id": "acme" });
      expect(res.status).toBe(200);
      expect(res.headers.get("signature")).not.toBeNull();
      const echoed = res.headers.get("x-request-id");
      expect(echoed).toMatch(UUID);
      expect(events).toEqual([`VerifyMac:${echoed}`, `GenerateMac:${echoed}`]);
    } finally {
      await nest.close();
    }
  });
});

describe("KmsContextInterceptor: a setup whose request id is not a string", () => {
  it("is refused with 500 before the handler runs", async () => {
    let ran = false;
    @Controller()
    @UseInterceptors(KmsContextInterceptor)
    class Probe {
      @Get()
      probe(): string {
        ran = true;
        return "ran";
      }
    }
    const moduleRef = await Test.createTestingModule({
      imports: [
        KmsModule.forRoot({
          kms,
          closeOnDestroy: false,
          mapKmsErrors: true,
          context: {
            setup: () => ({
              encryptionContext: { tenant: "acme" },
              principal: undefined,
              route: "GET /",
              requestId: 42 as unknown as string,
            }),
          },
        }),
      ],
      controllers: [Probe],
    }).compile();
    const probeApp = moduleRef.createNestApplication({ logger: false });
    try {
      const res = await request(await listen(probeApp)).get("/");
      expect(res.status).toBe(500);
      expect(res.headers["x-request-id"]).toBeUndefined();
      expect(ran).toBe(false);
    } finally {
      await probeApp.close();
    }
  });
});
