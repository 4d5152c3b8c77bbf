import { describe, expect, it } from "vitest";
import { defaultKmsContext } from "../src/index.ts";

/** A request as the interceptor sees it: Express-shaped, headers lower-cased. */
function requestWith(user: unknown, headers: Record<string, string> = {}) {
  return { user, headers, method: "GET", url: "/records", path: "/records" };
}

describe("defaultKmsContext: the tenant", () => {
  it("comes from the authenticated user over the client's header", () => {
    const context = defaultKmsContext(
      requestWith({ id: "u1", tenantId: "acme" }, { "x-tenant-id": "victim" }),
    );
    expect(context?.encryptionContext).toEqual({ tenant: "acme" });
  });

  it("comes from the header when no user names one", () => {
    const context = defaultKmsContext(requestWith(undefined, { "x-tenant-id": "acme" }));
    expect(context?.encryptionContext).toEqual({ tenant: "acme" });
  });

  it.each([
    ["a number", 7],
    ["null", null],
    ["an object", { id: "acme" }],
  ])("is refused, not taken from the header, when the user's is %s", (_, tenantId) => {
    const request = requestWith({ id: "u1", tenantId }, { "x-tenant-id": "victim" });
    expect(defaultKmsContext(request)).toBeUndefined();
  });
});
