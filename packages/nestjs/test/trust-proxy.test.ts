/**
 * A Nest app behind a reverse proxy that terminates TLS and rewrites Host: the target URI must
 * be the one Express gives the application (`req.protocol`, `req.host`), which honours
 * X-Forwarded-Proto and X-Forwarded-Host only when `trust proxy` trusts the peer. Supertest
 * connects from 127.0.0.1, so `trust proxy: "loopback"` makes it the trusted proxy.
 */
import "reflect-metadata";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { Controller, Get, type INestApplication, Req } from "@nestjs/common";
import type { NestExpressApplication } from "@nestjs/platform-express";
import { Test } from "@nestjs/testing";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KmsModule, RequireSignature, SignResponse } from "../src/index.ts";
import { listen } from "./helpers.ts";

const clientSecret = Buffer.alloc(32, 0x43);
const serverSecret = Buffer.alloc(32, 0x53);
const client = createHmacSigner(clientSecret, { keyId: "client" });
const COMPONENTS: readonly ComponentSpec[] = ["@method", "@target-uri", "@authority", "@scheme"];
const PUBLIC_URL = "https://api.example.com/orders/7?x=1";
const PROXIED = { "x-forwarded-host": "api.example.com", "x-forwarded-proto": "https" };

@Controller("orders")
class OrdersController {
  @Get(":id")
  @RequireSignature()
  @SignResponse()
  get(@Req() req: { host: string; protocol: string }): unknown {
    return { host: req.host, protocol: req.protocol };
  }

  @Get()
  @SignResponse()
  list(): string {
    return "orders";
  }
}

async function serve(trustProxy: boolean): Promise<{ app: INestApplication; origin: string }> {
  const moduleRef = await Test.createTestingModule({
    imports: [
      KmsModule.forRoot({
        signature: {
          keyLookup: (id) => (id === "client" ? createHmacVerifier(clientSecret) : undefined),
          requiredComponents: COMPONENTS,
          nonceStore: false,
        },
        responseSigning: { signer: createHmacSigner(serverSecret, { keyId: "server" }) },
      }),
    ],
    controllers: [OrdersController],
  }).compile();
  const app = moduleRef.createNestApplication<NestExpressApplication>();
  if (trustProxy) app.set("trust proxy", "loopback");
  return { app, origin: await listen(app) };
}

function signed(url: string): Promise<Record<string, string>> {
  return signRequest(
    { method: "GET", url, headers: {} },
    { signer: client, components: COMPONENTS },
  );
}

let trusted: { app: INestApplication; origin: string };
let untrusted: { app: INestApplication; origin: string };

beforeAll(async () => {
  trusted = await serve(true);
  untrusted = await serve(false);
});
afterAll(async () => {
  await trusted.app.close();
  await untrusted.app.close();
});

describe("SignatureGuard behind a reverse proxy (Express trust proxy)", () => {
  it("verifies the URL the client signed exactly when trust proxy trusts the proxy", async () => {
    const res = await request(trusted.origin)
      .get("/orders/7?x=1")
      .set({ ...(await signed(PUBLIC_URL)), ...PROXIED });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toEqual({ host: "api.example.com", protocol: "https" });

    // An untrusted peer cannot choose the authority or scheme with X-Forwarded-*.
    const forged = await request(untrusted.origin)
      .get("/orders/7?x=1")
      .set({ ...(await signed(PUBLIC_URL)), ...PROXIED });
    expect(forged.status).toBe(401);
    expect(JSON.parse(forged.text).check).toBe("signature");
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

  // Express trusts only the last hop but answers a list's first value; a proxy that appends
  // passes the client's own value first. A signature the client made for another service, or
  // for https where the proxy saw http, must not verify through a value the client wrote.
  it.each([
    [
      "an X-Forwarded-Host list",
      "https://other.example/orders/7?x=1",
      { "x-forwarded-host": "other.example, api.example.com" },
    ],
    [
      "repeated X-Forwarded-Host lines",
      "https://other.example/orders/7?x=1",
      { "x-forwarded-host": ["other.example", "api.example.com"] },
    ],
    [
      "an X-Forwarded-Proto list",
      "https://api.example.com/orders/7?x=1",
      { host: "api.example.com", "x-forwarded-proto": "https, http" },
    ],
  ])(
    "refuses the derived components when the trusted proxy sent %s",
    async (_name, url, fields) => {
      const res = await request(trusted.origin)
        .get("/orders/7?x=1")
        .set({ "x-forwarded-proto": "https", ...(await signed(url)), ...fields });
      expect(res.status, res.text).toBe(401);
      expect(JSON.parse(res.text)).toMatchObject({ check: "components" });
    },
  );

  // Express answers the first entry even when it repeats the connection's scheme or the Host
  // field; the proxy's own value, last, is then not what the target is built from.
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

  it("accepts a list whose last entry, the one the trusted proxy appended, Express answers", async () => {
    const res = await request(trusted.origin)
      .get("/orders/7?x=1")
      .set({
        ...(await signed(PUBLIC_URL)),
        ...PROXIED,
        "x-forwarded-host": "api.example.com, api.example.com",
      });
    expect(res.status, res.text).toBe(200);
  });

  it("answers 500 response-signing rather than sign for a target a client chose", async () => {
    const res = await request(trusted.origin)
      .get("/orders")
      .set({ ...PROXIED, "x-forwarded-host": "other.example, api.example.com" });
    expect(res.status, res.text).toBe(500);
    expect(JSON.parse(res.text)).toMatchObject({
      type: "https://kms.dev/problems/signature/response-signing",
    });
    expect(res.headers.signature).toBeUndefined();
  });
});
