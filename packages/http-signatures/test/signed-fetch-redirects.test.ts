/**
 * createSignedFetch and redirects, against real servers and Node's fetch: a signature is made
 * for one URL, so no hop carries another hop's signature, and a redirect to another origin is
 * refused unless the caller allows it (then signed for that origin).
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ValidationError } from "@kms/core";
import { afterEach, describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  createSignedFetch,
  nodeRequestMessage,
  type SignedFetchOptions,
  signRequest,
  type VerificationResult,
  verifyMessage,
} from "../src/index.ts";

const secret = randomBytes(32);
const signer = createHmacSigner(secret, { keyId: "svc-a" });
const policy = {
  keyLookup: (id: string) => (id === "svc-a" ? createHmacVerifier(secret) : undefined),
  requiredComponents: ["@method", "@target-uri"],
};

interface Received {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingMessage["headers"];
  readonly body: string;
  /** The request verified as this server receives it. */
  readonly verification: VerificationResult;
}

interface Answer {
  readonly status: number;
  readonly location?: string;
}

interface TestServer {
  readonly origin: string;
  readonly received: Received[];
}

const servers: Server[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

/** A server that records and verifies each request, and answers what `route` says. */
async function listen(route: (path: string) => Answer): Promise<TestServer> {
  const received: Received[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const verification = await verifyMessage(
      nodeRequestMessage(req, body.length > 0 ? body : undefined),
      policy,
    );
    const path = req.url ?? "";
    received.push({
      method: req.method ?? "",
      path,
      headers: req.headers,
      body: body.toString(),
      verification,
    });
    const { status, location } = route(path);
    res.writeHead(status, location === undefined ? {} : { location });
    res.end(`answered ${path}`);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received };
}

const redirect = (status: number, location: string): Answer => ({ status, location });
const OK: Answer = { status: 200 };

const signedFetch = (options: Partial<SignedFetchOptions> = {}) =>
  createSignedFetch({ signer, nonce: true, ...options });

const nonceOf = (r: Received) => /;nonce="([^"]+)"/.exec(String(r.headers["signature-input"]))?.[1];

describe("a redirect to another origin", () => {
  it("is refused by default, and the other origin receives nothing", async () => {
    const other = await listen(() => OK);
    const origin = await listen(() => redirect(307, `${other.origin}/steal`));
    await expect(
      signedFetch()(`${origin.origin}/hook`, { method: "POST", body: "paid" }),
    ).rejects.toThrow(TypeError);
    await expect(signedFetch()(`${origin.origin}/hook`)).rejects.toThrow(
      /to another origin \(http:\/\/127\.0\.0\.1:\d+\) is not followed/,
    );
    expect(origin.received).toHaveLength(2);
    expect(other.received).toEqual([]);
  });

  it("when allowed, is signed for the other origin: the first signature never reaches it", async () => {
    const other = await listen(() => OK);
    const origin = await listen(() => redirect(307, `${other.origin}/moved?x=1`));
    const response = await signedFetch({ allowCrossOriginRedirect: true })(
      `${origin.origin}/hook`,
      {
        method: "POST",
        body: "paid",
        headers: { authorization: "Bearer t", cookie: "s=1", "x-trace": "7" },
      },
    );
    expect(response.status).toBe(200);
    expect(response.redirected).toBe(true);
    expect(response.url).toBe(`${other.origin}/moved?x=1`);
    const [first] = origin.received;
    const [second] = other.received;
    expect(first?.verification.ok).toBe(true);
    expect(second).toMatchObject({ method: "POST", path: "/moved?x=1", body: "paid" });
    expect(second?.verification).toMatchObject({ ok: true });
    expect(second?.headers.signature).not.toBe(first?.headers.signature);
    expect(nonceOf(second as Received)).not.toBe(nonceOf(first as Received));
    // Credentials stay with their origin, as fetch keeps them; other fields go on.
    expect(first?.headers).toMatchObject({ authorization: "Bearer t", cookie: "s=1" });
    expect(second?.headers.authorization).toBeUndefined();
    expect(second?.headers.cookie).toBeUndefined();
    expect(second?.headers["x-trace"]).toBe("7");
  });

  it("is left to a rule given the target and the URL redirected from", async () => {
    const other = await listen(() => OK);
    const origin = await listen((path) =>
      path === "/a" ? redirect(302, `${other.origin}/a`) : redirect(302, `${other.origin}/b`),
    );
    const seen: string[] = [];
    const fetchSigned = signedFetch({
      allowCrossOriginRedirect: (target, from) => {
        seen.push(`${from.pathname} -> ${target.href}`);
        return target.pathname === "/a";
      },
    });
    expect((await fetchSigned(`${origin.origin}/a`)).status).toBe(200);
    await expect(fetchSigned(`${origin.origin}/b`)).rejects.toThrow(TypeError);
    expect(seen).toEqual([`/a -> ${other.origin}/a`, `/b -> ${other.origin}/b`]);
    expect(other.received.map((r) => [r.path, r.verification.ok])).toEqual([["/a", true]]);
  });

  it("option that is neither a boolean nor a function is a ValidationError", () => {
    expect(() => signedFetch({ allowCrossOriginRedirect: "yes" as unknown as boolean })).toThrow(
      ValidationError,
    );
  });
});

describe("a nonce", () => {
  it("given as a fixed string is a ValidationError: every request and hop would reuse it", () => {
    // The type refuses it too (tsc checks this line): only plain JavaScript reaches the throw.
    // @ts-expect-error a fixed nonce string is not a SignedFetchOptions nonce
    expect(() => signedFetch({ nonce: "n-1" })).toThrow(/"nonce" must be true or omitted/);
  });
});

describe("a redirect within the origin", () => {
  it("is signed anew for the new path, and verifies there", async () => {
    const origin = await listen((path) => (path === "/old" ? redirect(308, "/new") : OK));
    const response = await signedFetch()(`${origin.origin}/old`, {
      method: "PUT",
      body: '{"id":7}',
      headers: { "content-type": "application/json" },
    });
    expect(response.status).toBe(200);
    expect(response.redirected).toBe(true);
    expect(await response.text()).toBe("answered /new");
    const [first, second] = origin.received;
    expect(second).toMatchObject({ method: "PUT", path: "/new", body: '{"id":7}' });
    expect(second?.headers["content-type"]).toBe("application/json");
    expect(second?.headers["content-digest"]).toBe(first?.headers["content-digest"]);
    expect(origin.received.map((r) => r.verification.ok)).toEqual([true, true]);
    expect(nonceOf(second as Received)).not.toBe(nonceOf(first as Received));
  });

  it("does not carry on a signature the caller set for the first URL", async () => {
    const origin = await listen((path) => (path === "/old" ? redirect(307, "/new") : OK));
    const url = `${origin.origin}/old`;
    const gateway = await signRequest(
      { method: "GET", url },
      { signer: createHmacSigner(randomBytes(32), { keyId: "gw" }), label: "gw" },
    );
    const headers = { signature: gateway.signature, "signature-input": gateway["signature-input"] };
    expect((await signedFetch()(url, { headers })).status).toBe(200);
    const [first, second] = origin.received;
    expect(first?.headers["signature-input"]).toMatch(/^gw=.*, sig1=/);
    expect(second?.headers["signature-input"]).toMatch(/^sig1=/);
    expect(second?.headers.signature).toMatch(/^sig1=:[^,]+$/);
    expect(second?.verification.ok).toBe(true);
  });

  it.each([
    [303, "POST", "GET"],
    [303, "PUT", "GET"],
    [302, "POST", "GET"],
    [301, "POST", "GET"],
  ])(
    "%i after %s becomes %s without the body, its fields or its Content-Digest",
    async (status, method, after) => {
      const origin = await listen((path) => (path === "/form" ? redirect(status, "/done") : OK));
      const response = await signedFetch()(`${origin.origin}/form`, {
        method,
        body: "a=1",
        headers: { "content-type": "application/x-www-form-urlencoded", "content-language": "en" },
      });
      expect(response.status).toBe(200);
      const [first, second] = origin.received;
      expect(first?.headers["content-digest"]).toMatch(/^sha-256=:/);
      expect(second).toMatchObject({ method: after, path: "/done", body: "" });
      for (const name of ["content-digest", "content-type", "content-language", "content-length"]) {
        expect(second?.headers[name]).toBeUndefined();
      }
      expect(second?.headers["signature-input"]).toMatch(/^sig1=\("@method" "@target-uri"\);/);
      expect(second?.verification.ok).toBe(true);
    },
  );

  it.each([
    [301, "PUT"],
    [302, "DELETE"],
    [307, "POST"],
  ])(
    "%i after %s keeps the method and the body, with its Content-Digest",
    async (status, method) => {
      const origin = await listen((path) => (path === "/a" ? redirect(status, "/b") : OK));
      await signedFetch()(`${origin.origin}/a`, { method, body: "payload" });
      const [, second] = origin.received;
      expect(second).toMatchObject({ method, path: "/b", body: "payload" });
      expect(second?.headers["content-digest"]).toMatch(/^sha-256=:/);
      expect(second?.verification).toMatchObject({ ok: true });
    },
  );

  it("keeps HEAD a HEAD after a 303", async () => {
    const origin = await listen((path) => (path === "/a" ? redirect(303, "/b") : OK));
    await signedFetch()(`${origin.origin}/a`, { method: "HEAD" });
    expect(origin.received.map((r) => [r.method, r.path, r.verification.ok])).toEqual([
      ["HEAD", "/a", true],
      ["HEAD", "/b", true],
    ]);
  });
});

describe("the redirect limit", () => {
  it("is fetch's 20, and every hop up to it is signed for its own URL", async () => {
    const origin = await listen((path) => redirect(302, `/hop/${Number(path.split("/")[2]) + 1}`));
    const start = `${origin.origin}/hop/0`;
    await expect(signedFetch()(start)).rejects.toThrow("redirect count exceeded");
    expect(origin.received).toHaveLength(21);
    expect(origin.received.every((r) => r.verification.ok)).toBe(true);
    expect(new Set(origin.received.map(nonceOf)).size).toBe(21);
  });

  it("allows 20 redirects", async () => {
    const origin = await listen((path) => {
      const n = Number(path.split("/")[2]);
      return n < 20 ? redirect(307, `/hop/${n + 1}`) : OK;
    });
    const response = await signedFetch()(`${origin.origin}/hop/0`);
    expect(await response.text()).toBe("answered /hop/20");
  });
});

describe("the caller's redirect mode", () => {
  it('"manual" returns the redirect itself, with the one signed request sent', async () => {
    const origin = await listen(() => redirect(302, "http://elsewhere.test/x"));
    const response = await signedFetch()(`${origin.origin}/a`, { redirect: "manual" });
    expect(response.status).toBe(302);
    expect(response.headers.get("location")).toBe("http://elsewhere.test/x");
    expect(response.redirected).toBe(false);
    expect(origin.received.map((r) => r.verification.ok)).toEqual([true]);
  });

  it('"error" rejects on a redirect, as fetch does', async () => {
    const origin = await listen((path) => (path === "/a" ? redirect(307, "/b") : OK));
    await expect(signedFetch()(`${origin.origin}/a`, { redirect: "error" })).rejects.toThrow(
      TypeError,
    );
    expect(origin.received.map((r) => r.path)).toEqual(["/a"]);
  });
});

describe("a redirect fetch would not follow", () => {
  it.each([
    ["to a non-HTTP URL", "data:text/plain,hi", /data: URL is not followed/],
    ["with credentials", "http://u:p@127.0.0.1:1/b", /credentials/],
    ["to a Location that is not a URL", "http://[::1", /Location is not a URL/],
  ])("(%s) rejects with a TypeError", async (_, location, message) => {
    const origin = await listen(() => redirect(302, location));
    const pending = signedFetch({ allowCrossOriginRedirect: true })(`${origin.origin}/a`);
    await expect(pending).rejects.toThrow(TypeError);
    await expect(
      signedFetch({ allowCrossOriginRedirect: true })(`${origin.origin}/a`),
    ).rejects.toThrow(message);
  });

  it("reads a Location sent as raw UTF-8 as fetch reads it", async () => {
    // Not valid in a field value, but sent: fetch takes the bytes as UTF-8, not as Latin-1.
    const raw = Buffer.from("/café?q=é").toString("latin1");
    const origin = await listen((path) => (path === "/a" ? redirect(302, raw) : OK));
    const response = await signedFetch()(`${origin.origin}/a`);
    const plain = await fetch(`${origin.origin}/a`);
    expect(response.url).toBe(`${origin.origin}/caf%C3%A9?q=%C3%A9`);
    expect(response.url).toBe(plain.url);
    expect(origin.received.map((r) => [r.path, r.verification.ok])).toEqual([
      ["/a", true],
      ["/caf%C3%A9?q=%C3%A9", true],
      ["/a", false],
      ["/caf%C3%A9?q=%C3%A9", false],
    ]);
  });

  it("is not a redirect without a Location, nor with status 300 or 304", async () => {
    const origin = await listen((path) =>
      path === "/none" ? { status: 302 } : redirect(Number(path.slice(1)), "/b"),
    );
    for (const path of ["/none", "/300", "/304"]) {
      const response = await signedFetch()(`${origin.origin}${path}`, { redirect: "follow" });
      expect(response.redirected).toBe(false);
    }
    expect(origin.received.map((r) => r.path)).toEqual(["/none", "/300", "/304"]);
  });
});
