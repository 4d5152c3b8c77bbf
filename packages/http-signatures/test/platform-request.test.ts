import type { IncomingHttpHeaders } from "node:http";
import { describe, expect, it } from "vitest";
import { nodeRequestMessage, type PlatformIncoming, platformRequest } from "../src/index.ts";

/** An Express app whose `trust proxy` trusts (or not) every peer. */
function expressApp(trusts: boolean): { get(setting: string): unknown } {
  return { get: (setting) => (setting === "trust proxy fn" ? () => trusts : undefined) };
}

function incoming(headers: IncomingHttpHeaders, tls = false): PlatformIncoming {
  return {
    method: "GET",
    url: "/orders/7",
    headers,
    headersDistinct: {},
    socket: { encrypted: tls, remoteAddress: "10.0.0.1" },
  } as unknown as PlatformIncoming;
}

function targetOf(...args: Parameters<typeof platformRequest>): string {
  return String(nodeRequestMessage(platformRequest(...args)).url);
}

describe("platformRequest", () => {
  it("takes the target from the connection and Host when nothing is forwarded", () => {
    const view = platformRequest({ protocol: "http" }, incoming({ host: "a.example" }));
    expect(view).toMatchObject({ method: "GET", url: "/orders/7", protocol: "http" });
    expect(targetOf({}, incoming({ host: "a.example" }, true))).toBe("https://a.example/orders/7");
  });

  it("builds the target from the scheme and host the framework answers from a trusted proxy", () => {
    const request = incoming({
      host: "10.0.0.2:3000",
      "x-forwarded-host": "api.example.com",
      "x-forwarded-proto": "https",
    });
    const platform = {
      protocol: "https",
      host: "api.example.com",
      app: expressApp(true),
    };
    expect(targetOf(platform, request)).toBe("https://api.example.com/orders/7");
  });

  it("ignores forwarded fields the framework did not trust", () => {
    const request = incoming({ host: "a.example", "x-forwarded-host": "evil.example, a.example" });
    const platform = { protocol: "http", host: "a.example", app: expressApp(false) };
    expect(targetOf(platform, request)).toBe("http://a.example/orders/7");
  });

  // Fastify's request.host is "" when the request has no Host field (HTTP/1.0).
  it("keeps the target of a request without Host whatever an untrusted X-Forwarded-Host says", () => {
    const own = targetOf({ protocol: "http", host: "" }, incoming({}));
    const request = incoming({ "x-forwarded-host": "evil.example" });
    expect(targetOf({ protocol: "http", host: "" }, request)).toBe(own);
    // The same placeholder target as without the field: no authority, so none to verify.
    expect(own).toBe(targetOf({ protocol: "http" }, incoming({})));
    expect(platformRequest({ protocol: "http", host: "" }, request).headers.host).toBeUndefined();
  });

  // Express answers a list's first entry, which the client wrote; the trusted proxy's is last.
  it.each([
    ["a host list", { "x-forwarded-host": "evil.example, a.example" }, "evil.example", "http"],
    ["a host list whose first entry is Host", { "x-forwarded-host": "h, a.example" }, "h", "http"],
    ["a scheme list", { "x-forwarded-proto": "https, http" }, "h", "https"],
    [
      "a scheme list whose first is the connection's",
      { "x-forwarded-proto": "http, https" },
      "h",
      "http",
    ],
  ])("makes the target unverifiable for %s under Express", (_name, fields, host, protocol) => {
    const request = incoming({ host: "h", ...fields });
    const view = platformRequest({ protocol, host, app: expressApp(true) }, request);
    expect(view.headers.host).toBe("forwarded value not written by the trusted proxy");
    expect(() => new URL(nodeRequestMessage(view).url)).toThrow();
  });

  // Express trusts the peer when the setting's answer is truthy, not only `true`.
  it.each([
    ["an address", "10.0.0.1"],
    ["a count", 1],
  ])("makes a list unverifiable when an app's trust proxy function answers %s", (_what, answer) => {
    const request = incoming({ host: "h", "x-forwarded-host": "h, a.example" });
    const app = {
      get: (setting: string) => (setting === "trust proxy fn" ? () => answer : undefined),
    };
    const view = platformRequest({ protocol: "http", host: "h", app }, request);
    expect(view.headers.host).toBe("forwarded value not written by the trusted proxy");
  });

  it("accepts a trusted list whose first entry is also its last", () => {
    const request = incoming({
      host: "10.0.0.2",
      "x-forwarded-host": "a.example, a.example",
      "x-forwarded-proto": "https,https",
    });
    const platform = { protocol: "https", host: "a.example", app: expressApp(true) };
    expect(targetOf(platform, request)).toBe("https://a.example/orders/7");
  });

  it("accepts the last entry, which Fastify answers, without an Express app", () => {
    const request = incoming({ host: "10.0.0.2", "x-forwarded-host": "evil.example, a.example" });
    expect(targetOf({ protocol: "http", host: "a.example" }, request)).toBe(
      "http://a.example/orders/7",
    );
    const forged = platformRequest({ protocol: "http", host: "evil.example" }, request);
    expect(forged.headers.host).toBe("forwarded value not written by the trusted proxy");
  });
});
