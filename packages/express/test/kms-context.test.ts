import type { Server } from "node:http";
import { createKms, currentEncryptionContext, type Kms } from "@kms/core";
import type { Request } from "express";
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  currentKmsContext,
  type KmsContextOptions,
  kmsContext,
  kmsContextOf,
  kmsErrorHandler,
  type RequestKmsContext,
} from "../src/index.ts";
import { close, listen } from "./helpers.ts";

let kms: Kms;
let keyId: string;
let server: Server;
let origin: string;

beforeAll(async () => {
  kms = await createKms();
  keyId = (await kms.createKey({})).keyMetadata.keyId;
  const app = express();
  app.use(express.json());
  // A stand-in for authentication: a bearer "user:tenant" token.
  app.use((req, _res, next) => {
    const auth = req.get("authorization");
    if (auth?.startsWith("Bearer ")) {
      const [id, tenantId] = auth.slice(7).split(":");
      (req as unknown as { user: object }).user = { id, tenantId };
    }
    next();
  });
  app.use(kmsContext({ tenantHeader: "x-tenant-id" }));
  app.get("/context", async (req, res) => {
    await new Promise((resolve) => setTimeout(resolve, 5));
    res.json({ context: currentEncryptionContext(), principal: kmsContextOf(req)?.principal });
  });
  app.post("/secrets", async (req, res) => {
    const { ciphertextBlob } = await kms.encrypt({
      keyId,
      plaintext: new TextEncoder().encode(String(req.body.secret)),
      encryptionContext: currentEncryptionContext() ?? {},
    });
    res.json({ blob: Buffer.from(ciphertextBlob).toString("base64") });
  });
  // No try/catch: the KMS error goes to kmsErrorHandler.
  app.post("/secrets/read", async (req, res) => {
    const { plaintext } = await kms.decrypt({
      ciphertextBlob: new Uint8Array(Buffer.from(String(req.body.blob), "base64")),
      encryptionContext: currentEncryptionContext() ?? {},
    });
    res.json({ secret: new TextDecoder().decode(plaintext) });
  });
  app.use(kmsErrorHandler());
  ({ server, origin } = await listen(app));
});
afterAll(async () => {
  await close(server);
  await kms.close();
});

describe("kmsContext", () => {
  it("exposes the tenant's encryption context across awaits inside the request", async () => {
    const res = await request(origin).get("/context").set("x-tenant-id", "acme");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ context: { tenant: "acme" } });
    expect(res.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("prefers the authenticated user's tenant over the header", async () => {
    const res = await request(origin)
      .get("/context")
      .set("authorization", "Bearer u1:globex")
      .set("x-tenant-id", "acme");
    expect(res.body).toEqual({ context: { tenant: "globex" }, principal: "u1" });
  });

  it("keeps concurrent requests apart", async () => {
    const tenants = Array.from({ length: 20 }, (_, i) => `t${i}`);
    const results = await Promise.all(
      tenants.map((t) => request(origin).get("/context").set("x-tenant-id", t)),
    );
    expect(results.map((r) => r.body.context.tenant)).toEqual(tenants);
  });

  it.each([
    ["missing", undefined],
    ["malformed", "bad tenant!"],
  ])("answers 400 to a %s tenant", async (_n, tenant) => {
    const req = request(origin).get("/context");
    const res = await (tenant === undefined ? req : req.set("x-tenant-id", tenant));
    expect(res.status).toBe(400);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(res.text).type).toBe("https://kms.dev/problems/context/tenant-missing");
  });

  it("tenant A cannot read what tenant B stored, even holding the ciphertext", async () => {
    const stored = await request(origin)
      .post("/secrets")
      .set("x-tenant-id", "tenant-b")
      .send({ secret: "b-only" });
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
    expect(JSON.parse(other.text)).toMatchObject({
      type: "https://kms.dev/problems/kms/InvalidCiphertextException",
      code: "InvalidCiphertextException",
    });
    expect(other.text).not.toContain("b-only");
  });

  // A user store with numeric tenant ids (or a user with tenantId: null) used to fall back to
  // the x-tenant-id header, so the client picked the tenant whose data it could decrypt.
  it.each([
    ["a number", 7],
    ["null", null],
    ["an object", { id: "acme" }],
  ])("refuses a user whose tenantId is %s, whatever the header names", async (_n, tenantId) => {
    let handled = false;
    const app = express();
    app.use((req, _res, next) => {
      (req as unknown as { user: object }).user = { id: "u1", tenantId };
      next();
    });
    app.use(kmsContext({ tenantHeader: "x-tenant-id" }));
    app.get("/context", (_req, res) => {
      handled = true;
      res.json({ context: currentEncryptionContext() });
    });
    const res = await request(app).get("/context").set("x-tenant-id", "acme");
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text).type).toBe("https://kms.dev/problems/context/tenant-missing");
    expect(handled).toBe(false);
  });
});

/** What a handler behind `kmsContext(options)` sees, from the request and from the scope. */
async function seen(
  options: KmsContextOptions,
  headers: Record<string, string>,
  user?: object,
): Promise<{ status: number; body: Record<string, unknown>; requestId: unknown }> {
  const app = express();
  app.use((req, _res, next) => {
    if (user !== undefined) (req as unknown as { user: object }).user = user;
    next();
  });
  app.use(kmsContext(options));
  app.get("/notes/:id", async (req, res) => {
    await new Promise((resolve) => setTimeout(resolve, 1));
    const scoped = currentKmsContext();
    res.json({
      encryptionContext: currentEncryptionContext(),
      principal: scoped?.principal ?? null,
      route: scoped?.route,
      requestId: scoped?.requestId,
      same: scoped === kmsContextOf(req),
    });
  });
  const res = await request(app).get("/notes/7").set(headers);
  return {
    status: res.status,
    body: res.body as Record<string, unknown>,
    requestId: res.headers["x-request-id"],
  };
}

describe("kmsContext: where the tenant comes from", () => {
  // Any client can send x-tenant-id: trusted by default, it let an unauthenticated caller pick
  // the tenant whose data the request decrypts.
  it("ignores a tenant header unless tenantHeader is configured", async () => {
    const res = await seen({}, { "x-tenant-id": "acme" });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({
      type: "https://kms.dev/problems/context/tenant-missing",
      detail: "the request names no valid tenant (an authenticated user)",
    });
  });

  it("takes the tenant from the configured header, under the configured key", async () => {
    const options = { tenantHeader: "x-org", tenantKey: "org" };
    const res = await seen(options, { "x-org": "acme", "x-tenant-id": "globex" });
    expect(res.status).toBe(200);
    expect(res.body.encryptionContext).toEqual({ org: "acme" });
    const refused = await seen(options, { "x-tenant-id": "globex" });
    expect(refused.status).toBe(400);
    expect(refused.body.detail).toBe(
      "the request names no valid tenant (header x-org or an authenticated user)",
    );
  });

  it("takes the tenant and principal of an authenticated user, principal from sub too", async () => {
    expect((await seen({}, {}, { id: "u1", tenantId: "acme" })).body).toMatchObject({
      encryptionContext: { tenant: "acme" },
      principal: "u1",
    });
    expect((await seen({}, {}, { sub: "svc-7", tenantId: "acme" })).body).toMatchObject({
      principal: "svc-7",
    });
    expect((await seen({}, {}, { tenantId: "acme" })).body).toMatchObject({ principal: null });
  });
});

describe("kmsContext: a custom resolve", () => {
  it("puts what it returns in the request, the scope and the x-request-id header", async () => {
    const resolve = async (req: Request): Promise<RequestKmsContext> => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      return {
        encryptionContext: { tenant: String(req.get("x-gateway-tenant")), region: "eu" },
        principal: "gateway",
        route: "notes.read",
        requestId: "gw-1",
      };
    };
    const res = await seen({ resolve }, { "x-gateway-tenant": "acme", "x-request-id": "ignored" });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      encryptionContext: { tenant: "acme", region: "eu" },
      principal: "gateway",
      route: "notes.read",
      requestId: "gw-1",
      same: true,
    });
    expect(res.requestId).toBe("gw-1");
  });
});

describe("kmsContext: route and request id", () => {
  const user = { id: "u1", tenantId: "acme" };

  it("reports the matched route pattern, not the path with its ids, as Nest does", async () => {
    expect((await seen({}, {}, user)).body.route).toBe("GET /notes/:id");
  });

  it("reports the pattern under a router, and the path where no route matched", async () => {
    const routes: string[] = [];
    const app = express();
    app.use((req, _res, next) => {
      (req as unknown as { user: object }).user = user;
      next();
    });
    app.use(kmsContext());
    const api = express.Router();
    api.get("/orders/:orderId", (_req, res) => {
      routes.push(currentKmsContext()?.route ?? "");
      res.end();
    });
    app.use("/api", api);
    app.use((req, res) => {
      routes.push(kmsContextOf(req)?.route ?? "");
      res.sendStatus(404);
    });
    await request(app).get("/api/orders/42");
    await request(app).get("/nowhere/42");
    expect(routes).toEqual(["GET /api/orders/:orderId", "GET /nowhere/42"]);
  });

  it("echoes a well-formed x-request-id and replaces any other with a UUID", async () => {
    const echoed = await seen({}, { "x-request-id": "req_1.a-b" }, user);
    expect(echoed.body.requestId).toBe("req_1.a-b");
    expect(echoed.requestId).toBe("req_1.a-b");
    for (const bad of ["has space", "a".repeat(129), "semi;colon"]) {
      const replaced = await seen({}, { "x-request-id": bad }, user);
      expect(replaced.body.requestId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-/);
      expect(replaced.requestId).toBe(replaced.body.requestId);
    }
  });

  it("leaves no context outside the request", async () => {
    await seen({}, {}, user);
    expect(currentKmsContext()).toBeUndefined();
    expect(currentEncryptionContext()).toBeUndefined();
  });
});
