/**
 * The AWS JSON 1.1 envelope: routing, content type, body limits, JSON and member decoding, and
 * the error format the SDK parses.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import {
  DecryptCommand,
  GenerateRandomCommand,
  KMSClient,
  KMSServiceException,
  ListKeyRotationsCommand,
  UnsupportedOperationException,
} from "@aws-sdk/client-kms";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKmsRequestHandler, DEFAULT_MAX_BODY_BYTES } from "../src/index.ts";
import { ALICE, type Harness, REGION, startHarness } from "./support/harness.ts";
import { amzDate, type HeaderList, rawRequest, sign } from "./support/raw-http.ts";
import { signedCall } from "./support/signed-call.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ maxBodyBytes: 4096 });
});
afterAll(async () => {
  await h.close();
});

/** A request signed by ALICE now, with the given target, body and headers. */
function signed(
  body: string,
  target = "TrentService.GenerateRandom",
  contentType = "application/x-amz-json-1.1",
): [string, string][] {
  const headers: [string, string][] = [
    ["Host", `127.0.0.1:${h.port}`],
    ["Content-Type", contentType],
    ["X-Amz-Target", target],
    ["X-Amz-Date", amzDate(Date.now())],
  ];
  const { authorization } = sign({
    headers,
    body,
    ...ALICE,
    region: REGION,
    amzDate: amzDate(Date.now()),
  });
  return [
    ...headers,
    ["Authorization", authorization],
    ["Content-Length", String(Buffer.byteLength(body))],
  ];
}

async function call(body: string, target?: string): ReturnType<typeof rawRequest> {
  return rawRequest(h.port, { headers: signed(body, target), body });
}

describe("routing", () => {
  it("answers a good request with 200, JSON 1.1 and a request id", async () => {
    const res = await call('{"NumberOfBytes":4}');
    expect(res.status).toBe(200);
    expect(res.headers["content-type"]).toBe("application/x-amz-json-1.1");
    expect(res.headers["x-amzn-requestid"]).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.headers["cache-control"]).toBe("no-store");
  });

  it.each([
    ["GET /", "GET", "/", "application/x-amz-json-1.1"],
    ["POST /other", "POST", "/other", "application/x-amz-json-1.1"],
    ["PUT /", "PUT", "/", "application/x-amz-json-1.1"],
    ["a JSON content type", "POST", "/", "application/json"],
    ["the JSON 1.0 content type", "POST", "/", "application/x-amz-json-1.0"],
    // The body is read as UTF-8 only: a reader that honoured the charset would see other members.
    ["a UTF-16 charset", "POST", "/", "application/x-amz-json-1.1; charset=utf-16"],
    ["a Latin-1 charset", "POST", "/", "application/x-amz-json-1.1;charset=ISO-8859-1"],
    [
      "a UTF-8 charset then another",
      "POST",
      "/",
      "application/x-amz-json-1.1; charset=utf-8; charset=utf-7",
    ],
  ])("refuses %s with UnknownOperationException", async (_what, method, target, contentType) => {
    const body = '{"NumberOfBytes":4}';
    const res = await rawRequest(h.port, {
      method,
      target,
      headers: signed(body, "TrentService.GenerateRandom", contentType),
      body,
    });
    expect(res.status).toBe(400);
    expect(res.json.__type).toBe("UnknownOperationException");
    expect(res.headers["x-amzn-errortype"]).toBe("UnknownOperationException");
    expect(res.headers["x-amzn-requestid"]).toMatch(/^[0-9a-f-]{36}$/);
  });

  it.each([
    "application/x-amz-json-1.1; charset=utf-8",
    'Application/X-Amz-Json-1.1 ; Charset="UTF-8"',
    "application/x-amz-json-1.1; version=1",
    "application/x-amz-json-1.1;charset=utf8",
  ])("accepts the content type %s", async (contentType) => {
    const body = '{"NumberOfBytes":4}';
    const res = await rawRequest(h.port, {
      headers: signed(body, "TrentService.GenerateRandom", contentType),
      body,
    });
    expect(res.status).toBe(200);
  });

  it.each([
    "TrentService.Nope",
    "Other.GenerateRandom",
    "TrentService.explain",
    "TrentService.runMaintenance",
    "TrentService.",
  ])("refuses the target %s with UnknownOperationException", async (target) => {
    const res = await call("{}", target);
    expect(res.json.__type).toBe("UnknownOperationException");
  });

  it.each(["ImportKeyMaterial", "Decapsulate", "ReplicateKey", "CreateCustomKeyStore"])(
    "answers the AWS operation %s with UnsupportedOperationException",
    async (name) => {
      const res = await call("{}", `TrentService.${name}`);
      expect(res.json.__type).toBe("UnsupportedOperationException");
      expect(res.json.message).toContain(name);
    },
  );
});

describe("the body", () => {
  it.each([
    ["gzip", [["Content-Encoding", "gzip"]]],
    ["a list ending in gzip", [["Content-Encoding", "identity, gzip"]]],
    [
      "a second header naming gzip",
      [
        ["Content-Encoding", "identity"],
        ["Content-Encoding", "GZIP"],
      ],
    ],
    ["an empty coding", [["Content-Encoding", ""]]],
  ] as const)(
    "refuses a body whose Content-Encoding is %s: it is read as sent, never decoded",
    async (_what, extra) => {
      // A JSON body a gzip-honouring proxy cannot decode, which the server would otherwise serve.
      const body = '{"NumberOfBytes":4}';
      const res = await signedCall(h.port, REGION, "GenerateRandom", body, ALICE, extra);
      expect(res.status).toBe(400);
      expect(res.json.__type).toBe("SerializationException");
      expect(res.json.message).toContain("Content-Encoding");
    },
  );

  it("accepts Content-Encoding: identity, in any case", async () => {
    for (const coding of ["identity", "Identity", "identity, IDENTITY"]) {
      const body = '{"NumberOfBytes":4}';
      const res = await signedCall(h.port, REGION, "GenerateRandom", body, ALICE, [
        ["Content-Encoding", coding],
      ]);
      expect(res.status, coding).toBe(200);
    }
  });

  it("refuses a body that is not JSON, or not a JSON object", async () => {
    for (const body of ["not json", "", '{"NumberOfBytes":4', "[]", "null", '"x"']) {
      const res = await call(body);
      expect(res.status, body).toBe(400);
      expect(res.json.__type, body).toBe("SerializationException");
    }
  });

  it("refuses members of the wrong JSON type", async () => {
    for (const body of [
      '{"NumberOfBytes":"4"}',
      '{"NumberOfBytes":4.5}',
      '{"NumberOfBytes":true}',
    ]) {
      const res = await call(body);
      expect(res.json.__type, body).toBe("SerializationException");
      expect(res.json.message).toContain("GenerateRandomRequest.NumberOfBytes");
    }
    const ctx = await call(
      '{"KeyId":"k","Plaintext":"AA==","EncryptionContext":{"a":1}}',
      "TrentService.Encrypt",
    );
    expect(ctx.json.__type).toBe("SerializationException");
  });

  it("refuses blobs that are not base64", async () => {
    for (const blob of ["***", "AAA", "AA=A", "AAAA====", "A\nAA"]) {
      const body = JSON.stringify({ KeyId: "k", Plaintext: blob });
      const res = await call(body, "TrentService.Encrypt");
      expect(res.json.__type, blob).toBe("SerializationException");
    }
  });

  it("refuses members the operation does not have, including camelCase spellings", async () => {
    for (const body of [
      '{"numberOfBytes":4}',
      '{"NumberOfBytes":4,"Extra":1}',
      '{"__proto__":{}}',
    ]) {
      const res = await call(body);
      expect(res.json.__type, body).toBe("SerializationException");
      expect(res.json.message).toContain("is not a member of GenerateRandomRequest");
    }
  });

  it("treats a null member as absent", async () => {
    const res = await call('{"NumberOfBytes":4,"CustomKeyStoreId":null}');
    expect(res.status).toBe(200);
  });

  it("refuses a member AWS has and this server does not implement, through the SDK too", async () => {
    const res = await call('{"NumberOfBytes":4,"CustomKeyStoreId":"cks-1"}');
    expect(res.json.__type).toBe("UnsupportedOperationException");
    const client = h.client();
    // Ignoring Recipient would send back the plaintext the caller wanted sealed for an enclave.
    const e = await client
      .send(
        new DecryptCommand({
          CiphertextBlob: new Uint8Array(8),
          Recipient: {
            KeyEncryptionAlgorithm: "RSAES_OAEP_SHA_256",
            AttestationDocument: new Uint8Array(4),
          },
        }),
      )
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnsupportedOperationException);
    expect((e as Error).message).toContain("Recipient");
    const rotations = await client
      .send(new ListKeyRotationsCommand({ KeyId: "k", IncludeKeyMaterial: "ALL_KEY_MATERIAL" }))
      .catch((x: unknown) => x);
    expect(rotations).toBeInstanceOf(UnsupportedOperationException);
  });

  it(`defaults to a limit of ${DEFAULT_MAX_BODY_BYTES} bytes`, () => {
    expect(DEFAULT_MAX_BODY_BYTES).toBe(262144);
  });

  it("accepts a body of exactly the limit and refuses one byte more", async () => {
    const pad = (n: number): string => {
      const base = '{"NumberOfBytes":4,"CustomKeyStoreId":null}';
      return `${base.slice(0, -1)}${" ".repeat(n - base.length)}}`;
    };
    expect((await call(pad(4096))).status).toBe(200);
    const res = await call(pad(4097));
    expect(res.status).toBe(413);
    expect(res.json.__type).toBe("RequestEntityTooLargeException");
  });

  it("refuses a declared Content-Length over the limit before reading the body", async () => {
    const headers: HeaderList = [
      ...signed("{}").filter(([n]) => n !== "Content-Length"),
      ["Content-Length", "100000000"],
    ];
    // Not one body byte is sent: the answer comes from the headers alone, and a client that
    // then neither sends the body nor goes away is disconnected after a grace period.
    const res = await rawRequest(h.port, { headers, body: "", waitForClose: true });
    expect(res.status).toBe(413);
    expect(res.json.__type).toBe("RequestEntityTooLargeException");
    expect(res.closedAt - res.answeredAt).toBeGreaterThanOrEqual(1500);
    expect(res.closedAt - res.answeredAt).toBeLessThan(5000);
  });

  it("stops a chunked body as soon as it passes the limit", async () => {
    const headers: HeaderList = [
      ...signed("{}").filter(([n]) => n !== "Content-Length"),
      ["Transfer-Encoding", "chunked"],
    ];
    const res = await rawRequest(h.port, {
      headers,
      *chunks() {
        // Up to 64 MiB would be sent if the server kept reading.
        for (let i = 0; i < 1024; i++) yield Buffer.alloc(64 * 1024, 0x20);
      },
    });
    expect(res.status).toBe(413);
    expect(res.json.__type).toBe("RequestEntityTooLargeException");
    expect(res.sent).toBeLessThan(8 * 1024 * 1024);
  });

  it("accepts a small chunked body", async () => {
    const body = '{"NumberOfBytes":4}';
    const headers: HeaderList = [
      ...signed(body).filter(([n]) => n !== "Content-Length"),
      ["Transfer-Encoding", "chunked"],
    ];
    const res = await rawRequest(h.port, {
      headers,
      *chunks() {
        yield Buffer.from(body.slice(0, 5));
        yield Buffer.from(body.slice(5));
      },
    });
    expect(res.status).toBe(200);
  });
});

describe("errors as the SDK reads them", () => {
  it("carries the code in __type and x-amzn-ErrorType, and the request id the SDK reports", async () => {
    const e = await h
      .client()
      .send(new GenerateRandomCommand({ NumberOfBytes: 5000 }))
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(KMSServiceException);
    const err = e as KMSServiceException;
    expect(err.name).toBe("ValidationException");
    expect(err.$fault).toBe("client");
    const last = h.responses.at(-1)!;
    expect(JSON.parse(last.body)).toEqual({ __type: "ValidationException", message: err.message });
    expect(last.headers["x-amzn-ErrorType"]).toBe("ValidationException");
    expect(err.$metadata.requestId).toBe(last.headers["x-amzn-RequestId"]);
  });
});

describe("mounted under a path, as Express mounts middleware", () => {
  it("verifies the signature over the full path the client signed", async () => {
    const kms = h.kms;
    const handler = createKmsRequestHandler({
      kms,
      credentials: {
        [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
      },
    });
    // What app.use("/kms", handler) does: the mount path leaves req.url, stays in originalUrl.
    const server = http.createServer((req, res) => {
      const original = req.url ?? "";
      if (!original.startsWith("/kms")) {
        res.writeHead(404).end();
        return;
      }
      Object.assign(req, { originalUrl: original, url: original.slice(4) || "/" });
      handler(req, res);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const client = new KMSClient({
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}/kms`,
      region: REGION,
      credentials: ALICE,
      maxAttempts: 1,
    });
    const random = await client.send(new GenerateRandomCommand({ NumberOfBytes: 4 }));
    expect(random.Plaintext).toHaveLength(4);
    client.destroy();
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  it("says so when a body parser consumed the body first", async () => {
    const handler = createKmsRequestHandler({
      kms: h.kms,
      credentials: {
        [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
      },
    });
    const server = http.createServer((req, res) => {
      req.resume();
      req.on("end", () => handler(req, res));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const body = '{"NumberOfBytes":4}';
    const res = await rawRequest((server.address() as AddressInfo).port, {
      headers: signed(body),
      body,
    });
    expect(res.status).toBe(500);
    expect(res.json.message).toContain("mount it before body parsers");
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
});
