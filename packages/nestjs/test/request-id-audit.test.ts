/**
 * The request id `KmsContextInterceptor` computes reaches the audit events of KMS calls the
 * field engine makes while the request is handled — in the handler, and in an Observable it
 * returns that does its work only once subscribed — with no call options passed by hand.
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
import { KmsContextInterceptor, KmsModule } from "../src/index.ts";
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
): Promise<{ id: number; echoed: unknown }> {
  const req = request(origin).post("/notes").set("x-tenant-id", tenant);
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
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({ kms, mapKmsErrors: true, context: { tenantHeader: "x-tenant-id" } }),
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
  it("tags the field engine's GenerateDataKey and Decrypt with the request's x-request-id", async () => {
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
