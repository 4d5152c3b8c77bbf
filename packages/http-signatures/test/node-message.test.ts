import { createServer, type IncomingMessage, type Server } from "node:http";
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

describe("signNodeResponse on a plain node:http server", () => {
  const secret = new Uint8Array(32).fill(7);
  let server: Server;
  let origin: string;
  let lastRequest: IncomingMessage | undefined;

  beforeAll(async () => {
    server = createServer((req, res) => {
      lastRequest = req;
      signNodeResponse(res, { signer: createHmacSigner(secret, { keyId: "srv" }) }, () => ({
        request: nodeRequestMessage(req),
      }));
      res.setHeader("content-type", "text/plain");
      res.write("hello ");
      res.end("world");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("signs the whole buffered body, bound to the request", async () => {
    const res = await fetch(`${origin}/p?q=1`);
    const body = new Uint8Array(await res.arrayBuffer());
    expect(new TextDecoder().decode(body)).toBe("hello world");
    const policy = {
      keyLookup: () => createHmacVerifier(secret),
      contentDigest: "required" as const,
      requiredComponents: [{ component: "@target-uri", req: true }],
    };
    const request = nodeRequestMessage(lastRequest!);
    const response = { status: res.status, headers: res.headers, body };
    expect(await verifyMessage(response, policy, request)).toMatchObject({ ok: true });
    // What it covers by default is what the default policy asks of a response.
    const defaults = { keyLookup: () => createHmacVerifier(secret) };
    expect(await verifyMessage(response, defaults, request)).toMatchObject({ ok: true });
    const elsewhere = { ...request, url: `${origin}/other` };
    expect(await verifyMessage(response, policy, elsewhere)).toMatchObject({
      ok: false,
      check: "signature",
    });
  });
});
