/**
 * Transport safety: responses carry plaintext and keys, so without TLS nothing is served on a
 * non-loopback address unless insecureHttp says so.
 */
import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { CreateKeyCommand, DecryptCommand, EncryptCommand, KMSClient } from "@aws-sdk/client-kms";
import { createKms, type Kms, ValidationError } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createKmsRequestHandler,
  createKmsServer,
  type KmsServerOptions,
  type RefusedRequest,
} from "../src/index.ts";
import { isLoopback } from "../src/internal/loopback.ts";
import { ALICE, REGION } from "./support/harness.ts";
import { rawRequest } from "./support/raw-http.ts";
import { signedHeaders } from "./support/signed-call.ts";

const fixture = (name: string): Buffer =>
  readFileSync(new URL(`./fixtures/${name}`, import.meta.url));

/** A non-loopback IPv4 address of this machine, if it has one. */
const EXTERNAL = Object.values(networkInterfaces())
  .flat()
  .find((a) => a !== undefined && a.family === "IPv4" && !a.internal)?.address;

let kms: Kms;
let options: KmsServerOptions;
beforeAll(async () => {
  kms = await createKms({ region: REGION, account: "111122223333" });
  options = {
    kms,
    credentials: {
      [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
    },
  };
});
afterAll(async () => {
  await kms.close();
});

type Outcome =
  | { listening: true; port: number }
  | { listening: false; error: Error; callbackRan: boolean };

function listen(server: net.Server, ...args: unknown[]): Promise<Outcome> {
  return new Promise((resolve) => {
    let callbackRan = false;
    server.once("error", (error) => resolve({ listening: false, error, callbackRan }));
    (server.listen as (...a: unknown[]) => void)(...args, () => {
      callbackRan = true;
      resolve({ listening: true, port: (server.address() as net.AddressInfo).port });
    });
  });
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) resolve();
    else server.close(() => resolve());
  });
}

/** POST / with no signature: a served request answers MissingAuthenticationTokenException. */
function unsigned(
  target: { host: string; port: number } | { socketPath: string },
): Promise<{ status: number; type: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        ...target,
        method: "POST",
        path: "/",
        headers: {
          "content-type": "application/x-amz-json-1.1",
          "x-amz-target": "TrentService.GenerateRandom",
        },
      },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => {
          body += c.toString();
        });
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            type: (JSON.parse(body) as { __type: string }).__type,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end("{}");
  });
}

function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, host);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

describe("createKmsServer without TLS", () => {
  it("serves on loopback", async () => {
    const server = createKmsServer(options);
    const outcome = await listen(server, 0, "127.0.0.1");
    expect(outcome.listening).toBe(true);
    const port = (outcome as { port: number }).port;
    const client = new KMSClient({
      endpoint: `http://127.0.0.1:${port}`,
      region: REGION,
      credentials: ALICE,
      maxAttempts: 1,
    });
    const { KeyMetadata } = await client.send(new CreateKeyCommand({}));
    expect(KeyMetadata!.KeyId).toBeTypeOf("string");
    client.destroy();
    await close(server);
  });

  it.each([
    ["all interfaces", [0]],
    ["0.0.0.0", [0, "0.0.0.0"]],
    ["::", [0, "::"]],
    ...(EXTERNAL !== undefined
      ? [[`the external address ${EXTERNAL}`, [0, EXTERNAL]] as [string, unknown[]]]
      : []),
  ] as [string, unknown[]][])(
    "refuses to listen on %s: error event, no callback, nothing accepted",
    async (_what, args) => {
      const server = createKmsServer(options);
      const outcome = await listen(server, ...args);
      expect(outcome.listening).toBe(false);
      const { error, callbackRan } = outcome as Extract<Outcome, { listening: false }>;
      expect(error).toBeInstanceOf(ValidationError);
      expect(error.message).toContain("refuses to listen without TLS");
      expect(callbackRan).toBe(false);
      await new Promise((r) => setImmediate(r));
      expect(server.listening).toBe(false);
      const port = Number(/port (\d+)/.exec(error.message)![1]);
      expect(await connects("127.0.0.1", port)).toBe(false);
    },
  );

  it("serves on a unix socket", async () => {
    const socketPath = join(tmpdir(), `kms-server-${process.pid}-${Date.now()}.sock`);
    const server = createKmsServer(options);
    expect((await listen(server, socketPath)).listening).toBe(true);
    expect(await unsigned({ socketPath })).toEqual({
      status: 400,
      type: "MissingAuthenticationTokenException",
    });
    await close(server);
  });

  it("listens anywhere with insecureHttp: true", async () => {
    const server = createKmsServer({ ...options, insecureHttp: true });
    const outcome = await listen(server, 0, "0.0.0.0");
    expect(outcome.listening).toBe(true);
    const port = (outcome as { port: number }).port;
    if (EXTERNAL !== undefined) {
      expect(await unsigned({ host: EXTERNAL, port })).toEqual({
        status: 400,
        type: "MissingAuthenticationTokenException",
      });
    }
    await close(server);
  });

  it("bounds how long a request may take", () => {
    const server = createKmsServer(options);
    expect(server.requestTimeout).toBe(30_000);
    expect(server.headersTimeout).toBe(10_000);
  });

  // Node enforces these bounds only when it next checks its connections (every 30 s unless told
  // otherwise), so a bound shorter than that interval used to hold for 30 s instead.
  it.each([
    // A header name that keeps growing: well-formed so far, never finished.
    ["its headers", (): string => "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX", "X"],
    [
      "the body of an authenticated request",
      (port: number): string =>
        `POST / HTTP/1.1\r\n${signedHeaders(
          port,
          REGION,
          "TrentService.GenerateRandom",
          " ".repeat(1000),
        )
          .map(([name, value]) => `${name}: ${value}\r\n`)
          .join("")}\r\n`,
      " ",
    ],
  ] as const)(
    "cuts off a client that trickles %s once the bound passes",
    async (_what, head, byte) => {
      const server = createKmsServer(options);
      server.headersTimeout = 500;
      server.requestTimeout = 1000;
      const { port } = (await listen(server, 0, "127.0.0.1")) as { port: number };
      const socket = net.connect(port, "127.0.0.1");
      socket.on("error", () => {});
      let received = "";
      socket.on("data", (chunk: Buffer) => {
        received += chunk.toString("latin1");
      });
      const started = Date.now();
      socket.write(head(port));
      // A byte every 100 ms: never idle, never done.
      const trickle = setInterval(() => socket.write(byte), 100);
      const closedAfter = await new Promise<number>((resolve) => {
        socket.once("close", () => resolve(Date.now() - started));
        setTimeout(() => resolve(Number.POSITIVE_INFINITY), 12_000);
      });
      clearInterval(trickle);
      socket.destroy();
      await close(server);
      expect(received).toMatch(/^HTTP\/1\.1 408 /);
      // The bound plus one 1 s check is 2 s; the margin is for a loaded machine, and stays far
      // below the 30 s that Node's default check interval allowed.
      expect(closedAfter).toBeLessThan(10_000);
    },
    20_000,
  );
});

describe.skipIf(EXTERNAL === undefined)(
  "createKmsRequestHandler on a server of the user's own",
  () => {
    it("refuses plain-HTTP requests that arrive on a non-loopback address", async () => {
      const server = http.createServer(createKmsRequestHandler(options));
      const { port } = (await listen(server, 0, "0.0.0.0")) as { port: number };
      expect(await unsigned({ host: "127.0.0.1", port })).toEqual({
        status: 400,
        type: "MissingAuthenticationTokenException",
      });
      expect(await unsigned({ host: EXTERNAL!, port })).toEqual({
        status: 403,
        type: "InsecureTransportException",
      });
      await close(server);
      const open = http.createServer(createKmsRequestHandler({ ...options, insecureHttp: true }));
      const { port: openPort } = (await listen(open, 0, "0.0.0.0")) as { port: number };
      expect(await unsigned({ host: EXTERNAL!, port: openPort })).toEqual({
        status: 400,
        type: "MissingAuthenticationTokenException",
      });
      await close(open);
    });
  },
);

/**
 * The handler's rule on its own, whatever interfaces this machine has: a server whose sockets
 * report the given local address, as node would for a connection arriving on it.
 */
describe("createKmsRequestHandler by the local address a request arrived on", () => {
  async function arrivingOn(
    localAddress: string,
    handlerOptions: KmsServerOptions = options,
  ): Promise<{ status: number; type: string; message: string }> {
    const handler = createKmsRequestHandler(handlerOptions);
    const server = http.createServer((req, res) => {
      Object.defineProperty(req.socket, "localAddress", { value: localAddress });
      handler(req, res);
    });
    const { port } = (await listen(server, 0, "127.0.0.1")) as { port: number };
    try {
      const body = '{"NumberOfBytes":16}';
      const res = await rawRequest(port, {
        headers: signedHeaders(port, REGION, "TrentService.GenerateRandom", body),
        body,
      });
      return {
        status: res.status,
        type: String(res.json.__type),
        message: String(res.json.message),
      };
    } finally {
      await close(server);
    }
  }

  it.each(["1::", "0001::", "1::1", "10.0.0.5", "::ffff:10.0.0.5", "fd00::2"])(
    "refuses plain HTTP arriving on %s with InsecureTransportException (403)",
    async (address) => {
      const answer = await arrivingOn(address);
      expect(answer).toMatchObject({ status: 403, type: "InsecureTransportException" });
      expect(answer.message).toContain("plain HTTP is served on loopback addresses");
    },
  );

  it.each(["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"])(
    "serves plain HTTP arriving on %s",
    async (address) => {
      expect(await arrivingOn(address)).toMatchObject({ status: 200 });
    },
  );

  it("serves plain HTTP anywhere with insecureHttp: true", async () => {
    expect(await arrivingOn("10.0.0.5", { ...options, insecureHttp: true })).toMatchObject({
      status: 200,
    });
  });

  it("reports the refusal to onRefused with the same code", async () => {
    const refusals: RefusedRequest[] = [];
    await arrivingOn("1::", { ...options, onRefused: (r) => void refusals.push(r) });
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatchObject({ code: "InsecureTransportException", status: 403 });
  });
});

describe("createKmsServer with TLS", () => {
  it("listens on any address and serves the SDK over HTTPS", async () => {
    const server = createKmsServer({
      ...options,
      tls: { key: fixture("localhost-key.pem"), cert: fixture("localhost-cert.pem") },
    });
    expect(server).toBeInstanceOf(https.Server);
    const outcome = await listen(server, 0, "0.0.0.0");
    expect(outcome.listening).toBe(true);
    const port = (outcome as { port: number }).port;
    const agent = new https.Agent({ ca: fixture("localhost-cert.pem") });
    const client = new KMSClient({
      endpoint: `https://localhost:${port}`,
      region: REGION,
      credentials: ALICE,
      maxAttempts: 1,
      requestHandler: { httpsAgent: agent },
    });
    const keyId = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
    const enc = await client.send(
      new EncryptCommand({
        KeyId: keyId,
        Plaintext: Buffer.from("over tls"),
        EncryptionContext: { K: "v" },
      }),
    );
    const dec = await client.send(
      new DecryptCommand({ CiphertextBlob: enc.CiphertextBlob!, EncryptionContext: { K: "v" } }),
    );
    expect(Buffer.from(dec.Plaintext!).toString()).toBe("over tls");
    if (EXTERNAL !== undefined) {
      // The handler's own check lets TLS through on any address.
      const external = new KMSClient({
        endpoint: `https://${EXTERNAL}:${port}`,
        region: REGION,
        credentials: ALICE,
        maxAttempts: 1,
        requestHandler: {
          httpsAgent: new https.Agent({
            ca: fixture("localhost-cert.pem"),
            checkServerIdentity: () => undefined,
          }),
        },
      });
      expect((await external.send(new CreateKeyCommand({}))).KeyMetadata).toBeDefined();
      external.destroy();
    }
    client.destroy();
    agent.destroy();
    server.closeAllConnections();
    await close(server);
  });
});

describe("isLoopback", () => {
  it.each([
    ["127.0.0.1", true],
    ["127.255.0.9", true],
    ["::1", true],
    ["0:0:0:0:0:0:0:1", true],
    ["::0001", true],
    ["::ffff:127.0.0.1", true],
    ["::FFFF:127.0.0.1", true],
    ["0.0.0.0", false],
    ["::", false],
    ["10.0.0.1", false],
    ["128.0.0.1", false],
    ["::ffff:10.0.0.1", false],
    ["::2", false],
    ["1::1", false],
    // `::` stands for the zero groups, wherever it is: 1:: is 1:0:0:0:0:0:0:0, not ::1.
    ["1::", false],
    ["0001::", false],
    ["1:0:0:0:0:0:0:0", false],
    ["::ffff:7f00:1", true],
    ["0:0:0:0:0:ffff:127.0.0.1", true],
    ["::ffff:128.0.0.1", false],
    // IPv4-compatible, not mapped: not an address of this machine's loopback.
    ["::127.0.0.1", false],
    // Node reports socket addresses bare; a bracketed one is not an address at all.
    ["[::1]", false],
    ["fe80::1", false],
    ["localhost", false],
    ["", false],
  ])("%s → %s", (address, expected) => {
    expect(isLoopback(address)).toBe(expected);
  });
});
