import { describe, expect, it } from "vitest";
import { defaultKmsContext } from "../src/index.ts";

/** A request as the interceptor sees it: Express-shaped, headers lower-cased. */
function requestWith(user: unknown, headers: Record<string, string> = {}) {
  return { user, headers, method: "GET", url: "/records", path: "/records" };
}

const WITH_HEADER = { tenantHeader: "x-tenant-id" };

describe("defaultKmsContext: the tenant", () => {
  it("comes from the authenticated user over the client's header", () => {
    const context = defaultKmsContext(
      requestWith({ id: "u1", tenantId: "acme" }, { "x-tenant-id": "victim" }),
      WITH_HEADER,
    );
    expect(context?.encryptionContext).toEqual({ tenant: "acme" });
  });

  it("comes from the authenticated user when no header is configured", () => {
    const context = defaultKmsContext(requestWith({ id: "u1", tenantId: "acme" }));
    expect(context?.encryptionContext).toEqual({ tenant: "acme" });
    expect(context?.principal).toBe("u1");
  });

  it("is not taken from a client's x-tenant-id unless a tenantHeader is configured", () => {
    const request = requestWith(undefined, { "x-tenant-id": "victim" });
    expect(defaultKmsContext(request)).toBeUndefined();
    expect(defaultKmsContext(request, {})).toBeUndefined();
    // Nor from the header of another name, when that name is not the configured one.
    expect(defaultKmsContext(request, { tenantHeader: "x-org" })).toBeUndefined();
  });

  it("comes from the configured header when no user names one", () => {
    const context = defaultKmsContext(
      requestWith(undefined, { "x-tenant-id": "acme" }),
      WITH_HEADER,
    );
    expect(context?.encryptionContext).toEqual({ tenant: "acme" });
  });

  it("is read from the header the tenantHeader names, in any case", () => {
    const request = requestWith(undefined, { "x-org": "acme", "x-tenant-id": "victim" });
    const context = defaultKmsContext(request, { tenantHeader: "X-Org" });
    expect(context?.encryptionContext).toEqual({ tenant: "acme" });
  });

  it("is stored under the tenantKey", () => {
    const context = defaultKmsContext(requestWith({ id: "u1", tenantId: "acme" }), {
      tenantKey: "org",
    });
    expect(context?.encryptionContext).toEqual({ org: "acme" });
  });

  it.each([
    ["a number", 7],
    ["null", null],
    ["an object", { id: "acme" }],
  ])("is refused, not taken from the header, when the user's is %s", (_, tenantId) => {
    const request = requestWith({ id: "u1", tenantId }, { "x-tenant-id": "victim" });
    expect(defaultKmsContext(request, WITH_HEADER)).toBeUndefined();
  });
});

describe("defaultKmsContext: the route", () => {
  const user = { id: "u1", tenantId: "acme" };

  it("is the matched pattern, Express's or Fastify's", () => {
    const express = { ...requestWith(user), url: "/records/42", route: { path: "/records/:id" } };
    expect(defaultKmsContext(express)?.route).toBe("GET /records/:id");
    const fastify = {
      ...requestWith(user),
      url: "/records/42",
      routeOptions: { url: "/records/:id" },
    };
    expect(defaultKmsContext(fastify)?.route).toBe("GET /records/:id");
  });

  it("never holds the request's path or URL when there is no pattern", () => {
    const leaky = {
      ...requestWith(user),
      url: "/users/ann@example.com?token=s3cret",
      path: "/users/ann@example.com",
      route: { path: /^\/users\/.+$/ },
    };
    const route = defaultKmsContext(leaky as never)?.route;
    expect(route).toBe("GET /*");
    expect(route).not.toContain("ann@example.com");
  });
});
