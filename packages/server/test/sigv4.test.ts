/**
 * SigV4 verification: AWS's published test-suite vectors, the real SDK's signatures, and a
 * hand-built request for every refusal. Each refusal test sends the same request untampered
 * first (it must succeed), so a verifier that accepted everything would fail here.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { GenerateRandomCommand, KMSClient, KMSServiceException } from "@aws-sdk/client-kms";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  canonicalQuery,
  canonicalRequest,
  canonicalUri,
  hmac,
  parseAuthorization,
  parseQuery,
  signingKey,
  stringToSign,
} from "../src/internal/sigv4.ts";
import { ALICE, BOB, type Harness, REGION, startHarness } from "./support/harness.ts";
import { amzDate, type HeaderList, rawRequest, sign } from "./support/raw-http.ts";
import { signedCall } from "./support/signed-call.ts";

const NOW = Date.UTC(2026, 0, 15, 12, 0, 0);
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

describe("AWS SigV4 test suite vectors (docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html)", () => {
  const SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
  const DATE = "20150830T123600Z";
  const SCOPE = "20150830/us-east-1/service/aws4_request";
  const HEADERS = [
    ["host", "example.amazonaws.com"],
    ["x-amz-date", DATE],
  ] as const;

  function signatureBySrc(method: string, rawPath: string, rawQuery: string): string {
    const canonical = canonicalRequest({
      method,
      canonicalUri: canonicalUri(rawPath),
      canonicalQuery: canonicalQuery(parseQuery(rawQuery)),
      headers: HEADERS,
      payloadHash: EMPTY_SHA256,
    });
    const key = signingKey(SECRET, "20150830", "us-east-1", "service");
    return hmac(key, stringToSign(DATE, SCOPE, canonical)).toString("hex");
  }

  const vectors = [
    ["get-vanilla", "GET", "", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"],
    [
      "get-vanilla-query-order-key-case",
      "GET",
      "Param2=value2&Param1=value1",
      "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ],
    [
      "post-vanilla",
      "POST",
      "",
      "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    ],
  ] as const;

  it.each(vectors)("src computes %s", (_name, method, query, expected) => {
    expect(signatureBySrc(method, "/", query)).toBe(expected);
  });

  it.each(vectors)("the test signer computes %s", (_name, method, query, expected) => {
    const signed = sign({
      method,
      canonicalQuery: canonicalQuery(parseQuery(query)),
      headers: HEADERS,
      body: "",
      accessKeyId: "AKIDEXAMPLE",
      secretAccessKey: SECRET,
      region: "us-east-1",
      service: "service",
      amzDate: DATE,
    });
    expect(signed.signature).toBe(expected);
  });

  it("normalizes paths as the SDK does for non-S3 services", () => {
    expect(canonicalUri("/")).toBe("/");
    expect(canonicalUri("/kms/")).toBe("/kms/");
    expect(canonicalUri("/a/./b/../c")).toBe("/a/c");
    expect(canonicalUri("//a//b")).toBe("/a/b");
    // Percent-encoded on the wire, encoded once more in the canonical form.
    expect(canonicalUri("/a%20b")).toBe("/a%2520b");
  });
});

describe("the test signer agrees with the AWS SDK", () => {
  it("reproduces the signature of a request the SDK sent", async () => {
    const captured: { headers: [string, string][]; body: Buffer; url: string }[] = [];
    const recorder = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const headers: [string, string][] = [];
        for (let i = 0; i < req.rawHeaders.length; i += 2) {
          headers.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
        }
        captured.push({ headers, body: Buffer.concat(chunks), url: req.url ?? "" });
        res.writeHead(200, { "content-type": "application/x-amz-json-1.1" });
        res.end('{"Plaintext":"AAAA"}');
      });
    });
    await new Promise<void>((r) => recorder.listen(0, "127.0.0.1", r));
    const client = new KMSClient({
      endpoint: `http://127.0.0.1:${(recorder.address() as AddressInfo).port}`,
      region: REGION,
      credentials: ALICE,
      maxAttempts: 1,
    });
    await client.send(new GenerateRandomCommand({ NumberOfBytes: 3 }));
    client.destroy();
    await new Promise<void>((r) => recorder.close(() => r()));

    const request = captured[0]!;
    const authorization = request.headers.find(([n]) => n.toLowerCase() === "authorization")![1];
    const parsed = parseAuthorization(authorization);
    const date = request.headers.find(([n]) => n.toLowerCase() === "x-amz-date")![1];
    const signed = sign({
      headers: request.headers.filter(([n]) => n.toLowerCase() !== "authorization"),
      signedHeaders: parsed.signedHeaders,
      body: request.body,
      ...ALICE,
      region: REGION,
      amzDate: date,
    });
    expect(signed.signature).toBe(parsed.signature);
    // The SDK covers the operation and the body type, which the server insists on.
    expect(parsed.signedHeaders).toEqual(
      expect.arrayContaining(["content-type", "host", "x-amz-date", "x-amz-target"]),
    );
  });
});

describe("hand-built requests", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ now: () => NOW });
  });
  afterAll(async () => {
    await h.close();
  });

  const BODY = '{"NumberOfBytes":16}';

  interface Build {
    target?: string;
    body?: string;
    date?: number;
    who?: { accessKeyId: string; secretAccessKey: string };
    extra?: HeaderList;
    signed?: readonly string[];
    region?: string;
    service?: string;
    scopeDate?: string;
    payloadHash?: string;
    path?: string;
    canonicalQuery?: string;
  }

  /** A GenerateRandom request, signed by ALICE at NOW unless told otherwise. */
  function build(b: Build = {}): {
    headers: [string, string][];
    body: string;
    signature: string;
    stringToSign: string;
  } {
    const body = b.body ?? BODY;
    const headers: [string, string][] = [
      ["Host", `127.0.0.1:${h.port}`],
      ["Content-Type", "application/x-amz-json-1.1"],
      ["X-Amz-Target", b.target ?? "TrentService.GenerateRandom"],
      ["X-Amz-Date", amzDate(b.date ?? NOW)],
      ...(b.extra ?? []).map(([n, v]) => [n, v] as [string, string]),
    ];
    const who = b.who ?? ALICE;
    const signed = sign({
      headers,
      body,
      accessKeyId: who.accessKeyId,
      secretAccessKey: who.secretAccessKey,
      region: b.region ?? REGION,
      amzDate: amzDate(b.date ?? NOW),
      ...(b.service !== undefined ? { service: b.service } : {}),
      ...(b.signed !== undefined ? { signedHeaders: b.signed } : {}),
      ...(b.scopeDate !== undefined ? { scopeDate: b.scopeDate } : {}),
      ...(b.payloadHash !== undefined ? { payloadHash: b.payloadHash } : {}),
      ...(b.path !== undefined ? { path: b.path } : {}),
      ...(b.canonicalQuery !== undefined ? { canonicalQuery: b.canonicalQuery } : {}),
    });
    return {
      headers: [
        ...headers,
        ["Authorization", signed.authorization],
        ["Content-Length", String(Buffer.byteLength(body))],
      ],
      body,
      signature: signed.signature,
      stringToSign: signed.stringToSign,
    };
  }

  async function send(
    r: { headers: HeaderList; body: string },
    target = "/",
  ): ReturnType<typeof rawRequest> {
    return rawRequest(h.port, { headers: r.headers, body: r.body, target });
  }

  function replace(headers: HeaderList, name: string, value: string): [string, string][] {
    return headers.map(([n, v]) => [n, n.toLowerCase() === name ? value : v]);
  }

  it("accepts a correctly signed request (the control for every refusal below)", async () => {
    const res = await send(build());
    expect(res.status).toBe(200);
    expect(Buffer.from(String(res.json.Plaintext), "base64")).toHaveLength(16);
  });

  it("refuses a body changed by one byte", async () => {
    const r = build();
    expect((await send(r)).status).toBe(200);
    const res = await send({ ...r, body: '{"NumberOfBytes":17}' });
    expect(res.status).toBe(400);
    expect(res.json.__type).toBe("InvalidSignatureException");
  });

  it("refuses a signed request whose X-Amz-Target is swapped for another operation", async () => {
    const body = JSON.stringify({ KeyId: "alias/none", CiphertextBlob: "AAAA" });
    const r = build({ target: "TrentService.Decrypt", body });
    // Signed for Decrypt, it reaches Decrypt (which finds no such key).
    expect((await send(r)).json.__type).toBe("NotFoundException");
    const swapped = replace(r.headers, "x-amz-target", "TrentService.Encrypt");
    const res = await send({ headers: swapped, body });
    expect(res.json.__type).toBe("InvalidSignatureException");
  });

  it.each(["x-amz-target", "content-type", "host", "x-amz-date"])(
    "refuses a signature that does not cover %s",
    async (left) => {
      const all = ["content-type", "host", "x-amz-date", "x-amz-target"];
      expect((await send(build({ signed: all }))).status).toBe(200);
      const res = await send(build({ signed: all.filter((n) => n !== left) }));
      expect(res.status).toBe(400);
      expect(res.json.__type).toBe("InvalidSignatureException");
      expect(res.json.message).toContain(`'${left}' must be a SignedHeader`);
    },
  );

  it("refuses a signed header that the request does not carry", async () => {
    const res = await send(
      build({ signed: ["content-type", "host", "x-amz-date", "x-amz-target", "x-custom"] }),
    );
    expect(res.json.__type).toBe("InvalidSignatureException");
  });

  it.each([
    ["another region", { region: "us-east-1" }, "region"],
    ["another service", { service: "s3" }, "service"],
    ["another date in the scope", { scopeDate: "20260114" }, "Date in Credential scope"],
  ] as const)("refuses a credential scoped to %s", async (_what, change, message) => {
    const res = await send(build(change));
    expect(res.status).toBe(400);
    expect(res.json.__type).toBe("InvalidSignatureException");
    expect(res.json.message).toContain(message);
  });

  it("accepts X-Amz-Date up to 5 minutes away and refuses it beyond", async () => {
    expect((await send(build({ date: NOW - 300_000 }))).status).toBe(200);
    expect((await send(build({ date: NOW + 300_000 }))).status).toBe(200);
    const old = await send(build({ date: NOW - 301_000 }));
    expect(old.json.__type).toBe("InvalidSignatureException");
    expect(old.json.message).toMatch(/^Signature expired: 20260115T115459Z is now earlier than/);
    const future = await send(build({ date: NOW + 301_000 }));
    expect(future.json.__type).toBe("InvalidSignatureException");
    expect(future.json.message).toMatch(/^Signature not yet current: /);
  });

  it("counts clockSkewSeconds in whole seconds, as X-Amz-Date does", async () => {
    let clock = NOW;
    const strict = await startHarness({ now: () => clock, clockSkewSeconds: 1 });
    const at = async (serverTime: number) => {
      clock = serverTime;
      return rawRequest(strict.port, { ...build({ date: NOW }), target: "/" });
    };
    try {
      // Signed at 12:00:00.xxx, so dated 12:00:00: the clock's milliseconds must not count
      // against it, or a 1-second window refuses requests that took a few milliseconds.
      expect((await at(NOW + 1999)).status).toBe(200);
      expect((await at(NOW - 1000)).status).toBe(200);
      const old = await at(NOW + 2000);
      expect(old.json.__type).toBe("InvalidSignatureException");
      expect(old.json.message).toBe(
        "Signature expired: 20260115T120000Z is now earlier than 20260115T120001Z " +
          "(20260115T120002Z - 1 s)",
      );
      const early = await at(NOW - 1001);
      expect(early.json.__type).toBe("InvalidSignatureException");
      expect(early.json.message).toBe(
        "Signature not yet current: 20260115T120000Z is still later than 20260115T115959Z " +
          "(20260115T115958Z + 1 s)",
      );
    } finally {
      await strict.close();
    }
  });

  it.each([Number.NaN, undefined, "1768478400000"])(
    "fails closed when the server's clock returns %s: no date passes unchecked",
    async (reading) => {
      const broken = await startHarness({ now: () => reading as number });
      try {
        const res = await signedCall(broken.port, REGION, "GenerateRandom", BODY);
        expect(res.status).toBe(500);
        expect(res.json.__type).toBe("KMSInternalException");
      } finally {
        await broken.close();
      }
    },
  );

  it.each(["AKIAUNKNOWN00000000", "constructor", "__proto__", "toString"])(
    "refuses the unknown access key id %s",
    async (accessKeyId) => {
      const res = await send(
        build({ who: { accessKeyId, secretAccessKey: ALICE.secretAccessKey } }),
      );
      expect(res.status).toBe(400);
      expect(res.json.__type).toBe("UnrecognizedClientException");
    },
  );

  it("refuses a signature made with the wrong secret and echoes nothing secret", async () => {
    const right = build();
    const wrong = build({
      who: { accessKeyId: ALICE.accessKeyId, secretAccessKey: BOB.secretAccessKey },
    });
    const res = await send(wrong);
    expect(res.json.__type).toBe("InvalidSignatureException");
    for (const secret of [
      ALICE.secretAccessKey,
      BOB.secretAccessKey,
      right.signature,
      wrong.signature,
      right.stringToSign,
      right.stringToSign.split("\n")[3]!,
    ]) {
      expect(res.body).not.toContain(secret);
      expect(JSON.stringify(res.headers)).not.toContain(secret);
    }
  });

  it.each([
    ["X-Amz-Target", "TrentService.GenerateRandom"],
    ["Content-Type", "application/x-amz-json-1.1"],
    ["Host", "127.0.0.1"],
    ["X-Amz-Date", amzDate(NOW)],
    ["Authorization", "AWS4-HMAC-SHA256 Credential=x"],
  ])("refuses a second %s header", async (name, value) => {
    const r = build();
    const res = await send({ headers: [...r.headers, [name, value]], body: r.body });
    expect(res.status).toBe(400);
    expect(res.json.__type).toBe("IncompleteSignatureException");
  });

  it("signs a repeated ordinary header as its values joined by commas", async () => {
    const extra: HeaderList = [
      ["X-Custom", "a"],
      ["X-Custom", "b   c"],
    ];
    const signed = ["content-type", "host", "x-amz-date", "x-amz-target", "x-custom"];
    const r = build({ extra, signed });
    expect((await send(r)).status).toBe(200);
    // Dropping one of the two values changes what was signed.
    const res = await send({
      headers: r.headers.filter(([n, v]) => !(n === "X-Custom" && v === "a")),
      body: r.body,
    });
    expect(res.json.__type).toBe("InvalidSignatureException");
  });

  it("treats header names case-insensitively", async () => {
    const r = build();
    for (const change of [(n: string) => n.toUpperCase(), (n: string) => n.toLowerCase()]) {
      const res = await send({ headers: r.headers.map(([n, v]) => [change(n), v]), body: r.body });
      expect(res.status).toBe(200);
    }
  });

  it("refuses an x-amz-content-sha256 that is not the body's hash", async () => {
    const other = "f".repeat(64);
    // Signed consistently with the declared hash, as a client lying about its body would.
    const r = build({ extra: [["X-Amz-Content-Sha256", other]], payloadHash: other });
    const res = await send(r);
    expect(res.json.__type).toBe("InvalidSignatureException");
    expect(res.json.message).toContain("x-amz-content-sha256");
    const unsigned = build({
      extra: [["X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"]],
      payloadHash: "UNSIGNED-PAYLOAD",
    });
    expect((await send(unsigned)).json.__type).toBe("InvalidSignatureException");
    // The true hash is accepted.
    const hash = (await import("node:crypto")).createHash("sha256").update(BODY).digest("hex");
    expect((await send(build({ extra: [["X-Amz-Content-Sha256", hash]] }))).status).toBe(200);
  });

  it("refuses a request without an Authorization header", async () => {
    const r = build();
    const res = await send({
      headers: r.headers.filter(([n]) => n !== "Authorization"),
      body: r.body,
    });
    expect(res.status).toBe(400);
    expect(res.json.__type).toBe("MissingAuthenticationTokenException");
  });

  it("refuses session tokens (X-Amz-Security-Token), signed or not", async () => {
    const signed = build({ extra: [["X-Amz-Security-Token", "FwoGZXIvYXdzEXAMPLE"]] });
    expect((await send(signed)).json.__type).toBe("UnrecognizedClientException");
  });

  it("refuses presigned (query-string) authentication", async () => {
    const r = build();
    const res = await send(
      { headers: r.headers.filter(([n]) => n !== "Authorization"), body: r.body },
      "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x&X-Amz-Signature=y",
    );
    expect(res.json.__type).toBe("IncompleteSignatureException");
  });

  it("includes the query string in the canonical request", async () => {
    const r = build({ canonicalQuery: "a=1&b=x%20y" });
    expect((await send(r, "/?b=x%20y&a=1")).status).toBe(200);
    expect((await send(r, "/?b=x%20z&a=1")).json.__type).toBe("InvalidSignatureException");
  });

  it.each([
    ["another scheme", "Bearer abc"],
    ["no parameters", "AWS4-HMAC-SHA256"],
    [
      "another algorithm",
      "AWS4-HMAC-SHA512 Credential=a/20260115/eu-test-1/kms/aws4_request, SignedHeaders=host, Signature=" +
        "0".repeat(64),
    ],
    [
      "no Signature",
      `AWS4-HMAC-SHA256 Credential=${ALICE.accessKeyId}/20260115/eu-test-1/kms/aws4_request, SignedHeaders=host`,
    ],
    [
      "a short Signature",
      `AWS4-HMAC-SHA256 Credential=${ALICE.accessKeyId}/20260115/eu-test-1/kms/aws4_request, SignedHeaders=host, Signature=abc`,
    ],
    [
      "an uppercase Signature",
      `AWS4-HMAC-SHA256 Credential=${ALICE.accessKeyId}/20260115/eu-test-1/kms/aws4_request, SignedHeaders=host, Signature=${"A".repeat(64)}`,
    ],
    [
      "a repeated parameter",
      `AWS4-HMAC-SHA256 Credential=a/20260115/eu-test-1/kms/aws4_request, Credential=b/20260115/eu-test-1/kms/aws4_request, SignedHeaders=host, Signature=${"0".repeat(64)}`,
    ],
    [
      "an unknown parameter",
      `AWS4-HMAC-SHA256 Credential=a/20260115/eu-test-1/kms/aws4_request, SignedHeaders=host, Signature=${"0".repeat(64)}, Extra=1`,
    ],
    [
      "unsorted SignedHeaders",
      `AWS4-HMAC-SHA256 Credential=a/20260115/eu-test-1/kms/aws4_request, SignedHeaders=x-amz-date;host, Signature=${"0".repeat(64)}`,
    ],
    [
      "uppercase SignedHeaders",
      `AWS4-HMAC-SHA256 Credential=a/20260115/eu-test-1/kms/aws4_request, SignedHeaders=Host, Signature=${"0".repeat(64)}`,
    ],
    [
      "a short Credential",
      `AWS4-HMAC-SHA256 Credential=a/20260115/eu-test-1/kms, SignedHeaders=host, Signature=${"0".repeat(64)}`,
    ],
  ])("refuses an Authorization header with %s", async (_what, authorization) => {
    const r = build();
    const res = await send({
      headers: replace(r.headers, "authorization", authorization),
      body: r.body,
    });
    expect(res.status).toBe(400);
    expect(res.json.__type).toBe("IncompleteSignatureException");
  });

  it.each(["", "2026-01-15T12:00:00Z", "20260230T120000Z", "20260115T120000", "20260115T240000Z"])(
    "refuses the X-Amz-Date %j",
    async (value) => {
      const r = build();
      const headers =
        value === ""
          ? r.headers.filter(([n]) => n !== "X-Amz-Date")
          : replace(r.headers, "x-amz-date", value);
      const res = await send({ headers, body: r.body });
      expect(res.json.__type).toBe("IncompleteSignatureException");
    },
  );

  it("puts no secret, signature or string to sign in any response", () => {
    expect(h.responses.length).toBeGreaterThan(40);
    for (const { body } of h.responses) {
      expect(body).not.toContain(ALICE.secretAccessKey);
      expect(body).not.toContain(BOB.secretAccessKey);
      expect(body).not.toContain("AWS4-HMAC-SHA256\n");
    }
  });
});

describe("through the AWS SDK", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h.close();
  });

  it("accepts the SDK's signatures and refuses a wrong secret or an unknown key", async () => {
    const ok = await h.client().send(new GenerateRandomCommand({ NumberOfBytes: 8 }));
    expect(ok.Plaintext).toHaveLength(8);
    const wrong = h.client({ accessKeyId: ALICE.accessKeyId, secretAccessKey: "not-the-secret" });
    const e1 = await wrong
      .send(new GenerateRandomCommand({ NumberOfBytes: 8 }))
      .catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(KMSServiceException);
    expect((e1 as KMSServiceException).name).toBe("InvalidSignatureException");
    const unknown = h.client({ accessKeyId: "AKIANOBODY", secretAccessKey: "x" });
    const e2 = await unknown
      .send(new GenerateRandomCommand({ NumberOfBytes: 8 }))
      .catch((e: unknown) => e);
    expect((e2 as KMSServiceException).name).toBe("UnrecognizedClientException");
    expect((e2 as KMSServiceException).$metadata.httpStatusCode).toBe(400);
  });

  it("refuses the SDK's requests when the server's region differs", async () => {
    const other = await startHarness({ region: "us-west-2" });
    try {
      const e = await other
        .client()
        .send(new GenerateRandomCommand({ NumberOfBytes: 8 }))
        .catch((x: unknown) => x);
      expect((e as KMSServiceException).name).toBe("InvalidSignatureException");
      expect((e as KMSServiceException).message).toContain("us-west-2");
    } finally {
      await other.close();
    }
  });
});
