import { randomBytes } from "node:crypto";
import { request as httpRequest, type Server } from "node:http";
import { gzipSync } from "node:zlib";
import {
  computeContentDigest,
  createHmacSigner,
  createHmacVerifier,
  MemoryNonceStore,
  signRequest,
  verifyMessage,
} from "@kms/http-signatures";
import express from "express";
import request from "supertest";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  captureRawBody,
  rawBodyOf,
  signResponse,
  verifiedSignatureOf,
  verifySignature,
} from "../src/index.ts";
import { close, listen } from "./helpers.ts";

const clientSecret = randomBytes(32);
const serverSecret = randomBytes(32);
const client = createHmacSigner(clientSecret, { keyId: "client-1" });
const policy = {
  keyLookup: (id: string) => (id === "client-1" ? createHmacVerifier(clientSecret) : undefined),
  requiredComponents: ["@method", "@target-uri"],
  contentDigest: "required" as const,
  nonceStore: new MemoryNonceStore(),
};

let server: Server;
let origin: string;
let handled = 0;

beforeAll(async () => {
  const app = express();
  app.use("/json", express.json({ verify: captureRawBody }));
  app.use(verifySignature(policy));
  app.use(signResponse({ signer: createHmacSigner(serverSecret, { keyId: "server" }) }));
  app.post("/json", (req, res) => {
    handled++;
    res.json({ got: req.body, label: verifiedSignatureOf(req)?.label });
  });
  app.post("/raw", (req, res) => {
    handled++;
    res.type("text/plain").send(`raw ok ${rawBodyOf(req)?.length}`);
  });
  ({ server, origin } = await listen(app));
});
afterAll(() => close(server));

async function signedPost(path: string, body: string, type = "application/json") {
  const url = `${origin}${path}`;
  const headers = await signRequest(
    { method: "POST", url, headers: { "content-type": type }, body },
    { signer: client, nonce: true },
  );
  return { url, headers: { "content-type": type, ...headers }, body };
}

describe("verifySignature + signResponse on Express 5", () => {
  it("lets a signed request through, with express.json() and captureRawBody", async () => {
    const before = handled;
    const { headers, body } = await signedPost("/json", '{"amount":10}');
    const res = await request(origin).post("/json").set(headers).send(body);
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ got: { amount: 10 }, label: "sig1" });
    expect(handled).toBe(before + 1);
  });

  it("reads the raw body itself when no parser ran", async () => {
    const { headers, body } = await signedPost("/raw", "hello", "text/plain");
    const res = await request(origin).post("/raw").set(headers).send(body);
    expect(res.status).toBe(200);
    expect(res.text).toBe("raw ok 5");
  });

  const rejections: [
    string,
    (h: Record<string, string>) => Record<string, string>,
    string,
    string?,
  ][] = [
    ["an unsigned request", () => ({ "content-type": "application/json" }), "signature-missing"],
    ["a tampered body", (h) => h, "content-digest", '{"amount":1000}'],
    ["a forged signature", (h) => ({ ...h, signature: "sig1=:AAAA:" }), "signature"],
    [
      "an unknown key",
      (h) => ({ ...h, "signature-input": h["signature-input"]!.replace("client-1", "x") }),
      "key",
    ],
    [
      "a garbage Signature-Input",
      (h) => ({ ...h, "signature-input": "((" }),
      "signature-malformed",
    ],
  ];

  it.each(rejections)(
    "answers 401 problem+json to %s, and the handler never runs",
    async (_n, mutate, check, newBody) => {
      const before = handled;
      const { headers, body } = await signedPost("/json", '{"amount":10}');
      const res = await request(origin)
        .post("/json")
        .set(mutate(headers))
        .send(newBody ?? body);
      expect(res.status).toBe(401);
      expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
      const problem = JSON.parse(res.text);
      expect(problem).toMatchObject({ status: 401, title: "HTTP message signature rejected" });
      expect(problem.check).toBe(check);
      expect(problem.type).toBe(`https://kms.dev/problems/signature/${problem.check}`);
      expect(typeof problem.detail).toBe("string");
      expect(handled).toBe(before);
    },
  );

  it("refuses a replayed request", async () => {
    const { headers, body } = await signedPost("/json", "{}");
    expect((await request(origin).post("/json").set(headers).send(body)).status).toBe(200);
    const replay = await request(origin).post("/json").set(headers).send(body);
    expect(replay.status).toBe(401);
    expect(JSON.parse(replay.text).check).toBe("replay");
  });

  it("signs the response, bound to the request and its signature (;req)", async () => {
    const sent = await signedPost("/json", '{"a":1}');
    const res = await request(origin).post("/json").set(sent.headers).send(sent.body);
    expect(res.headers["signature-input"]).toContain('"signature";key="sig1";req');
    const reqMessage = {
      method: "POST",
      url: sent.url,
      headers: { ...sent.headers, host: new URL(sent.url).host },
    };
    const response = {
      status: res.status,
      headers: res.headers as Record<string, string>,
      body: new TextEncoder().encode(res.text),
    };
    const serverPolicy = {
      keyLookup: (id: string) => (id === "server" ? createHmacVerifier(serverSecret) : undefined),
      contentDigest: "required" as const,
    };
    expect(await verifyMessage(response, serverPolicy, reqMessage)).toMatchObject({
      ok: true,
      keyId: "server",
    });

    // The same response does not verify against another request, nor with a changed body.
    const other = await signedPost("/json", '{"a":2}');
    expect(
      await verifyMessage(response, serverPolicy, { ...reqMessage, headers: other.headers }),
    ).toMatchObject({ ok: false, check: "signature" });
    expect(
      await verifyMessage(
        { ...response, body: new TextEncoder().encode("{}") },
        serverPolicy,
        reqMessage,
      ),
    ).toMatchObject({ ok: false, check: "content-digest" });
  });
});

describe("compressed request bodies (Content-Encoding)", () => {
  const json = '{"amount":10}';
  const gzipped = new Uint8Array(gzipSync(json));
  const verifier = {
    keyLookup: policy.keyLookup,
    requiredComponents: policy.requiredComponents,
    contentDigest: "if-present" as const,
  };

  // One app per placement of the body parser; the handler reports what it was given.
  async function serve(parserFirst: boolean) {
    const app = express();
    if (parserFirst) app.use(express.json({ verify: captureRawBody }));
    app.use(verifySignature(verifier));
    app.post("/in", (req, res) => {
      res.json({ raw: rawBodyOf(req)?.length ?? null, body: req.body ?? null });
    });
    return listen(app);
  }

  // supertest re-encodes a Buffer sent as JSON, so the bytes go out through node:http as given.
  function post(origin: string, headers: Record<string, string>, body: Uint8Array) {
    return new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
      const req = httpRequest(`${origin}/in`, { method: "POST", headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            json: JSON.parse(Buffer.concat(chunks).toString("utf8")),
          }),
        );
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  async function signedGzip(origin: string, contentDigest: string | undefined) {
    const fields: Record<string, string> = {
      "content-type": "application/json",
      "content-encoding": "gzip",
    };
    if (contentDigest !== undefined) fields["content-digest"] = contentDigest;
    const signed = await signRequest(
      { method: "POST", url: `${origin}/in`, headers: fields, body: gzipped },
      {
        signer: client,
        components:
          contentDigest === undefined
            ? ["@method", "@target-uri"]
            : ["@method", "@target-uri", "content-digest"],
      },
    );
    return { ...fields, ...signed };
  }

  // The parser hands captureRawBody the decoded JSON, which used to be checked against a
  // Content-Digest that RFC 9530 §2 defines over the gzip bytes: a digest of the decoded text
  // verified, and an honest client's digest was reported as a tampered body.
  it("does not check a Content-Digest against the body a parser decoded", async () => {
    const { server, origin } = await serve(true);
    try {
      const overDecoded = computeContentDigest(new TextEncoder().encode(json), ["sha-256"]);
      const decoded = await post(origin, await signedGzip(origin, overDecoded), gzipped);
      expect(decoded.status).toBe(401);
      expect(decoded.json).toMatchObject({ check: "content-digest" });

      const overSent = computeContentDigest(gzipped, ["sha-256"]);
      const sent = await post(origin, await signedGzip(origin, overSent), gzipped);
      expect(sent.status).toBe(401);
      expect(sent.json).toMatchObject({ check: "content-digest" });
      expect(String(sent.json.detail)).toMatch(/raw body is needed/);
    } finally {
      await close(server);
    }
  });

  it("still verifies a signature that covers no digest, behind the parser", async () => {
    const { server, origin } = await serve(true);
    try {
      const res = await post(origin, await signedGzip(origin, undefined), gzipped);
      expect(res).toEqual({ status: 200, json: { raw: null, body: { amount: 10 } } });
    } finally {
      await close(server);
    }
  });

  it("verifies the digest of the bytes as sent when it reads the body itself", async () => {
    const { server, origin } = await serve(false);
    try {
      const digest = computeContentDigest(gzipped, ["sha-256"]);
      const res = await post(origin, await signedGzip(origin, digest), gzipped);
      expect(res).toEqual({ status: 200, json: { raw: gzipped.length, body: null } });
    } finally {
      await close(server);
    }
  });
});
