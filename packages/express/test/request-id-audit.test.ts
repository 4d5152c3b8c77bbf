/**
 * The request id `kmsContext` computes reaches the audit events of KMS calls the field engine
 * makes while the request is handled: the handler passes no call options. The server chooses
 * it; the client's x-request-id only with `trustRequestIdHeader`. `verifySignature`'s and
 * `signResponse`'s KMS calls carry the same id.
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
import { createKmsSigner, createKmsVerifier, signRequest } from "@kms/http-signatures";
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type KmsContextOptions,
  kmsContext,
  kmsErrorHandler,
  signResponse,
  verifySignature,
} from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const BODY: FieldSpec = { type: "string" };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let kms: Kms;
let sink: MemoryAuditSink;
let engine: FieldEncryptionEngine;
let server: Server;
let origin: string;
let trustingServer: Server;
let trustingOrigin: string;
const rows = new Map<number, string>();

/** The audit events (name, request id) recorded while `run` ran. */
async function eventsOf(run: () => Promise<unknown>) {
  const before = sink.events.length;
  await run();
  return sink.events.slice(before).map((e) => ({ eventName: e.eventName, requestID: e.requestID }));
}

const binding = () => ({ model: "Note", field: "body", context: currentEncryptionContext() ?? {} });

function notesApp(options: KmsContextOptions) {
  const app = express();
  app.use(express.json());
  app.use((req, _res, next) => {
    (req as unknown as { user: object }).user = { id: "u1", tenantId: String(req.get("x-t")) };
    next();
  });
  app.use(kmsContext(options));
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
  return app;
}

beforeAll(async () => {
  sink = new MemoryAuditSink();
  kms = await createKms({ audit: sink });
  const { keyId } = (await kms.createKey({})).keyMetadata;
  engine = new FieldEncryptionEngine({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
  ({ server, origin } = await listen(notesApp({})));
  ({ server: trustingServer, origin: trustingOrigin } = await listen(
    notesApp({ trustRequestIdHeader: true }),
  ));
});
afterAll(async () => {
  await close(server);
  await close(trustingServer);
  await kms.close();
});

describe("kmsContext: the request id in the audit trail", () => {
  it("with trustRequestIdHeader, tags the field engine's calls with the client's x-request-id", async () => {
    let id = 0;
    const written = await eventsOf(async () => {
      const res = await request(trustingOrigin)
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
      const res = await request(trustingOrigin)
        .get(`/notes/${id}`)
        .set({ "x-t": "acme", "x-request-id": "req-456" });
      expect(res.body).toEqual({ body: "secret" });
    });
    expect(read).toEqual([{ eventName: "Decrypt", requestID: "req-456" }]);
  });

  // A tenant each: a cached data key makes no call.
  it.each([
    ["without x-request-id", "globex", {}],
    [
      "by default, whatever x-request-id the client sends",
      "initech",
      { "x-request-id": "req-123" },
    ],
  ])(
    "%s, the events carry the id the server chose and the response names",
    async (_, tenant, sent) => {
      let echoed: unknown;
      const events = await eventsOf(async () => {
        const res = await request(origin)
          .post("/notes")
          .set({ "x-t": tenant, ...sent })
          .send({ body: "b" });
        echoed = res.headers["x-request-id"];
      });
      expect(echoed).toMatch(UUID);
      expect(events).toEqual([{ eventName: "GenerateDataKey", requestID: echoed }]);
    },
  );

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

// README order: verifySignature → signResponse → kmsContext. verifySignature runs before
// kmsContext's scope, so its KMS call (VerifyMac) once had an id of its own.
describe("verifySignature and signResponse: their KMS calls carry the request's id", () => {
  let signedServer: Server;
  let signedOrigin: string;
  let macKeyId: string;

  async function app(trustRequestIdHeader: boolean) {
    const { keyId } = (
      await kms.createKey({ keySpec: "HMAC_256", keyUsage: "GENERATE_VERIFY_MAC" })
    ).keyMetadata;
    macKeyId = keyId;
    const signed = express();
    signed.use(
      verifySignature({
        keyLookup: (id) =>
          id === "partner"
            ? createKmsVerifier({ kms, keyId, algorithm: "hmac-sha256" })
            : undefined,
        trustRequestIdHeader,
      }),
    );
    signed.use(signResponse({ signer: createKmsSigner({ kms, keyId, algorithm: "hmac-sha256" }) }));
    signed.use(kmsContext({ tenantHeader: "x-t", trustRequestIdHeader }));
    signed.get("/x", (_req, res) => {
      res.json({ ok: 1 });
    });
    return listen(signed);
  }

  afterAll(async () => {
    if (signedServer !== undefined) await close(signedServer);
  });

  async function signedGet(headers: Record<string, string>) {
    const url = `${signedOrigin}/x`;
    const signer = createKmsSigner({
      kms,
      keyId: macKeyId,
      algorithm: "hmac-sha256",
      publishedKeyId: "partner",
    });
    // The tenant header is covered: kmsContext refuses a tenant the signature leaves out.
    const added = await signRequest(
      { method: "GET", url, headers },
      { signer, nonce: true, components: ["@method", "@target-uri", "x-t"] },
    );
    // The client's own signing is audited too; only the server's calls are looked at.
    const before = sink.events.length;
    const res = await fetch(url, { headers: { ...headers, ...added } });
    await res.text();
    const events = sink.events
      .slice(before)
      .map((e) => ({ eventName: e.eventName, requestID: e.requestID }));
    return { res, events };
  }

  it("VerifyMac and GenerateMac are audited under the id the response names", async () => {
    ({ server: signedServer, origin: signedOrigin } = await app(false));
    const { res, events } = await signedGet({ "x-t": "acme", "x-request-id": "req-42" });
    expect(res.status).toBe(200);
    const echoed = res.headers.get("x-request-id");
    expect(echoed).toMatch(UUID);
    expect(events).toEqual([
      { eventName: "VerifyMac", requestID: echoed },
      { eventName: "GenerateMac", requestID: echoed },
    ]);
  });

  it("a refused request's VerifyMac carries the id its 401 names", async () => {
    const url = `${signedOrigin}/x`;
    const signer = createKmsSigner({
      kms,
      keyId: macKeyId,
      algorithm: "hmac-sha256",
      publishedKeyId: "partner",
    });
    const added = await signRequest({ method: "GET", url }, { signer, nonce: true });
    const before = sink.events.length;
    // The signature covers GET; sent as HEAD, it fails.
    const res = await fetch(url, { method: "HEAD", headers: added });
    expect(res.status).toBe(401);
    const echoed = res.headers.get("x-request-id");
    expect(echoed).toMatch(UUID);
    expect(sink.events.slice(before).map((e) => `${e.eventName}:${e.requestID}`)).toEqual([
      `VerifyMac:${echoed}`,
    ]);
  });

  it("with trustRequestIdHeader on both, the client's id", async () => {
    await close(signedServer);
    ({ server: signedServer, origin: signedOrigin } = await app(true));
    const { res, events } = await signedGet({ "x-t": "acme", "x-request-id": "req-42" });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe("req-42");
    expect(events).toEqual([
      { eventName: "VerifyMac", requestID: "req-42" },
      { eventName: "GenerateMac", requestID: "req-42" },
    ]);
  });
});
