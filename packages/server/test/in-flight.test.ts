/**
 * What one connection can make the server do at once, and what a connection already gone gets:
 * driven over raw sockets, with a Kms that counts the calls it is running.
 */
import * as http from "node:http";
import * as net from "node:net";
import { createKms, type Kms } from "@kms/core";
import { afterAll, describe, expect, it } from "vitest";
import {
  createKmsRequestHandler,
  createKmsServer,
  type KmsServerOptions,
  type RefusedRequest,
} from "../src/index.ts";
import { ALICE, REGION } from "./support/harness.ts";
import { signedHeaders } from "./support/signed-call.ts";

const TARGET = "TrentService.GenerateRandom";

const opened: Kms[] = [];
afterAll(async () => {
  await Promise.all(opened.map((k) => k.close()));
});

/** A Kms of its own whose generateRandom is slowed down and counted while it runs. */
async function counting(
  delayMs: number,
): Promise<{ kms: Kms; calls: () => number; peak: () => number }> {
  const counted = await createKms({ region: REGION, account: "111122223333" });
  const generateRandom = counted.generateRandom.bind(counted);
  let running = 0;
  let peak = 0;
  let calls = 0;
  counted.generateRandom = (async (...args: Parameters<Kms["generateRandom"]>) => {
    calls++;
    peak = Math.max(peak, ++running);
    try {
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      return await generateRandom(...args);
    } finally {
      running--;
    }
  }) as Kms["generateRandom"];
  opened.push(counted);
  return { kms: counted, calls: () => calls, peak: () => peak };
}

function options(forKms: Kms, more: Partial<KmsServerOptions> = {}): KmsServerOptions {
  return {
    kms: forKms,
    credentials: {
      [ALICE.accessKeyId]: { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal },
    },
    ...more,
  };
}

async function listening(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as net.AddressInfo).port;
}

/** GenerateRandom of `bytes` bytes signed now, as bytes for a socket. */
function request(port: number, bytes: number): string {
  const body = `{"NumberOfBytes":${bytes}}`;
  const head = signedHeaders(port, REGION, TARGET, body)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("");
  return `POST / HTTP/1.1\r\n${head}\r\n${body}`;
}

const responses = (text: string): string[] => text.split(/(?=HTTP\/1\.1 \d{3} )/).filter(Boolean);

describe("requests pipelined on one connection", () => {
  it("reach the Kms one at a time, and are all answered in order", async () => {
    const probe = await counting(5);
    const server = createKmsServer(options(probe.kms));
    const port = await listening(server);
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
    });
    const count = 200;
    try {
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      // One write: node parses every request in it before any handler has answered.
      socket.write(Array.from({ length: count }, (_, i) => request(port, 1 + (i % 64))).join(""));
      await expect.poll(() => responses(text).length, { timeout: 15_000 }).toBe(count);
      expect(probe.calls()).toBe(count);
      expect(probe.peak()).toBe(1);
      const lengths = responses(text).map((answer) => {
        expect(answer).toMatch(/^HTTP\/1\.1 200 /);
        const json = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n") + 4)) as {
          Plaintext: string;
        };
        return Buffer.from(json.Plaintext, "base64").length;
      });
      expect(lengths).toEqual(Array.from({ length: count }, (_, i) => 1 + (i % 64)));
    } finally {
      socket.destroy();
      server.closeAllConnections();
      server.close();
    }
  }, 20_000);
});

describe("a connection whose requests wait", () => {
  it("is not read from, and is still cut by server.timeout", async () => {
    const held = await createKms({ region: REGION, account: "111122223333" });
    opened.push(held);
    let calls = 0;
    // Never answers: the connection's first request holds its turn for good.
    held.generateRandom = (() => {
      calls++;
      return new Promise<never>(() => undefined);
    }) as Kms["generateRandom"];
    const server = createKmsServer(options(held));
    server.timeout = 1000;
    let dispatched = 0;
    server.on("request", () => dispatched++);
    const port = await listening(server);
    const socket = net.connect(port, "127.0.0.1");
    socket.on("error", () => undefined);
    const started = Date.now();
    const closed = new Promise<number>((resolve) =>
      socket.once("close", () => resolve(Date.now() - started)),
    );
    try {
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      const one = request(port, 8);
      // About 1.4 MB: node used to parse and dispatch every request of it.
      for (let i = 0; i < 2000 && !socket.destroyed; i++) socket.write(one);
      expect(await closed).toBeLessThan(8000);
      expect(calls).toBe(1);
      // What node had read when the first request took its turn: one read's worth at most.
      expect(dispatched).toBeLessThan(200);
    } finally {
      socket.destroy();
      server.closeAllConnections();
      server.close();
    }
  }, 15_000);
});

describe("close() with pipelined requests waiting", () => {
  it("answers the one being served with Connection: close and runs none of the others", async () => {
    const probe = await counting(200);
    const server = createKmsServer(options(probe.kms));
    const port = await listening(server);
    const socket = net.connect(port, "127.0.0.1");
    let text = "";
    socket.on("data", (chunk: Buffer) => {
      text += chunk.toString("latin1");
    });
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    try {
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      socket.write(Array.from({ length: 20 }, () => request(port, 8)).join(""));
      await expect.poll(() => probe.calls()).toBe(1);
      const done = new Promise<Error | undefined>((resolve) => server.close(resolve));
      expect(await done).toBeUndefined();
      await closed;
      expect(responses(text)).toHaveLength(1);
      expect(text).toMatch(/^HTTP\/1\.1 200 /);
      expect(text).toMatch(/\r\nConnection: close\r\n/i);
      expect(probe.calls()).toBe(1);
    } finally {
      socket.destroy();
    }
  });
});

describe("a request whose connection has no local address", () => {
  it("is not served once the client is gone, before anything is looked up", async () => {
    const probe = await counting(0);
    const refusals: RefusedRequest[] = [];
    let lookups = 0;
    const handler = createKmsRequestHandler(
      options(probe.kms, {
        credentials: (accessKeyId) => {
          lookups++;
          return accessKeyId === ALICE.accessKeyId
            ? { secretAccessKey: ALICE.secretAccessKey, principal: ALICE.principal }
            : undefined;
        },
        onRefused: (r) => void refusals.push(r),
      }),
    );
    let gone: () => void = () => undefined;
    const clientGone = new Promise<void>((resolve) => {
      gone = resolve;
    });
    // Async middleware ahead of the handler (a session lookup, say), during which the client
    // disconnects: the socket then reports no local address, as a unix socket does.
    const server = http.createServer(async (req, res) => {
      await clientGone;
      await new Promise((resolve) => setTimeout(resolve, 50));
      handler(req, res);
    });
    const port = await listening(server);
    const socket = net.connect(port, "127.0.0.1");
    try {
      await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
      socket.write(request(port, 16));
      await new Promise((resolve) => setTimeout(resolve, 100));
      socket.destroy();
      gone();
      await expect.poll(() => refusals.length + probe.calls()).toBeGreaterThan(0);
      expect(probe.calls()).toBe(0);
      // It used to be taken for a unix socket, and went on to authentication.
      expect(lookups).toBe(0);
      expect(refusals).toHaveLength(1);
      expect(refusals[0]).toMatchObject({
        code: "SerializationException",
        message: "the connection closed before the request was served",
      });
    } finally {
      server.close();
    }
  });

  it.each([undefined, ""])(
    "is refused as plain HTTP on a TCP listener when the open socket reports %j",
    async (address) => {
      const probe = await counting(0);
      const handler = createKmsRequestHandler(options(probe.kms));
      const server = http.createServer((req, res) => {
        Object.defineProperty(req.socket, "localAddress", { value: address });
        handler(req, res);
      });
      const port = await listening(server);
      const socket = net.connect(port, "127.0.0.1");
      let text = "";
      socket.on("data", (chunk: Buffer) => {
        text += chunk.toString("latin1");
      });
      try {
        socket.write(request(port, 16));
        await expect.poll(() => responses(text).length).toBe(1);
        expect(text).toMatch(/^HTTP\/1\.1 403 /);
        expect(text).toContain('"__type":"InsecureTransportException"');
        expect(probe.calls()).toBe(0);
      } finally {
        socket.destroy();
        server.close();
      }
    },
  );
});
