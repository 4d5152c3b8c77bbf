/**
 * Response signing next to a compression layer. Content-Digest covers the body as sent, coding
 * included (RFC 9530 §2), so the signer must see the coded bytes. A compression layer that runs
 * after the signer (installed before it: every middleware under a Nest interceptor) codes the
 * body only as the head goes out, after signing: such a response is refused, never sent with a
 * signature that cannot verify.
 */
import { createServer, request as httpRequest, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  nodeRequestMessage,
  signNodeResponse,
  verifyMessage,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x17);
const signer = createHmacSigner(SECRET, { keyId: "srv" });
const TEXT = "x".repeat(2000);

/** Calls the response's `end` as it was before a layer replaced it. */
function sendOn(res: ServerResponse, end: ServerResponse["end"], body: Buffer): ServerResponse {
  return (end as (chunk: Buffer) => ServerResponse).call(res, body);
}

/**
 * A stand-in for the `compression` package: buffers what is written, and decides to gzip in a
 * `writeHead` wrapper (as its `on-headers` hook does), when the head goes out. `filter` is its
 * option of that name.
 */
function compress(res: ServerResponse, filter: (res: ServerResponse) => boolean = () => true) {
  const { end, writeHead } = res;
  let decided = false;
  let gzip = false;
  res.writeHead = function (this: ServerResponse, ...args: unknown[]) {
    if (!decided) {
      decided = true;
      gzip = filter(res);
      if (gzip) {
        res.setHeader("content-encoding", "gzip");
        res.removeHeader("content-length");
      }
    }
    return (writeHead as (...a: unknown[]) => ServerResponse).apply(this, args);
  } as typeof res.writeHead;
  const chunks: Buffer[] = [];
  res.write = ((chunk: string | Buffer) => {
    chunks.push(Buffer.from(chunk));
    return true;
  }) as typeof res.write;
  res.end = ((chunk?: string | Buffer) => {
    if (chunk !== undefined) chunks.push(Buffer.from(chunk));
    res.writeHead(res.statusCode);
    const body = Buffer.concat(chunks);
    return sendOn(res, end, gzip ? gzipSync(body) : body);
  }) as typeof res.end;
}

/** A stand-in for a hand-written one: codes the body and sets the field in its own `end`. */
function gzipOnEnd(res: ServerResponse): void {
  const { end } = res;
  res.end = ((chunk?: string | Buffer) => {
    const gz = gzipSync(Buffer.from(chunk ?? ""));
    res.setHeader("content-encoding", "gzip");
    res.setHeader("content-length", gz.length);
    return sendOn(res, end, gz);
  }) as typeof res.end;
}

type Layout = (res: ServerResponse, sign: () => void) => void;

const layouts: Record<string, Layout> = {
  "compression under the signer": (res, sign) => {
    compress(res);
    sign();
  },
  "a coding end under the signer": (res, sign) => {
    gzipOnEnd(res);
    sign();
  },
  "compression over the signer": (res, sign) => {
    sign();
    compress(res);
  },
  "compression under the signer, skipping signed responses": (res, sign) => {
    compress(res, (r) => !r.hasHeader("signature"));
    sign();
  },
};

let server: Server;
let port: number;

beforeAll(async () => {
  server = createServer((req, res) => {
    const layout = layouts[String(req.headers["x-layout"])] as Layout;
    layout(res, () =>
      signNodeResponse(res, { signer }, () => ({ request: nodeRequestMessage(req) })),
    );
    res.setHeader("content-type", "text/plain");
    res.end(TEXT);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

interface Received {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Buffer;
}

function get(layout: string): Promise<Received> {
  return new Promise((resolve, reject) => {
    httpRequest(
      { host: "127.0.0.1", port, path: "/data", headers: { "x-layout": layout } },
      (res) => {
        const parts: Buffer[] = [];
        res.on("data", (part: Buffer) => parts.push(part));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts),
          }),
        );
        res.on("error", reject);
      },
    )
      .on("error", reject)
      .end();
  });
}

async function verifies(received: Received, layout: string): Promise<boolean> {
  const result = await verifyMessage(
    received,
    {
      keyLookup: () => createHmacVerifier(SECRET),
      nonceStore: false,
      requiredComponents: ["@status", "content-digest"],
    },
    {
      method: "GET",
      url: `http://127.0.0.1:${port}/data`,
      headers: { host: `127.0.0.1:${port}`, "x-layout": layout },
    },
  );
  return result.ok;
}

describe("a response coded after it was signed", () => {
  it("is refused (connection closed, nothing sent), with one warning naming the coding", async () => {
    const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    try {
      for (const layout of ["compression under the signer", "a coding end under the signer"]) {
        await expect(get(layout)).rejects.toThrow(/socket hang up|ECONNRESET/);
      }
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn).toHaveBeenCalledWith(expect.stringContaining('Content-Encoding "gzip"'), {
        code: "KMS_SIGNED_RESPONSE_RECODED",
      });
    } finally {
      warn.mockRestore();
    }
  });
});

describe("a response the signer saw coded, or that is not coded", () => {
  it("verifies over the gzip bytes with compression over the signer", async () => {
    const received = await get("compression over the signer");
    expect(received.headers["content-encoding"]).toBe("gzip");
    expect(await verifies(received, "compression over the signer")).toBe(true);
  });

  it("verifies uncoded when the compression filter skips signed responses", async () => {
    const layout = "compression under the signer, skipping signed responses";
    const received = await get(layout);
    expect(received.headers["content-encoding"]).toBeUndefined();
    expect(received.body.toString()).toBe(TEXT);
    expect(await verifies(received, layout)).toBe(true);
  });
});
