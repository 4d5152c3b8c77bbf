/**
 * A server behind a reverse proxy that terminates TLS and rewrites Host: the target URI must be
 * the one Express gives the application (`req.protocol`, `req.host`), which honours
 * X-Forwarded-Proto and X-Forwarded-Host only when `trust proxy` trusts the peer. Supertest
 * connects from 127.0.0.1, so `trust proxy: "loopback"` makes it the trusted proxy.
 */
import type { Server } from "node:http";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { signResponse, verifySignature } from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const clientSecret = Buffer.alloc(32, 0x43);
const serverSecret = Buffer.alloc(32, 0x53);
const client = createHmacSigner(clientSecret, { keyId: "client" });
const COMPONENTS: readonly ComponentSpec[] = ["@method", "@target-uri", "@authority", "@scheme"];
const PUBLIC_URL = "https://api.example.com/orders/7?x=1";

async function serve(trustProxy: boolean): Promise<{ server: Server; origin: string }> {
  const app = express();
  if (trustProxy) app.set("trust proxy", "loopback");
  app.use(
    verifySignature({
      keyLookup: (id) => (id === "client" ? createHmacVerifier(clientSecret) : undefined),
      requiredComponents: COMPONENTS,
    }),
  );
  app.use(signResponse({ signer: createHmacSigner(serverSecret, { keyId: "server" }) }));
  app.get("/orders/:id", (req, res) => {
    res.json({ host: req.host, protocol: req.protocol });
  });
  return listen(app);
}

function signed(url: string): Promise<Record<string, string>> {
  return signRequest(
    { method: "GET", url, headers: {} },
    { signer: client, components: COMPONENTS },
  );
}

let trusted: { server: Server; origin: string };
let untrusted: { server: Server; origin: string };

beforeAll(async () => {
  trusted = await serve(true);
  untrusted = await serve(false);
});
afterAll(async () => {
  await close(trusted.server);
  await close(untrusted.server);
});

const PROXIED = { "x-forwarded-host": "api.example.com", "x-forwarded-proto": "https" };

describe("verifySignature behind a reverse proxy", () => {
  it("verifies the URL the client signed when trust proxy trusts the proxy that rewrote Host", async () => {
    const res = await request(trusted.origin)
      .get("/orders/7?x=1")
      .set({ ...(await signed(PUBLIC_URL)), ...PROXIED });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ host: "api.example.com", protocol: "https" });
  });

  it("keeps the port Express 5 includes in req.host", async () => {
    const res = await request(trusted.origin)
      .get("/orders/7?x=1")
      .set({
        ...(await signed("https://api.example.com:8443/orders/7?x=1")),
        ...PROXIED,
        "x-forwarded-host": "api.example.com:8443",
      });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ host: "api.example.com:8443", protocol: "https" });
  });

  it("signs the response for the request's forwarded target (@target-uri;req)", async () => {
    const headers = await signed(PUBLIC_URL);
    const res = await request(trusted.origin)
      .get("/orders/7?x=1")
      .set({ ...headers, ...PROXIED });
    expect(res.status, res.text).toBe(200);
    const result = await verifyMessage(
      {
        status: res.status,
        headers: res.headers as Record<string, string>,
        body: new TextEncoder().encode(res.text),
      },
      {
        keyLookup: (id) => (id === "server" ? createHmacVerifier(serverSecret) : undefined),
        requiredComponents: [{ component: "@target-uri", req: true }],
      },
      { method: "GET", url: PUBLIC_URL, headers: { ...headers, host: "api.example.com" } },
    );
    expect(result).toMatchObject({ ok: true, keyId: "server" });
  });

  it("never lets an untrusted peer choose the authority or scheme with X-Forwarded-*", async () => {
    const forged = await request(untrusted.origin)
      .get("/orders/7?x=1")
      .set({ ...(await signed(PUBLIC_URL)), ...PROXIED });
    expect(forged.status).toBe(401);
    expect(JSON.parse(forged.text).check).toBe("signature");

    // What the connection and Host say still verifies, whatever X-Forwarded-* claims.
    const direct = await request(untrusted.origin)
      .get("/orders/7?x=1")
      .set({ ...(await signed(`${untrusted.origin}/orders/7?x=1`)), ...PROXIED });
    expect(direct.status, direct.text).toBe(200);
    expect(direct.body.protocol).toBe("http");
  });

  // Express trusts only the last hop and answers the first value of a list; a proxy that
  // appends passes the client's own value first. A signature made for another service must not
  // verify here through a forwarded field the client wrote.
  it.each([
    ["an X-Forwarded-Host list", { "x-forwarded-host": "other.example, api.example.com" }],
    [
      "repeated X-Forwarded-Host lines",
      { "x-forwarded-host": ["other.example", "api.example.com"] },
    ],
    ["an X-Forwarded-Proto list", { host: "other.example", "x-forwarded-proto": "https, http" }],
  ])("refuses the derived components when the trusted proxy sent %s", async (_name, fields) => {
    const res = await request(trusted.origin)
      .get("/orders/7?x=1")
      .set({
        "x-forwarded-proto": "https",
        ...(await signed("https://other.example/orders/7?x=1")),
        ...fields,
      });
    expect(res.status, res.text).toBe(401);
    expect(JSON.parse(res.text)).toMatchObject({ check: "components" });
  });

  it("accepts a list whose first entry, the one Express answers, is the proxy's own last one", async () => {
    const res = await request(trusted.origin)
      .get("/orders/7?x=1")
      .set({
        ...(await signed(PUBLIC_URL)),
        ...PROXIED,
        "x-forwarded-host": "api.example.com, api.example.com",
      });
    expect(res.status, res.text).toBe(200);
  });

  // The client's first entry may equal what the connection or Host says: Express then answers
  // a value the client wrote all the same (the proxy's own "https" comes last).
  it.each([
    [
      "an X-Forwarded-Proto list whose first entry is the connection's scheme",
      "http://api.example.com/orders/7?x=1",
      { "x-forwarded-host": "api.example.com", "x-forwarded-proto": "http, https" },
    ],
    [
      "an X-Forwarded-Host list whose first entry is the Host field",
      "https://127.0.0.1/orders/7?x=1",
      { host: "127.0.0.1", "x-forwarded-host": "127.0.0.1, api.example.com" },
    ],
  ])("refuses the derived components for %s", async (_name, url, fields) => {
    const res = await request(trusted.origin)
      .get("/orders/7?x=1")
      .set({ "x-forwarded-proto": "https", ...(await signed(url)), ...fields });
    expect(res.status, res.text).toBe(401);
    expect(JSON.parse(res.text)).toMatchObject({ check: "components" });
  });
});
