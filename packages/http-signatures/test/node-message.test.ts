import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ValidationError } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  nodeRequestMessage,
  responseSigningProblem,
  signatureProblem,
  signMessage,
  signNodeResponse,
  verifyMessage,
} from "../src/index.ts";

describe("nodeRequestMessage", () => {
  it("rebuilds the target URI from protocol, Host and the original URL", () => {
    const message = nodeRequestMessage({
      method: "POST",
      url: "/inner?a=1",
      originalUrl: "/mounted/inner?a=1",
      protocol: "https",
      headers: { host: "api.example" },
      headersDistinct: { host: ["api.example"], "x-a": ["1", "2"] },
    });
    expect(message.url).toBe("https://api.example/mounted/inner?a=1");
    expect(message.headers).toEqual({ host: ["api.example"], "x-a": ["1", "2"] });
  });

  it("falls back to the socket for the scheme and to url without originalUrl", () => {
    const tls = nodeRequestMessage({
      url: "/x",
      headers: { host: "h" },
      socket: { encrypted: true },
    });
    expect(tls).toMatchObject({ method: "GET", url: "https://h/x" });
  });

  // HTTP/1.0 without Host: the placeholder authority must not be signable or verifiable.
  it("names no authority for a request without Host", async () => {
    const message = nodeRequestMessage({ method: "GET", url: "/x", headers: {} });
    const signer = createHmacSigner(new Uint8Array(32).fill(1), { keyId: "k" });
    await expect(signMessage(message, { signer, components: ["@target-uri"] })).rejects.toThrow(
      /no Host header/,
    );
    await expect(signMessage(message, { signer, components: ["@authority"] })).rejects.toThrow(
      /no Host header/,
    );
    const { base } = await signMessage(message, { signer, components: ["@method", "@path"] });
    expect(base).toContain('"@path": /x\n');
  });
});

describe("problem bodies", () => {
  it("names the failed check in type and check", () => {
    expect(
      signatureProblem({ ok: false, check: "replay", detail: "nonce was already used" }),
    ).toEqual({
      type: "https://kms.dev/problems/signature/replay",
      title: "HTTP message signature rejected",
      status: 401,
      detail: "nonce was already used",
      check: "replay",
    });
  });

  it("shows only ValidationError messages for signing failures", () => {
    expect(responseSigningProblem(new Error("secret internals")).detail).toBe("the signer failed");
    expect(responseSigningProblem(new ValidationError('"label" bad')).detail).toBe('"label" bad');
  });
});

/**
 * A node:http server on a free port for the enclosing describe block, handling requests with
 * `handle`: its origin, and the request it got last.
 */
function serveForBlock(handle: (req: IncomingMessage, res: ServerResponse) => void): {
  readonly origin: string;
  readonly lastRequest: IncomingMessage | undefined;
} {
  const state = { origin: "", lastRequest: undefined as IncomingMessage | undefined };
  let server: Server;
  beforeAll(async () => {
    server = createServer((req, res) => {
      state.lastRequest = req;
      handle(req, res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    state.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return state;
}

describe("signNodeResponse on a plain node:http server", () => {
  const secret = new Uint8Array(32).fill(7);
  const server = serveForBlock((req, res) => {
    signNodeResponse(res, { signer: createHmacSigner(secret, { keyId: "srv" }) }, () => ({
      request: nodeRequestMessage(req),
    }));
    res.setHeader("content-type", "text/plain");
    res.write("hello ");
    res.end("world");
  });

  it("signs the whole buffered body, bound to the request", async () => {
    const res = await fetch(`${server.origin}/p?q=1`);
    const body = new Uint8Array(await res.arrayBuffer());
    expect(new TextDecoder().decode(body)).toBe("hello world");
    const policy = {
      keyLookup: () => createHmacVerifier(secret),
      contentDigest: "required" as const,
      requiredComponents: [{ component: "@target-uri", req: true }],
    };
    const request = nodeRequestMessage(server.lastRequest!);
    const response = { status: res.status, headers: res.headers, body };
    expect(await verifyMessage(response, policy, request)).toMatchObject({ ok: true });
    // What it covers by default is what the default policy asks of a response.
    const defaults = { keyLookup: () => createHmacVerifier(secret) };
    expect(await verifyMessage(response, defaults, request)).toMatchObject({ ok: true });
    const elsewhere = { ...request, url: `${server.origin}/other` };
    expect(await verifyMessage(response, policy, elsewhere)).toMatchObject({
      ok: false,
      check: "signature",
    });
  });
});

describe("signNodeResponse with the components given", () => {
  const secret = new Uint8Array(32).fill(9);
  const server = serveForBlock((req, res) => {
    const components = [
      "@status",
      // Any case: a field name is matched case-insensitively.
      "X-Tenant",
      "content-type",
      { component: "x-client", req: true },
      { component: "@target-uri", req: true },
      ...(req.url === "/absent" ? ["x-absent"] : []),
    ];
    signNodeResponse(
      res,
      { signer: createHmacSigner(secret, { keyId: "srv" }), components },
      () => ({
        request: nodeRequestMessage(req),
      }),
    );
    res.setHeader("x-tenant", ["t-1", "t-2"]);
    res.setHeader("x-other", "not covered");
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok");
  });

  const policy = { keyLookup: () => createHmacVerifier(secret), requiredComponents: [] };

  it("covers the response's fields as sent and the request's under ;req", async () => {
    const res = await fetch(`${server.origin}/p`, { headers: { "x-client": "c-1" } });
    const body = new Uint8Array(await res.arrayBuffer());
    const request = nodeRequestMessage(server.lastRequest!);
    const response = { status: res.status, headers: res.headers, body };
    const result = await verifyMessage(response, policy, request);
    expect(result).toMatchObject({ ok: true });
    expect(result.ok && result.covered).toEqual([
      '"@status"',
      '"x-tenant"',
      '"content-type"',
      '"x-client";req',
      '"@target-uri";req',
    ]);
    // Each covered value is bound: another tenant line, or another client field, breaks it.
    const retenanted = new Headers(res.headers);
    retenanted.set("x-tenant", "t-1");
    expect(
      await verifyMessage({ ...response, headers: retenanted }, policy, request),
    ).toMatchObject({ ok: false, check: "signature" });
    const otherClient = { ...request, headers: { ...request.headers, "x-client": ["c-2"] } };
    expect(await verifyMessage(response, policy, otherClient)).toMatchObject({
      ok: false,
      check: "signature",
    });
    // An uncovered field is not: changing it leaves the signature valid.
    const other = new Headers(res.headers);
    other.set("x-other", "changed");
    expect(await verifyMessage({ ...response, headers: other }, policy, request)).toMatchObject({
      ok: true,
    });
  });

  it("answers 500 unsigned when a covered field is absent from the response", async () => {
    const res = await fetch(`${server.origin}/absent`, { headers: { "x-client": "c-1" } });
    expect(res.status).toBe(500);
    expect(res.headers.has("signature")).toBe(false);
    expect(await res.text()).toContain("x-absent");
  });
});
