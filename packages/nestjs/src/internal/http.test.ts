/**
 * The target URI under `@nestjs/platform-fastify` (test/fastify.test.ts runs it over HTTP):
 * Nest hands the guard Fastify's request, whose `protocol` and `host` getters are modelled here
 * on Fastify 5's (`lib/request.js`, checked against fastify 5.12.8 under
 * @nestjs/platform-fastify 12.5.0). With `trustProxy` trusting the peer they answer the *last*
 * entry of X-Forwarded-Proto / X-Forwarded-Host, the one the nearest proxy wrote; otherwise the
 * connection and the Host field.
 */
import type { IncomingMessage } from "node:http";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import { describe, expect, it } from "vitest";
import { type PlatformRequest, platformRequestMessage } from "./http.ts";

const secret = Buffer.alloc(32, 0x46);
const signer = createHmacSigner(secret, { keyId: "client" });
const COMPONENTS: readonly ComponentSpec[] = ["@method", "@target-uri", "@authority", "@scheme"];
const PATH = "/orders/7?x=1";
const BACKEND = "10.0.0.5:3000";

function lastEntry(value: string): string {
  return value.slice(value.lastIndexOf(",") + 1).trim();
}

/** Fastify's request over a plain-HTTP connection from a proxy, trusted or not. */
function fastifyRequest(fields: Record<string, string>, trusted: boolean): PlatformRequest {
  const headers: Record<string, string> = { host: BACKEND, ...fields };
  const raw = {
    method: "GET",
    url: PATH,
    headers,
    headersDistinct: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, [v]])),
    socket: { encrypted: false },
  } as unknown as IncomingMessage;
  const forwardedHost = trusted ? headers["x-forwarded-host"] : undefined;
  const forwardedProto = trusted ? headers["x-forwarded-proto"] : undefined;
  return {
    raw,
    method: "GET",
    url: PATH,
    originalUrl: PATH,
    headers,
    host: forwardedHost !== undefined ? lastEntry(forwardedHost) : BACKEND,
    protocol: forwardedProto !== undefined ? lastEntry(forwardedProto) : "http",
  };
}

/** The verdict on a request signed for `signedFor` and received with `fields`. */
async function verdict(
  signedFor: string,
  fields: Record<string, string>,
  trusted: boolean,
): Promise<string> {
  const signature = await signRequest(
    { method: "GET", url: signedFor, headers: {} },
    { signer, components: COMPONENTS },
  );
  const request = fastifyRequest({ ...fields, ...signature }, trusted);
  const result = await verifyMessage(
    platformRequestMessage(request, request.raw as IncomingMessage, undefined),
    { keyLookup: () => createHmacVerifier(secret), requiredComponents: COMPONENTS },
  );
  return result.ok ? "ok" : result.check;
}

const PROXIED = { "x-forwarded-host": "api.example.com", "x-forwarded-proto": "https" };

describe("platformRequestMessage on Fastify's request", () => {
  it("takes the target from request.protocol and request.host, as Fastify's trustProxy decides", async () => {
    const url = `https://api.example.com${PATH}`;
    expect(await verdict(url, PROXIED, true)).toBe("ok");
    // Not trusted: the connection and the Host field, whatever X-Forwarded-* claims.
    expect(await verdict(url, PROXIED, false)).toBe("signature");
    expect(await verdict(`http://${BACKEND}${PATH}`, PROXIED, false)).toBe("ok");
  });

  it("accepts a list's last entry, which Fastify answers and the trusted proxy appended", async () => {
    const appended = {
      "x-forwarded-host": "other.example, api.example.com",
      "x-forwarded-proto": "http, https",
    };
    expect(await verdict(`https://api.example.com${PATH}`, appended, true)).toBe("ok");
    // The client's own first entries never stand in for the target.
    expect(await verdict(`http://other.example${PATH}`, appended, true)).toBe("signature");
  });
});
