/**
 * A request without a Host field (HTTP/1.0 allows one) has no authority. Rebuilding one
 * (`localhost`) would let a signature made for `http://localhost/…` (a sidecar, a dev box sharing
 * the partner's key) verify on this server whatever its real name, so the components that name
 * the authority fail, and those that do not still verify.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import { type AddressInfo, connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ComponentSpec,
  createHmacSigner,
  createHmacVerifier,
  nodeRequestMessage,
  type RequestMessage,
  signNodeResponse,
  signRequest,
  type VerificationResult,
  verifyMessage,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x5a);
const signer = createHmacSigner(SECRET, { keyId: "k" });

/** Sends `head` (request line and field lines) on a raw connection; answers the raw response. */
function rawExchange(port: number, head: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    let response = "";
    const socket = connect(port, "127.0.0.1", () => socket.write(`${head.join("\r\n")}\r\n\r\n`));
    socket.on("data", (chunk: Buffer) => {
      response += chunk.toString("latin1");
    });
    socket.on("end", () => resolve(response));
    socket.on("error", reject);
  });
}

describe("a request received without Host", () => {
  let server: Server;
  let port: number;
  // How the server answered each request; the components it requires come in X-Required.
  const verified: VerificationResult[] = [];

  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res) => {
      const required = JSON.parse(String(req.headers["x-required"])) as ComponentSpec[];
      verifyMessage(nodeRequestMessage(req), {
        keyLookup: (id) => (id === "k" ? createHmacVerifier(SECRET) : undefined),
        nonceStore: false,
        requiredComponents: required,
      }).then((result) => {
        verified.push(result);
        res.end(result.ok ? "ok" : "refused");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** Sends an HTTP/1.0 request without Host, signed as a request to `url` over `components`. */
  async function sendWithoutHost(
    url: string,
    components: readonly ComponentSpec[],
  ): Promise<VerificationResult> {
    const added = await signRequest({ method: "DELETE", url }, { signer, components });
    const path = new URL(url).pathname;
    const head = [
      `DELETE ${path} HTTP/1.0`,
      `Signature-Input: ${added["signature-input"]}`,
      `Signature: ${added.signature}`,
      `X-Required: ${JSON.stringify(components)}`,
    ];
    const before = verified.length;
    await rawExchange(port, head);
    expect(verified).toHaveLength(before + 1);
    return verified[before] as VerificationResult;
  }

  it.each([
    ["@target-uri", ["@method", "@target-uri"]],
    ["@authority", ["@method", "@authority", "@path"]],
  ])("refuses a signature covering %s, made for http://localhost", async (_name, components) => {
    const result = await sendWithoutHost("http://localhost/orders/7", components);
    expect(result).toMatchObject({
      ok: false,
      check: "components",
      detail: expect.stringMatching(/no Host header/),
    });
  });

  it("verifies a signature over components that do not name the authority", async () => {
    const result = await sendWithoutHost("http://api.example/orders/7", [
      "@method",
      "@path",
      "@scheme",
      "@request-target",
    ]);
    expect(result.ok).toBe(true);
  });
});

describe("a response to a request received without Host", () => {
  let server: Server;
  let port: number;
  let received: RequestMessage | undefined;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const request = nodeRequestMessage(req);
      received = request;
      signNodeResponse(res, { signer }, () => ({ request }));
      res.end("hello");
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  // A load balancer's health check (HAProxy's `option httpchk`: "GET /health HTTP/1.0"). The
  // default components would bind the response to the request's @target-uri, which it lacks:
  // it is bound to the request's method, path and query instead, and no authority is named.
  it("is signed, bound to the request's @method, @path and @query", async () => {
    const response = await rawExchange(port, ["GET /health?deep=1 HTTP/1.0"]);
    expect(response).toMatch(/^HTTP\/1\.1 200 /);
    const [head = "", body = ""] = response.split("\r\n\r\n");
    expect(body).toBe("hello");
    const headers: Record<string, string> = {};
    for (const line of head.split("\r\n").slice(1)) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
    }
    expect(headers["signature-input"]).toMatch(
      /^sig1=\("@status" "content-digest" "@method";req "@path";req "@query";req\)/,
    );
    expect(headers["signature-input"]).not.toContain("@target-uri");
    const verified = await verifyMessage(
      { status: 200, headers, body: new TextEncoder().encode(body) },
      {
        keyLookup: () => createHmacVerifier(SECRET),
        nonceStore: false,
        requiredComponents: [
          "@status",
          { component: "@path", req: true },
          { component: "@query", req: true },
        ],
      },
      received,
    );
    expect(verified).toMatchObject({ ok: true });
  });
});
