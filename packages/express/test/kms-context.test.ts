import type { Server } from "node:http";
import { createKms, currentEncryptionContext, InvalidCiphertextError, type Kms } from "@kms/core";
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kmsContext, kmsContextOf } from "../src/index.ts";
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
  app.use(kmsContext());
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
  app.post("/secrets/read", async (req, res) => {
    try {
      const { plaintext } = await kms.decrypt({
        ciphertextBlob: new Uint8Array(Buffer.from(String(req.body.blob), "base64")),
        encryptionContext: currentEncryptionContext() ?? {},
      });
      res.json({ secret: new TextDecoder().decode(plaintext) });
    } catch (error) {
      if (!(error instanceof InvalidCiphertextError)) throw error;
      res
        .status(403)
        .type("application/problem+json")
        .send(
          JSON.stringify({ status: 403, title: "Not readable in this tenant", detail: error.code }),
        );
    }
  });
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
    expect(JSON.parse(other.text)).toMatchObject({ detail: "InvalidCiphertextException" });
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
    app.use(kmsContext());
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
