/**
 * `allowedHosts`: a request signed for another server (replayed from one that shares the access
 * key, or sent by a page whose name was rebound to this server's address) is refused from its
 * headers, as InvalidSignatureException, before its body is read or its access key looked up.
 */
import type { AddressInfo } from "node:net";
import { GenerateRandomCommand, KMSClient } from "@aws-sdk/client-kms";
import { afterEach, describe, expect, it } from "vitest";
import {
  createKmsServer,
  type KmsServerOptions,
  type RefusedRequest,
  type ServerCredential,
} from "../src/index.ts";
import { ALICE, type Harness, REGION, startHarness } from "./support/harness.ts";
import { amzDate, type HeaderList, rawRequest, sign } from "./support/raw-http.ts";

const BODY = '{"NumberOfBytes":4}';
const TARGET = "TrentService.GenerateRandom";
const HOST_REFUSED =
  "The request is signed for a host this server does not answer to: its Host header is not " +
  "one of the server's allowedHosts.";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** Headers of a GenerateRandom correctly signed by ALICE for `signedHost`, sent with `sentHost`. */
function headersFor(signedHost: string, sentHost = signedHost): [string, string][] {
  const date = amzDate(Date.now());
  const headers: [string, string][] = [
    ["Host", signedHost],
    ["Content-Type", "application/x-amz-json-1.1"],
    ["X-Amz-Target", TARGET],
    ["X-Amz-Date", date],
  ];
  const { authorization } = sign({ headers, body: BODY, ...ALICE, region: REGION, amzDate: date });
  headers[0] = ["Host", sentHost];
  return [...headers, ["Authorization", authorization]];
}

function call(port: number, headers: HeaderList) {
  return rawRequest(port, {
    headers: [...headers, ["Content-Length", String(BODY.length)]],
    body: BODY,
  });
}

const ALLOWED = ["KMS.Internal", "localhost:8443", "[0:0::1]", "edge.example.:443"];

describe("a server with allowedHosts", () => {
  it.each([
    // A name without a port: any port, or none; case and one trailing dot do not matter.
    "kms.internal",
    "kms.internal:4599",
    "KMS.INTERNAL:1",
    "kms.internal.",
    "Kms.Internal.:8443",
    // A name with a port: that port, however it is written.
    "localhost:8443",
    "LocalHost:08443",
    // IPv6 literals in brackets, compared in their canonical form.
    "[::1]",
    "[::1]:4599",
    "[0:0:0:0:0:0:0:1]:9",
    // Port 443 listed: the name without a port is what a client sends for https://edge.example.
    "edge.example",
    "edge.example:443",
    "EDGE.example.",
  ])("accepts a request signed for %s", async (host) => {
    h = await startHarness({ allowedHosts: ALLOWED });
    const res = await call(h.port, headersFor(host));
    expect(res.status).toBe(200);
    expect(Buffer.from(res.json.Plaintext as string, "base64")).toHaveLength(4);
  });

  it.each([
    "kms.internal.evil.example",
    "evil.example",
    "kms-internal",
    "kms.internal..",
    // localhost is listed with port 8443 only.
    "localhost",
    "localhost:8444",
    "[::2]",
    "[::1]:",
    "[fe80::1%25eth0]",
    // Port 443 listed: another port of that name is another server.
    "edge.example:8443",
    "edge.example:80",
    "kms.internal:",
    "kms.internal:99999",
    "kms.internal:0",
    "kms.internal@evil.example",
    "kms.internal/x",
  ])("refuses a request signed for %s with InvalidSignatureException", async (host) => {
    h = await startHarness({ allowedHosts: ALLOWED });
    const res = await call(h.port, headersFor(host));
    expect(res.status).toBe(400);
    expect(res.headers["x-amzn-errortype"]).toBe("InvalidSignatureException");
    expect(res.json).toEqual({ __type: "InvalidSignatureException", message: HOST_REFUSED });
  });

  it("answers from the headers: the body is not read and the access key is not looked up", async () => {
    let lookups = 0;
    const credentials = (accessKeyId: string): ServerCredential | undefined => {
      lookups++;
      return accessKeyId === ALICE.accessKeyId
        ? { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal }
        : undefined;
    };
    h = await startHarness({ credentials, allowedHosts: ["kms.internal"] });
    const res = await rawRequest(h.port, {
      headers: [...headersFor("kms-b.internal"), ["Transfer-Encoding", "chunked"]],
      *chunks() {
        // 4 MiB on offer; the server's limit is 256 KiB.
        for (let i = 0; i < 64; i++) yield Buffer.alloc(64 * 1024, 0x20);
      },
    });
    expect(res.json.__type).toBe("InvalidSignatureException");
    // Answered before the body limit was reached: none of it had to be held.
    expect(res.sent).toBeLessThan(256 * 1024);
    expect(lookups).toBe(0);
    expect(await h.kms.audit.events()).toHaveLength(0);
    // The same credentials serve a request signed for the allowed name.
    expect((await call(h.port, headersFor("kms.internal"))).status).toBe(200);
    expect(lookups).toBe(1);
  });

  it("reports the refusal to onRefused, with the access key it claimed and no principal", async () => {
    const refusals: RefusedRequest[] = [];
    h = await startHarness({
      allowedHosts: ["kms-a.internal"],
      onRefused: (r) => void refusals.push(r),
    });
    const res = await call(h.port, headersFor("kms-b.internal"));
    await expect.poll(() => refusals.length).toBe(1);
    expect(refusals[0]).toEqual({
      requestId: res.headers["x-amzn-requestid"],
      code: "InvalidSignatureException",
      status: 400,
      message: HOST_REFUSED,
      operation: "GenerateRandom",
      accessKeyId: ALICE.accessKeyId,
      sourceIp: "127.0.0.1",
    });
  });

  it("still refuses a request whose Host differs from the one signed", async () => {
    h = await startHarness({ allowedHosts: ["kms-a.internal"] });
    // Signed for an allowed name, sent to another: the Host check answers.
    const toOther = await call(h.port, headersFor("kms-a.internal", "kms-b.internal"));
    expect(toOther.json).toMatchObject({
      __type: "InvalidSignatureException",
      message: HOST_REFUSED,
    });
    // Signed for another name, sent with the allowed one: the signature does not verify.
    const fromOther = await call(h.port, headersFor("kms-b.internal", "kms-a.internal"));
    expect(fromOther.json.__type).toBe("InvalidSignatureException");
    expect(fromOther.json.message).toMatch(/^The request signature we calculated does not match/);
  });
});

describe("a server without allowedHosts", () => {
  it("accepts a request signed for any host, as before", async () => {
    h = await startHarness();
    expect((await call(h.port, headersFor("anything.example:1"))).status).toBe(200);
  });

  it("still refuses a request whose Host differs from the one signed", async () => {
    h = await startHarness();
    const res = await call(h.port, headersFor("kms-a.internal", "kms-b.internal"));
    expect(res.json.__type).toBe("InvalidSignatureException");
    expect(res.json.message).toMatch(/^The request signature we calculated does not match/);
  });
});

describe("createKmsServer with allowedHosts, through the AWS SDK", () => {
  async function served(options: Partial<KmsServerOptions>) {
    h = await startHarness();
    const server = createKmsServer({
      kms: h.kms,
      credentials: {
        [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
      },
      ...options,
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const client = new KMSClient({
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      region: REGION,
      credentials: { accessKeyId: ALICE.accessKeyId, secretAccessKey: ALICE.secretAccessKey },
      maxAttempts: 1,
    });
    return {
      client,
      async close() {
        client.destroy();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      },
    };
  }

  it("serves the name the SDK signs (host and port of its endpoint)", async () => {
    const { client, close } = await served({ allowedHosts: ["localhost", "127.0.0.1"] });
    try {
      const { Plaintext } = await client.send(new GenerateRandomCommand({ NumberOfBytes: 8 }));
      expect(Plaintext).toHaveLength(8);
    } finally {
      await close();
    }
  });

  it("answers another name with an error the SDK raises as InvalidSignatureException", async () => {
    const { client, close } = await served({ allowedHosts: ["localhost"] });
    try {
      await expect(
        client.send(new GenerateRandomCommand({ NumberOfBytes: 8 })),
      ).rejects.toMatchObject({
        name: "InvalidSignatureException",
        message: HOST_REFUSED,
        $metadata: { httpStatusCode: 400 },
      });
    } finally {
      await close();
    }
  });
});
