/**
 * The request id `kmsContext` computes reaches the audit events of KMS calls the field engine
 * makes while the request is handled: the handler passes no call options.
 */
import type { Server } from "node:http";
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
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kmsContext, kmsErrorHandler } from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const BODY: FieldSpec = { type: "string" };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let kms: Kms;
let sink: MemoryAuditSink;
let engine: FieldEncryptionEngine;
let server: Server;
let origin: string;
const rows = new Map<number, string>();

/** The audit events (name, request id) recorded while `run` ran. */
async function eventsOf(run: () => Promise<unknown>) {
  const before = sink.events.length;
  await run();
  return sink.events.slice(before).map((e) => ({ eventName: e.eventName, requestID: e.requestID }));
}

const binding = () => ({ model: "Note", field: "body", context: currentEncryptionContext() ?? {} });

beforeAll(async () => {
  sink = new MemoryAuditSink();
  kms = await createKms({ audit: sink });
  const { keyId } = (await kms.createKey({})).keyMetadata;
  engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
  const app = express();
  app.use(express.json());
  app.use((req, _res, next) => {
    (req as unknown as { user: object }).user = { id: "u1", tenantId: String(req.get("x-t")) };
    next();
  });
  app.use(kmsContext());
  app.post("/notes", async (req, res) => {
    const stored = await engine.encryptText(binding(), BODY, String(req.body.body));
    rows.set(rows.size + 1, stored);
    res.status(201).json({ id: rows.size });
  });
  app.get("/notes/:id", async (req, res) => {
    // A hop through the event loop, as a database driver makes.
    await new Promise((resolve) => setTimeout(resolve, 1));
    const stored = rows.get(Number(req.params.id)) ?? "";
    res.json({ body: await engine.decryptText(binding(), BODY, stored) });
  });
  app.use(kmsErrorHandler({ log: () => {} }));
  ({ server, origin } = await listen(app));
});
afterAll(async () => {
  await close(server);
  await kms.close();
});

describe("kmsContext: the request id in the audit trail", () => {
  it("tags the field engine's GenerateDataKey and Decrypt with the request's x-request-id", async () => {
    let id = 0;
    const written = await eventsOf(async () => {
      const res = await request(origin)
        .post("/notes")
        .set({ "x-t": "acme", "x-request-id": "req-123" })
        .send({ body: "secret" });
      expect(res.status).toBe(201);
      expect(res.headers["x-request-id"]).toBe("req-123");
      id = res.body.id as number;
    });
    expect(written).toEqual([{ eventName: "GenerateDataKey", requestID: "req-123" }]);
    engine.clearCache();
    const read = await eventsOf(async () => {
      const res = await request(origin)
        .get(`/notes/${id}`)
        .set({ "x-t": "acme", "x-request-id": "req-456" });
      expect(res.body).toEqual({ body: "secret" });
    });
    expect(read).toEqual([{ eventName: "Decrypt", requestID: "req-456" }]);
  });

  it("without x-request-id, the events carry the id the response names", async () => {
    let echoed: unknown;
    const events = await eventsOf(async () => {
      const res = await request(origin).post("/notes").set({ "x-t": "globex" }).send({ body: "b" });
      echoed = res.headers["x-request-id"];
    });
    expect(echoed).toMatch(UUID);
    expect(events).toEqual([{ eventName: "GenerateDataKey", requestID: echoed }]);
  });

  it("leaves no request id outside the request", async () => {
    await request(origin).post("/notes").set({ "x-t": "acme", "x-request-id": "req-9" }).send({});
    expect(currentRequestId()).toBeUndefined();
  });

  it("refuses a resolved context whose request id is not a string, before any handler", async () => {
    let ran = false;
    const app = express();
    app.use(
      kmsContext({
        resolve: () => ({
          encryptionContext: { tenant: "acme" },
          principal: undefined,
          route: "GET /",
          requestId: 42 as unknown as string,
        }),
      }),
    );
    app.get("/", (_req, res) => {
      ran = true;
      res.end();
    });
    app.use(kmsErrorHandler({ log: () => {} }));
    const res = await request(app).get("/");
    expect(res.status).toBe(500);
    expect(res.headers["x-request-id"]).toBeUndefined();
    expect(ran).toBe(false);
  });
});
