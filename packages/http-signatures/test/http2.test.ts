/**
 * `node:http2` and its compatibility API: the response's `end` writes its chunk through
 * `this.write`, and requests name their authority in `:authority`, not Host.
 */

import {
  connect,
  createServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createHmacSigner,
  createHmacVerifier,
  nodeRequestMessage,
  type RequestMessage,
  signNodeResponse,
  signRequest,
  type VerificationResult,
  verifyMessage,
} from "../src/index.ts";

const SECRET = new Uint8Array(32).fill(0x21);
const signer = createHmacSigner(SECRET, { keyId: "k" });
const keyLookup = () => createHmacVerifier(SECRET);

interface Answer {
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

let server: Http2Server;
let origin: string;
/** What the server saw and did, per request. */
const seen: { request: RequestMessage; verified: VerificationResult }[] = [];

beforeAll(async () => {
  server = createServer((req: Http2ServerRequest, res: Http2ServerResponse) => {
    const request = nodeRequestMessage(req);
    verifyMessage(request, { keyLookup, nonceStore: false }).then((verified) => {
      seen.push({ request, verified });
      signNodeResponse(res, { signer }, () => ({ request }));
      res.setHeader("content-type", "text/plain");
      if (req.url === "/streamed") {
        res.write("hello ");
        res.end("world");
      } else {
        res.end(verified.ok ? "verified" : `refused: ${verified.check}`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** One request on its own HTTP/2 session. */
function exchange(headers: OutgoingHttpHeaders): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = connect(origin);
    session.on("error", reject);
    const stream = session.request(headers);
    const chunks: Buffer[] = [];
    let answered: IncomingHttpHeaders = {};
    stream.on("response", (h) => {
      answered = h;
    });
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      session.close();
      resolve({ headers: answered, body: Buffer.concat(chunks) });
    });
    stream.on("error", reject);
    stream.end();
  });
}

/** The response as a message, verified against the request the server saw. */
function verifyResponse(answer: Answer, request: RequestMessage) {
  const headers = Object.fromEntries(
    Object.entries(answer.headers).filter(([name]) => !name.startsWith(":")),
  ) as Record<string, string>;
  return verifyMessage(
    { status: Number(answer.headers[":status"]), headers, body: answer.body },
    { keyLookup, nonceStore: false, contentDigest: "required" },
    request,
  );
}

describe("signNodeResponse over node:http2", () => {
  it.each(["/plain", "/streamed"])("sends the signed body of %s", async (path) => {
    const answer = await exchange({ ":path": path });
    expect(answer.headers[":status"]).toBe(200);
    expect(answer.body.toString()).toBe(
      path === "/streamed" ? "hello world" : "refused: signature-missing",
    );
    expect(answer.headers.signature).toBeDefined();
    const { request } = seen.at(-1)!;
    expect(await verifyResponse(answer, request)).toMatchObject({ ok: true });
  });
});

describe("a signed request over node:http2", () => {
  it("takes its authority from :authority, and verifies", async () => {
    const url = `${origin}/orders/7?x=1`;
    const added = await signRequest({ method: "GET", url }, { signer, nonce: true });
    const answer = await exchange({ ":path": "/orders/7?x=1", ...added });
    expect(answer.body.toString()).toBe("verified");
    const { request, verified } = seen.at(-1)!;
    expect(verified).toMatchObject({ ok: true });
    expect(String(request.url)).toBe(url);
    // The response is bound to it (`@target-uri;req`) and verifies against it.
    expect(await verifyResponse(answer, request)).toMatchObject({ ok: true });
  });

  it("is refused when Host names another authority than :authority (RFC 9113 §8.3.1)", async () => {
    const url = `${origin}/orders/7`;
    const added = await signRequest({ method: "GET", url }, { signer });
    const answer = await exchange({
      ":path": "/orders/7",
      ":authority": new URL(origin).host,
      host: "other.example",
      ...added,
    });
    expect(seen.at(-1)?.verified).toMatchObject({
      ok: false,
      check: "components",
      detail: expect.stringMatching(/differs from the :authority/),
    });
    // Nor is a response bound to it, as for any unverifiable target.
    expect(answer.headers[":status"]).toBe(500);
    expect(answer.headers.signature).toBeUndefined();
  });
});
