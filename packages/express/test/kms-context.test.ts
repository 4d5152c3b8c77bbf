import type { Server } from "node:http";
import { createKms, currentEncryptionContext, type Kms } from "@kms/core";
import type { Request } from "express";
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  currentKmsContext,
  defaultKmsContext,
  type KmsContextOptions,
  kmsContext,
  kmsContextOf,
  kmsErrorHandler,
  type RequestKmsContext,
  routePattern,
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

  it("reports the pattern under a router, and no part of the path where no route matched", async () => {
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
    expect(routes).toEqual(["GET /api/orders/:orderId", "GET /*"]);
  });

  // The id files the request's KMS audit events: a client must not choose it unless trusted.
  it("chooses the request id itself by default, whatever x-request-id the client sends", async () => {
    const ids = new Set<string>();
    for (const sent of ["req_1.a-b", "req_1.a-b", "has space"]) {
      const res = await seen({}, { "x-request-id": sent }, user);
      expect(res.body.requestId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-/);
      expect(res.requestId).toBe(res.body.requestId);
      ids.add(res.body.requestId as string);
    }
    expect(ids.size).toBe(3);
  });

  it("with trustRequestIdHeader, echoes a well-formed x-request-id and replaces any other", async () => {
    const trusting = { trustRequestIdHeader: true };
    const echoed = await seen(trusting, { "x-request-id": "req_1.a-b" }, user);
    expect(echoed.body.requestId).toBe("req_1.a-b");
    expect(echoed.requestId).toBe("req_1.a-b");
    for (const bad of ["has space", "a".repeat(129), "semi;colon"]) {
      const replaced = await seen(trusting, { "x-request-id": bad }, user);
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

// A resolver that takes the tenant from the application's own authentication used to have to
// spread defaultKmsContext(req) — copying the route before routing, `GET /*` — or
// write the route-pattern getter itself.
describe("kmsContext: a resolver of your own, with the route pattern", () => {
  const user = { id: "u1", tenantId: "acme" };

  it("passes what it knows to defaultKmsContext, and route stays the pattern", async () => {
    const resolve = (req: Request) =>
      defaultKmsContext(req, {
        tenant: req.get("x-authenticated-org"),
        principal: "svc-notes",
        encryptionContext: { region: "eu" },
        requestId: "own-1",
      });
    const res = await seen({ resolve }, { "x-authenticated-org": "acme", "x-request-id": "x-9" });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      encryptionContext: { region: "eu", tenant: "acme" },
      principal: "svc-notes",
      route: "GET /notes/:id",
      requestId: "own-1",
      same: true,
    });
    expect(res.requestId).toBe("own-1");
  });

  it("keeps the other defaults: tenantKey, the principal of req.user, a trusted x-request-id", async () => {
    const resolve = (req: Request) =>
      defaultKmsContext(req, { tenant: "globex", tenantKey: "org", trustRequestIdHeader: true });
    const res = await seen({ resolve }, { "x-request-id": "req-7" }, user);
    expect(res.body).toEqual({
      encryptionContext: { org: "globex" },
      principal: "u1",
      route: "GET /notes/:id",
      requestId: "req-7",
      same: true,
    });
  });

  it("binds the given tenant, never one from req.user, the header or encryptionContext", async () => {
    const resolve = (req: Request) =>
      defaultKmsContext(req, {
        tenant: "globex",
        tenantHeader: "x-tenant-id",
        encryptionContext: { tenant: "acme", region: "eu" },
      });
    const res = await seen({ resolve }, { "x-tenant-id": "initech" }, user);
    expect(res.body.encryptionContext).toEqual({ tenant: "globex", region: "eu" });
  });

  // `tenant: auth?.org` is undefined for a request the application did not authenticate: that
  // must refuse it, not fall back to a tenant the client can name.
  it.each([
    ["undefined", undefined],
    ["malformed", "bad tenant!"],
    ["empty", ""],
  ])("refuses the request when the given tenant is %s", async (_n, tenant) => {
    let called = 0;
    const resolve = (req: Request) => {
      called++;
      return defaultKmsContext(req, { tenant, tenantHeader: "x-tenant-id" });
    };
    const res = await seen({ resolve }, { "x-tenant-id": "acme" }, user);
    expect(called).toBe(1);
    expect(res.status).toBe(400);
    expect(res.body.type).toBe("https://kms.dev/problems/context/tenant-missing");
  });

  it("reports no principal when told so, whatever req.user says", async () => {
    const resolve = (req: Request) =>
      defaultKmsContext(req, { tenant: "acme", principal: undefined });
    expect((await seen({ resolve }, {}, user)).body.principal).toBeNull();
  });

  it("still accepts kmsContext's options, as before", async () => {
    const options: KmsContextOptions = { tenantHeader: "x-org", tenantKey: "org" };
    const resolve = (req: Request) => defaultKmsContext(req, options);
    const res = await seen({ resolve }, { "x-org": "acme" });
    expect(res.body).toMatchObject({ encryptionContext: { org: "acme" }, route: "GET /notes/:id" });
  });

  it("takes no tenant from kmsContext's own options, only from a resolver", async () => {
    // Untyped callers (or an object shared with a resolver) can pass defaultKmsContext's options
    // to kmsContext: they must not give every request one tenant.
    const shared = { tenant: "acme", tenantHeader: "x-org" } as KmsContextOptions;
    expect((await seen(shared, {})).status).toBe(400);
    expect((await seen(shared, { "x-org": "globex" })).body.encryptionContext).toEqual({
      tenant: "globex",
    });
  });

  it("copies the route before routing when it spreads defaultKmsContext(req), as documented", async () => {
    const resolve = (req: Request) => {
      const context = defaultKmsContext(req);
      return context && { ...context, principal: "svc-notes" };
    };
    const res = await seen({ resolve }, {}, user);
    expect(res.body).toMatchObject({ principal: "svc-notes", route: "GET /*" });
  });

  it("reports the pattern through routePattern read in a getter, GET /* read at once", async () => {
    const lazy = (req: Request): RequestKmsContext => ({
      encryptionContext: { tenant: "acme" },
      principal: undefined,
      get route() {
        return routePattern(req);
      },
      requestId: "own-2",
    });
    const eager = (req: Request): RequestKmsContext => ({ ...lazy(req), route: routePattern(req) });
    expect((await seen({ resolve: lazy }, {})).body.route).toBe("GET /notes/:id");
    expect((await seen({ resolve: eager }, {})).body.route).toBe("GET /*");
  });
});

describe("routePattern", () => {
  it("keeps a router's mount path once read inside it, for error handlers after the router", async () => {
    const seenRoutes: string[] = [];
    const app = express();
    const api = express.Router();
    api.get("/orders/:orderId", (req) => {
      seenRoutes.push(routePattern(req));
      throw new Error("boom");
    });
    app.use("/api", api);
    app.use((_error: unknown, req: Request, res: express.Response, _next: express.NextFunction) => {
      seenRoutes.push(routePattern(req));
      res.sendStatus(500);
    });
    expect((await request(app).get("/api/orders/42")).status).toBe(500);
    expect(seenRoutes).toEqual(["GET /api/orders/:orderId", "GET /api/orders/:orderId"]);
  });

  // The path would carry the ids and addresses the pattern keeps out of the audit trail.
  it("is METHOD /*, no part of the path, before routing and where no route matched", async () => {
    const seenRoutes: string[] = [];
    const app = express();
    app.use("/api", (req, _res, next) => {
      seenRoutes.push(routePattern(req));
      next();
    });
    app.use((req, res) => {
      seenRoutes.push(routePattern(req));
      res.sendStatus(404);
    });
    await request(app).post("/api/orders/42");
    expect(seenRoutes).toEqual(["POST /*", "POST /*"]);
  });
});
