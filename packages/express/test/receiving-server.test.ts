/**
 * What a request says about the server it was sent to, and what the server answers when the
 * request or its infrastructure gives little: the authorities the server answers to, HTTP/1.0
 * health checks without Host under app-wide response signing, and a nonce store that does not
 * answer.
 */
import { randomBytes } from "node:crypto";
import type { Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import {
  createHmacSigner,
  createHmacVerifier,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { RedisNonceStore } from "@kms/http-signatures/redis";
import express from "express";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kmsContext, signResponse, verifySignature } from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "partner" });
const keyLookup = (id: string) => (id === "partner" ? createHmacVerifier(secret) : undefined);

/** Sends `head` (request line and fields) on a raw connection; answers the raw response. */
function raw(port: number, head: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = "";
    const socket = connect(port, "127.0.0.1", () => socket.write(`${head.join("\r\n")}\r\n\r\n`));
    socket.on("data", (chunk: Buffer) => {
      out += chunk.toString("latin1");
    });
    socket.on("end", () => resolve(out));
    socket.on("error", reject);
  });
}

const portOf = (server: Server) => (server.address() as AddressInfo).port;

// A signature made for another service that shares the key, on the same path: the client names
// that service in Host, and the derived @target-uri is what it signed.
describe("verifySignature with authorities", () => {
  let server: Server;
  const handled: string[] = [];

  beforeAll(async () => {
    const app = express();
    const authorities: string[] = [];
    app.use(verifySignature({ keyLookup, authorities }));
    app.delete("/orders/7", (req, res) => {
      handled.push(String(req.host));
      res.json({ deleted: 7 });
    });
    ({ server } = await listen(app));
    authorities.push(`127.0.0.1:${portOf(server)}`);
  });
  afterAll(() => close(server));

  async function send(signedFor: string, host: string): Promise<string> {
    const added = await signRequest(
      { method: "DELETE", url: `${signedFor}/orders/7` },
      { signer, nonce: true },
    );
    return raw(portOf(server), [
      "DELETE /orders/7 HTTP/1.1",
      `Host: ${host}`,
      "Connection: close",
      `Signature-Input: ${added["signature-input"]}`,
      `Signature: ${added.signature}`,
    ]);
  }

  it("refuses a signature for another authority sent with that authority as Host", async () => {
    const response = await send("http://localhost", "localhost");
    expect(response).toMatch(/^HTTP\/1\.1 401 /);
    expect(response).toContain("/signature/components");
    expect(response).toContain("not one this server answers to");
    expect(handled).toEqual([]);
  });

  it("accepts a signature for an authority it lists", async () => {
    const own = `127.0.0.1:${portOf(server)}`;
    const response = await send(`http://${own}`, own);
    expect(response).toMatch(/^HTTP\/1\.1 200 /);
    expect(handled).toEqual([own]);
  });
});

// HAProxy's default `option httpchk` sends "GET /health HTTP/1.0" without Host.
describe("app-wide signResponse and an HTTP/1.0 request without Host", () => {
  let server: Server;
  const serverSecret = randomBytes(32);

  beforeAll(async () => {
    const app = express();
    app.use(signResponse({ signer: createHmacSigner(serverSecret, { keyId: "srv" }) }));
    app.get("/health", (_req, res) => {
      res.send("ok");
    });
    ({ server } = await listen(app));
  });
  afterAll(() => close(server));

  it("answers a signed 200 bound to the request's method, path and query", async () => {
    const response = await raw(portOf(server), ["GET /health HTTP/1.0"]);
    expect(response).toMatch(/^HTTP\/1\.1 200 /);
    const [head = "", body = ""] = response.split("\r\n\r\n");
    expect(body).toBe("ok");
    const headers: Record<string, string> = {};
    for (const line of head.split("\r\n").slice(1)) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    expect(headers["signature-input"]).toContain('"@method";req "@path";req "@query";req');
    // What the health checker asked: no authority, so none is claimed for it.
    const asked = { method: "GET", url: "http://unknown.invalid/health", headers: {} };
    const verified = await verifyMessage(
      { status: 200, headers, body: new TextEncoder().encode(body) },
      {
        keyLookup: () => createHmacVerifier(serverSecret),
        nonceStore: false,
        requiredComponents: ["@status", { component: "@path", req: true }],
      },
      asked,
    );
    expect(verified).toMatchObject({ ok: true });
  });
});

// node-redis queues commands while it reconnects: the SET of a nonce neither answers nor fails.
describe("verifySignature with a Redis nonce store that does not answer", () => {
  let server: Server;
  let origin: string;

  beforeAll(async () => {
    const app = express();
    const neverAnswers = { set: () => new Promise<string | null>(() => {}) };
    app.use(
      verifySignature({
        keyLookup,
        nonceStore: new RedisNonceStore(neverAnswers, { timeoutMs: 20 }),
      }),
    );
    app.get("/x", (_req, res) => {
      res.json({ ok: 1 });
    });
    ({ server, origin } = await listen(app));
  });
  afterAll(() => close(server));

  it("answers 500 rather than accepting the request or leaving it hanging", async () => {
    const url = `${origin}/x`;
    const added = await signRequest({ method: "GET", url }, { signer, nonce: true });
    const res = await fetch(url, { headers: added });
    expect(res.status).toBe(500);
    expect(await res.text()).not.toContain('"ok"');
  });
});

describe("trustRequestIdHeader on kmsContext but not on verifySignature", () => {
  it("keeps the id verification used, and warns once", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error & { code?: string }) => {
      if (warning.code === "KMS_REQUEST_ID_TRUST_MISMATCH") warnings.push(warning.message);
    };
    process.on("warning", onWarning);
    const app = express();
    app.use(verifySignature({ keyLookup }));
    app.use(kmsContext({ tenantHeader: "x-t", trustRequestIdHeader: true }));
    app.get("/x", (_req, res) => {
      res.json({ ok: 1 });
    });
    const { server, origin } = await listen(app);
    try {
      for (let i = 0; i < 2; i++) {
        const url = `${origin}/x`;
        const headers = { "x-t": "acme", "x-request-id": "req-42" };
        // The tenant header is covered: kmsContext refuses a tenant the signature leaves out.
        const added = await signRequest(
          { method: "GET", url, headers },
          { signer, nonce: true, components: ["@method", "@target-uri", "x-t"] },
        );
        const res = await fetch(url, { headers: { ...headers, ...added } });
        expect(res.status).toBe(200);
        expect(res.headers.get("x-request-id")).not.toBe("req-42");
      }
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/same trustRequestIdHeader/);
    } finally {
      process.off("warning", onWarning);
      await close(server);
    }
  });
});
