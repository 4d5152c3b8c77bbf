import { randomBytes } from "node:crypto";
import { createServer, request as httpRequest, type OutgoingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { ValidationError } from "@kms/core";
import { describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  createSignedFetch,
  nodeRequestMessage,
  type RequestLike,
  signMessage,
  signRequest,
  verifyMessage,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "svc-a" });
const policy = {
  keyLookup: (id: string) => (id === "svc-a" ? createHmacVerifier(secret) : undefined),
  contentDigest: "required" as const,
  requiredComponents: ["@method", "@target-uri"],
};

describe("signRequest", () => {
  it("signs a WHATWG Request with a Content-Digest over its body", async () => {
    const request = new Request("https://b.test/hook?id=7", {
      method: "POST",
      body: '{"event":"paid"}',
      headers: { "content-type": "application/json" },
    });
    const added = await signRequest(request, { signer, nonce: true });
    expect(Object.keys(added).sort()).toEqual(["content-digest", "signature", "signature-input"]);
    expect(added["signature-input"]).toMatch(
      /^sig1=\("@method" "@target-uri" "content-digest" "content-type"\);created=\d+;nonce="[^"]+";keyid="svc-a"$/,
    );
    const headers = { "content-type": "application/json", ...added };
    const body = new TextEncoder().encode('{"event":"paid"}');
    expect(
      (await verifyMessage({ method: "POST", url: request.url, headers, body }, policy)).ok,
    ).toBe(true);
    // The original request is still readable: signing cloned it.
    expect(await request.text()).toBe('{"event":"paid"}');
  });

  it("signs a plain object and rejects a bad label", async () => {
    const added = await signRequest({ method: "get", url: "https://b.test/x" }, { signer });
    expect(added["content-digest"]).toBeUndefined();
    expect(added["signature-input"]).toContain('("@method" "@target-uri")');
    await expect(
      signRequest({ method: "GET", url: "https://b.test/" }, { signer, label: "Bad" }),
    ).rejects.toThrow(ValidationError);
  });
});

describe("signRequest with array header values, sent by Node's http client", () => {
  /**
   * Signs `headers` with signRequest, sends them with the same object through node:http, and
   * verifies on a node:http server: what Node sends for an array (one field line per element,
   * Cookie joined with "; ") must be what was signed.
   */
  async function roundTrip(headers: OutgoingHttpHeaders, covered: string[]): Promise<unknown[]> {
    const results: unknown[] = [];
    const server = createServer(async (req, res) => {
      results.push(
        await verifyMessage(nodeRequestMessage(req), { ...policy, contentDigest: "if-present" }),
      );
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/x`;
      const added = await signRequest(
        { method: "GET", url, headers: headers as RequestLike["headers"] },
        { signer, components: ["@method", "@target-uri", ...covered] },
      );
      await new Promise<void>((resolve, reject) => {
        httpRequest(url, { headers: { ...headers, ...added } }, (res) => {
          res.resume().on("end", resolve);
        })
          .on("error", reject)
          .end();
      });
    } finally {
      server.close();
    }
    return results;
  }

  it.each<[string, OutgoingHttpHeaders, string[]]>([
    ["an array (one line per element)", { "x-tags": ["a", "b"] }, ["x-tags"]],
    ["a one-element array", { "x-tags": ["a"] }, ["x-tags"]],
    ["an array under a mixed-case name", { "X-Tags": ["a", "b"] }, ["x-tags"]],
    ["a Cookie array (joined with '; ')", { cookie: ["a=1", "b=2"] }, ["cookie"]],
    ["a string", { "x-tags": "a, b" }, ["x-tags"]],
  ])("verifies %s", async (_name, headers, covered) => {
    expect(await roundTrip(headers, covered)).toEqual([expect.objectContaining({ ok: true })]);
  });
});

describe("createSignedFetch", () => {
  it("sends signed requests that the receiver verifies, and tampering is caught", async () => {
    const seen: Request[] = [];
    const receiver = async (
      input: string | URL | Request,
      init?: RequestInit,
    ): Promise<Response> => {
      const req = new Request(input, init);
      seen.push(req.clone());
      const body = new Uint8Array(await req.arrayBuffer());
      const result = await verifyMessage(
        { method: req.method, url: req.url, headers: req.headers, body },
        policy,
      );
      return new Response(JSON.stringify(result), { status: result.ok ? 200 : 401 });
    };
    const signedFetch = createSignedFetch({ signer, fetch: receiver as typeof fetch });
    const ok = await signedFetch("https://b.test/hook", { method: "POST", body: "hi" });
    expect(ok.status).toBe(200);

    const tampering = createSignedFetch({
      signer,
      fetch: (async (input: string, init: RequestInit) =>
        receiver(input, { ...init, body: "HI" })) as typeof fetch,
    });
    const bad = await tampering("https://b.test/hook", { method: "POST", body: "hi" });
    expect(bad.status).toBe(401);
    expect(await bad.json()).toMatchObject({ check: "content-digest" });
    expect(seen[0]!.headers.get("signature")).toMatch(/^sig1=:/);
  });
});

describe("createSignedFetch and the caller's other fetch options", () => {
  it("passes them (an undici dispatcher, keepalive, credentials) to the wrapped fetch on every hop", async () => {
    const dispatcher = { name: "proxy agent" };
    const inits: Record<string, unknown>[] = [];
    const inner = (async (_input: string, init: RequestInit) => {
      inits.push(init as Record<string, unknown>);
      return inits.length === 1
        ? new Response(null, { status: 307, headers: { location: "/next" } })
        : new Response("done", { status: 200 });
    }) as typeof fetch;
    const signedFetch = createSignedFetch({ signer, fetch: inner });
    const response = await signedFetch("https://b.test/first", {
      method: "POST",
      body: "hi",
      keepalive: true,
      credentials: "omit",
      dispatcher,
    } as unknown as RequestInit);
    expect(await response.text()).toBe("done");
    expect(inits).toHaveLength(2);
    for (const init of inits) {
      expect(init).toMatchObject({ dispatcher, keepalive: true, credentials: "omit" });
      expect((init.headers as Headers).get("signature")).toMatch(/^sig1=:/);
    }
  });
});

describe("signMessage with a reused components array", () => {
  // Component specs are memoized; an array reused after a change in place must cover its new entries.
  it("covers what the array holds at each call", async () => {
    const components: string[] = ["@method", "@target-uri"];
    const message = { method: "GET", url: "https://b.test/x?y=1", headers: {} };
    const first = await signMessage(message, { signer, components, created: 1 });
    components[1] = "@path";
    const second = await signMessage(message, { signer, components, created: 1 });
    expect(first.signatureInput).toBe('sig1=("@method" "@target-uri");created=1;keyid="svc-a"');
    expect(second.signatureInput).toBe('sig1=("@method" "@path");created=1;keyid="svc-a"');
    expect(second.base).toBe(
      '"@method": GET\n"@path": /x\n"@signature-params": ("@method" "@path");created=1;keyid="svc-a"',
    );
  });
});

describe("the method", () => {
  it("missing from untyped code is a ValidationError, not a TypeError", async () => {
    const untyped = { url: "https://b.test/x" } as unknown as RequestLike;
    await expect(signRequest(untyped, { signer })).rejects.toThrow(ValidationError);
    await expect(signRequest(untyped, { signer })).rejects.toThrow('"method" must be a string');
  });

  it.each([
    ["a line break", 'GET\n"@authority": evil.test'],
    ["empty", ""],
    ["a space", "GET /x"],
    ["missing", undefined],
  ])("that is not an HTTP token (%s) is refused by name", async (_, method) => {
    const message = { method, url: "https://b.test/x", headers: new Headers() };
    await expect(
      signMessage(message as { method: string; url: string; headers: Headers }, {
        signer,
        components: ["@method"],
      }),
    ).rejects.toThrow("the method must be an HTTP token");
  });

  it("with a line break fails verification instead of being signed over", async () => {
    const url = "https://b.test/x";
    const fields = await signMessage(
      { method: "GET", url, headers: new Headers() },
      { signer, components: ["@method"] },
    );
    const headers = new Headers({
      "signature-input": fields.signatureInput,
      signature: fields.signature,
    });
    const result = await verifyMessage(
      { method: 'GET\n"@authority": evil.test', url, headers },
      { ...policy, contentDigest: "if-present", requiredComponents: ["@method"] },
    );
    expect(result).toMatchObject({ ok: false, check: "components" });
  });
});

describe("what goes on the wire is what is signed", () => {
  /** A receiver that verifies what a server gets: the method as sent, no fragment. */
  const wire = (seen: Request[]) =>
    (async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
      const req = new Request(input, init);
      seen.push(req);
      const url = new URL(req.url);
      url.hash = "";
      const body = new Uint8Array(await req.arrayBuffer());
      const result = await verifyMessage(
        { method: req.method, url: url.href, headers: req.headers, body },
        { ...policy, contentDigest: "if-present" },
      );
      return new Response(JSON.stringify(result), { status: result.ok ? 200 : 401 });
    }) as typeof fetch;

  it("signs a method fetch does not upper-case (patch) as fetch sends it", async () => {
    const seen: Request[] = [];
    const signedFetch = createSignedFetch({ signer, fetch: wire(seen) });
    const response = await signedFetch("https://b.test/x", { method: "patch", body: "hi" });
    expect(seen[0]?.method).toBe("patch");
    expect(response.status).toBe(200);
    const added = await signRequest(new Request("https://b.test/x", { method: "patch" }), {
      signer,
    });
    const result = await verifyMessage(
      { method: "patch", url: "https://b.test/x", headers: added },
      { ...policy, contentDigest: "if-present" },
    );
    expect(result.ok).toBe(true);
  });

  it("leaves the fragment out of @target-uri: it is not sent", async () => {
    const seen: Request[] = [];
    const signedFetch = createSignedFetch({ signer, fetch: wire(seen) });
    const response = await signedFetch("https://b.test/x?y=1#top", { method: "POST", body: "hi" });
    expect(response.status).toBe(200);
    const fields = await signMessage(
      { method: "GET", url: "https://b.test/x#", headers: {} },
      { signer, components: ["@target-uri"], created: 1 },
    );
    expect(fields.base.split("\n")[0]).toBe('"@target-uri": https://b.test/x');
  });

  it("leaves userinfo out of @target-uri, so no password reaches the signature base", async () => {
    const fields = await signMessage(
      { method: "GET", url: "https://user:secret@b.test/x?y=1", headers: {} },
      { signer, components: ["@target-uri", "@authority"], created: 1 },
    );
    expect(fields.base).not.toContain("secret");
    expect(fields.base.split("\n").slice(0, 2)).toEqual([
      '"@target-uri": https://b.test/x?y=1',
      '"@authority": b.test',
    ]);
  });
});
