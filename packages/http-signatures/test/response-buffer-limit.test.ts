/**
 * Response signing holds the whole body until `end`, so that the digest and signature cover what
 * is sent. It held any amount: a route streaming a large file or export through a signed
 * response was kept in memory whole, once per request in flight, and its writes never signalled
 * backpressure. Past `maxBufferedBytes` (default 8 MiB) the response is now answered 500
 * problem+json, unsigned and without any of the body, and later writes are dropped.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import {
  connect,
  createServer as createHttp2Server,
  type Http2Server,
  type Http2ServerResponse,
} from "node:http2";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  DEFAULT_MAX_BUFFERED_BYTES,
  nodeRequestMessage,
  type ResponseSigningOptions,
  signNodeResponse,
  verifyMessage,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x5a);
const signer = createHmacSigner(SECRET, { keyId: "srv" });
const LIMIT = 1024;

// Every overflow is reported once per process; counted at the end.
const warnings: Error[] = [];
process.on("warning", (warning) => warnings.push(warning));

type Route = (res: ServerResponse) => void;
const routes: Record<string, { options?: Partial<ResponseSigningOptions>; send: Route }> = {
  "/exact": { send: (res) => res.end(Buffer.alloc(LIMIT, 0x61)) },
  "/written": {
    send: (res) => {
      for (let i = 0; i < 3; i++) res.write(Buffer.alloc(LIMIT / 2, 0x62));
      res.end("tail");
    },
  },
  "/one-chunk": { send: (res) => res.end("c".repeat(LIMIT + 1)) },
  "/piped": {
    send: (res) => {
      let left = 64;
      new Readable({
        read() {
          this.push(left-- > 0 ? Buffer.alloc(256, 0x64) : null);
        },
      }).pipe(res);
    },
  },
  "/default": {
    options: {},
    send: (res) => res.end(Buffer.alloc(DEFAULT_MAX_BUFFERED_BYTES + 1)),
  },
  "/unbounded": {
    options: { maxBufferedBytes: Number.POSITIVE_INFINITY },
    send: (res) => {
      res.write(Buffer.alloc(DEFAULT_MAX_BUFFERED_BYTES));
      res.end("x");
    },
  },
};

let server: Server;
let origin: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    const route = routes[req.url ?? ""];
    if (route === undefined) {
      res.statusCode = 404;
      res.end();
      return;
    }
    const request = nodeRequestMessage(req);
    const options = route.options ?? { maxBufferedBytes: LIMIT };
    signNodeResponse(res, { signer, ...options }, () => ({ request }));
    res.setHeader("content-type", "application/octet-stream");
    route.send(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

async function get(path: string) {
  const res = await fetch(`${origin}${path}`);
  return { res, body: Buffer.from(await res.arrayBuffer()) };
}

function expectRefused(res: Response, body: Buffer): void {
  expect(res.status).toBe(500);
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  expect(res.headers.get("signature")).toBeNull();
  expect(res.headers.get("signature-input")).toBeNull();
  expect(res.headers.get("content-digest")).toBeNull();
  expect(JSON.parse(body.toString("utf8"))).toMatchObject({
    type: "https://kms.dev/problems/signature/response-signing",
    status: 500,
    detail: expect.stringContaining('"maxBufferedBytes"'),
  });
}

describe("maxBufferedBytes", () => {
  it("signs a body of exactly the limit", async () => {
    const { res, body } = await get("/exact");
    expect(res.status).toBe(200);
    expect(body).toHaveLength(LIMIT);
    const verified = await verifyMessage(
      { status: res.status, headers: res.headers, body },
      { keyLookup: () => createHmacVerifier(SECRET), contentDigest: "required" },
      { method: "GET", url: `${origin}/exact`, headers: {} },
    );
    expect(verified).toMatchObject({ ok: true });
  });

  it.each(["/written", "/one-chunk", "/piped"])(
    "answers 500, unsigned and without the body, past the limit (%s)",
    async (path) => {
      const { res, body } = await get(path);
      expectRefused(res, body);
    },
  );

  it("holds at most 8 MiB by default", async () => {
    expect(DEFAULT_MAX_BUFFERED_BYTES).toBe(8 * 1024 * 1024);
    const { res, body } = await get("/default");
    expectRefused(res, body);
  });

  it("holds any amount with Infinity", async () => {
    const { res, body } = await get("/unbounded");
    expect(res.status).toBe(200);
    expect(res.headers.get("signature")).not.toBeNull();
    expect(body).toHaveLength(DEFAULT_MAX_BUFFERED_BYTES + 1);
  });

  it.each([-1, 1.5, Number.NaN, "8m"])("refuses maxBufferedBytes %s", (maxBufferedBytes) => {
    const res = { write() {}, end() {}, writeHead() {}, flushHeaders() {} } as never;
    expect(() =>
      signNodeResponse(res, { signer, maxBufferedBytes: maxBufferedBytes as number }, () => ({
        request: { method: "GET", url: "http://h/", headers: {} },
      })),
    ).toThrow('"maxBufferedBytes" must be a non-negative integer or Infinity');
  });

  it("sends the whole problem over HTTP/2, whose end writes through write", async () => {
    const h2: Http2Server = createHttp2Server((req, res: Http2ServerResponse) => {
      signNodeResponse(res, { signer, maxBufferedBytes: LIMIT }, () => ({
        request: nodeRequestMessage(req),
      }));
      res.write(Buffer.alloc(LIMIT));
      res.end("over");
    });
    await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
    try {
      const port = (h2.address() as AddressInfo).port;
      const { status, type, body } = await new Promise<{
        status: unknown;
        type: unknown;
        body: string;
      }>((resolve, reject) => {
        const session = connect(`http://127.0.0.1:${port}`);
        session.on("error", reject);
        const stream = session.request({ ":path": "/" });
        const chunks: Buffer[] = [];
        let head: Record<string, unknown> = {};
        stream.on("response", (h) => {
          head = h;
        });
        stream.on("data", (chunk: Buffer) => chunks.push(chunk));
        stream.on("end", () => {
          session.close();
          resolve({
            status: head[":status"],
            type: head["content-type"],
            body: Buffer.concat(chunks).toString("utf8"),
          });
        });
        stream.on("error", reject);
        stream.end();
      });
      expect(status).toBe(500);
      expect(type).toBe("application/problem+json");
      expect(JSON.parse(body)).toMatchObject({
        detail: expect.stringContaining("maxBufferedBytes"),
      });
    } finally {
      await new Promise<void>((resolve) => h2.close(() => resolve()));
    }
  });

  it("warned once, naming the cause", () => {
    const ours = warnings.filter(
      (warning) => (warning as { code?: string }).code === "KMS_SIGNED_RESPONSE_TOO_LARGE",
    );
    expect(ours).toHaveLength(1);
    expect(ours[0]?.message).toContain('"maxBufferedBytes"');
  });
});
