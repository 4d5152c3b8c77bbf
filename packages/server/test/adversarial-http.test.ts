/**
 * The HTTP layer under abuse: clients that never authenticate but send (or promise) bodies,
 * clients that go away mid-request, pipelining, framing conflicts, odd methods and paths, header
 * floods. Each case ends with the server still answering a normal request.
 */
import * as http from "node:http";
import * as net from "node:net";
import { GenerateRandomCommand } from "@aws-sdk/client-kms";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServerCredential } from "../src/index.ts";
import { ALICE, type Harness, REGION, startHarness } from "./support/harness.ts";
import { amzDate, type HeaderList, rawRequest, sign } from "./support/raw-http.ts";
import { signedCall, signedHeaders } from "./support/signed-call.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h.close();
});

const BODY = '{"NumberOfBytes":4}';
const target = "TrentService.GenerateRandom";

async function expectHealthy(harness: Harness = h): Promise<void> {
  const { Plaintext } = await harness
    .client()
    .send(new GenerateRandomCommand({ NumberOfBytes: 8 }));
  expect(Plaintext).toHaveLength(8);
}

/** A request head as text, for writing straight onto a socket. */
function head(method: string, path: string, headers: HeaderList): string {
  return [`${method} ${path} HTTP/1.1`, ...headers.map(([n, v]) => `${n}: ${v}`), "", ""].join(
    "\r\n",
  );
}

/** Writes `data` on a fresh connection and collects everything until the server closes it. */
function exchange(port: number, data: string, waitMs = 500): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, "127.0.0.1", () => socket.write(data));
    let received = "";
    socket.on("data", (d) => {
      received += d.toString("latin1");
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(received));
    setTimeout(() => socket.destroy(), waitMs).unref();
  });
}

/** Headers of a GenerateRandom request that is not correctly signed, in the way named. */
function unauthenticated(kind: string): [string, string][] {
  const base: [string, string][] = [
    ["Host", "127.0.0.1"],
    ["Content-Type", "application/x-amz-json-1.1"],
    ["X-Amz-Target", target],
    ["X-Amz-Date", amzDate(Date.now())],
  ];
  const signedBy = (who: { accessKeyId: string; secretAccessKey: string }, region = REGION) =>
    sign({ headers: base, body: BODY, ...who, region, amzDate: amzDate(Date.now()) }).authorization;
  switch (kind) {
    case "no Authorization":
      return base;
    case "a malformed Authorization":
      return [...base, ["Authorization", "AWS4-HMAC-SHA256 Credential=x"]];
    case "an unknown access key id":
      return [
        ...base,
        ["Authorization", signedBy({ accessKeyId: "AKIANOBODY", secretAccessKey: "s" })],
      ];
    case "another region":
      return [...base, ["Authorization", signedBy(ALICE, "us-east-1")]];
    default:
      throw new Error(kind);
  }
}

const CODES: Record<string, string> = {
  "no Authorization": "MissingAuthenticationTokenException",
  "a malformed Authorization": "IncompleteSignatureException",
  "an unknown access key id": "UnrecognizedClientException",
  "another region": "InvalidSignatureException",
};

describe("clients that cannot authenticate", () => {
  it.each(Object.keys(CODES))(
    "are answered from the headers, before the body is read (%s)",
    async (kind) => {
      const res = await rawRequest(h.port, {
        headers: [...unauthenticated(kind), ["Transfer-Encoding", "chunked"]],
        *chunks() {
          // 4 MiB on offer; the server's limit is 256 KiB.
          for (let i = 0; i < 64; i++) yield Buffer.alloc(64 * 1024, 0x20);
        },
      });
      expect(res.json.__type).toBe(CODES[kind]);
      // Answered before the body limit was reached: none of it had to be held.
      expect(res.sent).toBeLessThan(256 * 1024);
    },
  );

  it("cannot hold connections open by promising bodies they never send", async () => {
    // Each declares 200 KB and sends none: waiting for the body would leave every one pending
    // until the server's request timeout.
    const headers: HeaderList = [
      ...unauthenticated("no Authorization"),
      ["Content-Length", "200000"],
    ];
    const answers = await Promise.all(
      Array.from({ length: 100 }, () => rawRequest(h.port, { headers, body: "" })),
    );
    for (const res of answers) expect(res.json.__type).toBe("MissingAuthenticationTokenException");
    await expectHealthy();
  });

  it("are disconnected when they keep owing the body after the answer", async () => {
    const res = await rawRequest(h.port, {
      headers: [...unauthenticated("an unknown access key id"), ["Content-Length", "200000"]],
      body: "",
      waitForClose: true,
    });
    expect(res.json.__type).toBe("UnrecognizedClientException");
    expect(res.closedAt - res.answeredAt).toBeGreaterThanOrEqual(1500);
    expect(res.closedAt - res.answeredAt).toBeLessThan(5000);
  });
});

describe("clients that go away", () => {
  it("mid-body: the handler settles, the Kms is never called, nothing is left pending", async () => {
    const before = h.responses.length;
    const events = (await h.kms.audit.events()).length;
    const body = " ".repeat(1000);
    const socket = net.connect(h.port, "127.0.0.1");
    await new Promise<void>((resolve) => socket.on("connect", resolve));
    socket.write(head("POST", "/", signedHeaders(h.port, REGION, target, body)));
    socket.write(body.slice(0, 10));
    await new Promise((r) => setTimeout(r, 20));
    socket.destroy();
    await expect.poll(() => h.responses.length).toBe(before + 1);
    expect(JSON.parse(h.responses.at(-1)!.body).__type).toBe("SerializationException");
    expect((await h.kms.audit.events()).length).toBe(events);
    await expectHealthy();
  });

  it("while their access key is being looked up: the handler still settles", async () => {
    let lookups = 0;
    let release: () => void = () => undefined;
    const slow = await startHarness({
      credentials: async (accessKeyId): Promise<ServerCredential | undefined> => {
        lookups++;
        if (lookups === 1) await new Promise<void>((r) => (release = r));
        return accessKeyId === ALICE.accessKeyId
          ? { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal }
          : undefined;
      },
    });
    try {
      const socket = net.connect(slow.port, "127.0.0.1");
      await new Promise<void>((resolve) => socket.on("connect", resolve));
      socket.write(head("POST", "/", signedHeaders(slow.port, REGION, target, BODY)));
      await expect.poll(() => lookups).toBe(1);
      socket.destroy();
      await new Promise((r) => setTimeout(r, 20));
      release();
      // The body can no longer arrive: reading it must fail, not wait forever.
      await expect.poll(() => slow.responses.length).toBe(1);
      expect(JSON.parse(slow.responses[0]!.body).__type).toBe("SerializationException");
      await expectHealthy(slow);
    } finally {
      await slow.close();
    }
  });
});

describe("framing", () => {
  it("answers pipelined requests on one connection in order, an error among them", async () => {
    const second = '{"NumberOfBytes":2}';
    const text = await exchange(
      h.port,
      head("POST", "/", signedHeaders(h.port, REGION, target, BODY)) +
        BODY +
        head("GET", "/", [
          ["Host", "x"],
          ["Content-Length", "3"],
        ]) +
        "abc" +
        head("POST", "/", signedHeaders(h.port, REGION, target, second)) +
        second,
    );
    // Bodies carry no line break: each response's body runs into the next status line.
    const responses = text.split(/(?=HTTP\/1\.1 \d{3} )/);
    expect(responses.map((r) => r.slice(9, 12))).toEqual(["200", "400", "200"]);
    const bodies = responses.map((r) => JSON.parse(r.slice(r.indexOf("\r\n\r\n") + 4)));
    expect(Buffer.from(bodies[0].Plaintext, "base64")).toHaveLength(4);
    expect(bodies[1].__type).toBe("UnknownOperationException");
    expect(Buffer.from(bodies[2].Plaintext, "base64")).toHaveLength(2);
  });

  it("leaves Transfer-Encoding with Content-Length to node, which refuses it", async () => {
    const headers = signedHeaders(h.port, REGION, target, BODY);
    const text = await exchange(
      h.port,
      head("POST", "/", [...headers, ["Transfer-Encoding", "chunked"]]) +
        `${BODY.length.toString(16)}\r\n${BODY}\r\n0\r\n\r\n`,
    );
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(text).not.toContain("Plaintext");
    await expectHealthy();
  });

  it("reads only Content-Length bytes: a longer signed body fails the signature", async () => {
    // The extra bytes are a line break, which node skips between requests; anything else would
    // be a malformed next request, refused by node before this one is answered.
    const full = `${BODY}\r\n`;
    const headers = signedHeaders(h.port, REGION, target, full).map(([n, v]): [string, string] =>
      n === "Content-Length" ? [n, String(BODY.length)] : [n, v],
    );
    const text = await exchange(h.port, head("POST", "/", headers) + full);
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(text).toContain('"__type":"InvalidSignatureException"');
    expect(text).not.toContain("Plaintext");
  });

  it("answers Expect: 100-continue with 100, then the response", async () => {
    const headers = signedHeaders(h.port, REGION, target, BODY, ALICE, [
      ["Expect", "100-continue"],
    ]);
    const result = await new Promise<{ continued: boolean; status: number; body: string }>(
      (resolve, reject) => {
        let continued = false;
        const req = http.request({
          host: "127.0.0.1",
          port: h.port,
          method: "POST",
          path: "/",
          headers: Object.fromEntries(headers),
        });
        req.on("continue", () => {
          continued = true;
          req.end(BODY);
        });
        req.on("response", (res) => {
          let body = "";
          res.on("data", (c: Buffer) => {
            body += c.toString();
          });
          res.on("end", () => resolve({ continued, status: res.statusCode ?? 0, body }));
        });
        req.on("error", reject);
        req.flushHeaders();
      },
    );
    expect(result.continued).toBe(true);
    expect(result.status).toBe(200);
    expect(Buffer.from(JSON.parse(result.body).Plaintext, "base64")).toHaveLength(4);
  });
});

describe("methods and paths", () => {
  it.each(["GET", "OPTIONS", "PUT", "DELETE", "PATCH"])(
    "refuses %s / with UnknownOperationException, signature or not",
    async (method) => {
      const res = await rawRequest(h.port, {
        method,
        headers: signedHeaders(h.port, REGION, target, BODY),
        body: BODY,
      });
      expect(res.status).toBe(400);
      expect(res.json.__type).toBe("UnknownOperationException");
      expect(res.headers["x-amzn-errortype"]).toBe("UnknownOperationException");
    },
  );

  it("refuses HEAD / likewise, in its headers (a HEAD answer has no body)", async () => {
    const text = await exchange(
      h.port,
      head("HEAD", "/", signedHeaders(h.port, REGION, target, "")),
      100,
    );
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(text).toMatch(/\r\nx-amzn-ErrorType: UnknownOperationException\r\n/);
    expect(text.endsWith("\r\n\r\n")).toBe(true);
  });

  it.each(["//", "/./", "/a/..", "/%2F", "/%2e", "/.", "/..", "//?x=1", "*"])(
    "serves / only, not %s, even where SigV4 would normalize it to /",
    async (path) => {
      const res = await rawRequest(h.port, {
        target: path,
        headers: signedHeaders(h.port, REGION, target, BODY),
        body: BODY,
      });
      expect(res.status).toBe(400);
      expect(res.json.__type).toBe("UnknownOperationException");
    },
  );

  it("refuses the absolute form of the request target", async () => {
    const res = await rawRequest(h.port, {
      target: `http://127.0.0.1:${h.port}/`,
      headers: signedHeaders(h.port, REGION, target, BODY),
      body: BODY,
    });
    expect(res.json.__type).toBe("UnknownOperationException");
  });
});

describe("header floods", () => {
  it("reads every header node keeps, and leaves heads over node's size limit to node (431)", async () => {
    const many: [string, string][] = Array.from({ length: 900 }, () => ["a", "b"]);
    const kept = await rawRequest(h.port, {
      headers: [...signedHeaders(h.port, REGION, target, BODY), ...many],
      body: BODY,
    });
    expect(kept.status).toBe(200);
    // A second Authorization far down the list is still seen, and refused.
    const hidden = await rawRequest(h.port, {
      headers: [
        ...signedHeaders(h.port, REGION, target, BODY),
        ...many,
        ["Authorization", "AWS4-HMAC-SHA256 Credential=x"],
      ],
      body: BODY,
    });
    expect(hidden.json.__type).toBe("IncompleteSignatureException");
    const big: [string, string][] = Array.from({ length: 3000 }, (_, i) => [`x-${i}`, "b"]);
    const refused = await rawRequest(h.port, {
      headers: [...signedHeaders(h.port, REGION, target, BODY), ...big],
      body: BODY,
    });
    expect(refused.status).toBe(431);
    await expectHealthy();
  });
});

describe("a normal request after all of the above", () => {
  it("is served", async () => {
    const res = await signedCall(h.port, REGION, "GenerateRandom", BODY);
    expect(res.status).toBe(200);
    await expectHealthy();
  });
});
