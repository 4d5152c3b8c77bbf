/**
 * How long a connection can be held, and what `close()` does to the ones open: driven over real
 * sockets against createKmsServer.
 */
import { readFileSync } from "node:fs";
import type * as http from "node:http";
import * as net from "node:net";
import { createKms, type Kms } from "@kms/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKmsServer, type KmsServerOptions, type ServerCredential } from "../src/index.ts";
import { ALICE, REGION } from "./support/harness.ts";
import { signedHeaders } from "./support/signed-call.ts";

const fixture = (name: string): Buffer =>
  readFileSync(new URL(`./fixtures/${name}`, import.meta.url));

const CREDENTIAL: ServerCredential = {
  secretAccessKey: ALICE.secretAccessKey,
  principal: ALICE.principal,
};
const TARGET = "TrentService.GenerateRandom";
const BODY = '{"NumberOfBytes":4}';

let kms: Kms;
beforeAll(async () => {
  kms = await createKms({ region: REGION, account: "111122223333" });
});
afterAll(async () => {
  await kms.close();
});

function options(more: Partial<KmsServerOptions> = {}): KmsServerOptions {
  return { kms, credentials: { [ALICE.accessKeyId]: CREDENTIAL }, ...more };
}

async function listening(server: http.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as net.AddressInfo).port;
}

/** A request to GenerateRandom signed now, as bytes for a socket. */
function request(port: number, body = BODY): string {
  const head = signedHeaders(port, REGION, TARGET, body)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join("");
  return `POST / HTTP/1.1\r\n${head}\r\n${body}`;
}

interface Client {
  readonly socket: net.Socket;
  /** Everything received so far. */
  received(): string;
  /** Milliseconds from connecting until the server closed the connection. */
  readonly closed: Promise<number>;
}

async function connect(port: number): Promise<Client> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  let text = "";
  socket.on("data", (chunk: Buffer) => {
    text += chunk.toString("latin1");
  });
  const started = Date.now();
  const closed = new Promise<number>((resolve) => {
    socket.once("close", () => resolve(Date.now() - started));
  });
  await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  return { socket, received: () => text, closed };
}

/** Resolves with the close callback's error (undefined on success), or "pending" after `ms`. */
function closeWithin(server: http.Server, ms: number): Promise<Error | undefined | "pending"> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve("pending"), ms);
    server.close((error) => {
      clearTimeout(timer);
      resolve(error);
    });
  });
}

const responses = (text: string): string[] => text.split(/(?=HTTP\/1\.1 \d{3} )/).filter(Boolean);

describe("close()", () => {
  it("closes a connection still sending its headers, and finishes", async () => {
    const server = createKmsServer(options());
    const port = await listening(server);
    const client = await connect(port);
    client.socket.write("POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX");
    const trickle = setInterval(() => client.socket.write("X"), 100);
    try {
      // Node stops enforcing headersTimeout at close(): this client held the server open for ever.
      expect(await closeWithin(server, 5000)).toBeUndefined();
      expect(await client.closed).toBeGreaterThan(0);
      expect(client.received()).toBe("");
    } finally {
      clearInterval(trickle);
      client.socket.destroy();
      server.closeAllConnections();
    }
  });

  it("answers a request in flight with Connection: close and serves nothing after it", async () => {
    let lookups = 0;
    let release: () => void = () => undefined;
    let inLookup: () => void = () => undefined;
    const looking = new Promise<void>((resolve) => {
      inLookup = resolve;
    });
    const server = createKmsServer(
      options({
        credentials: async (accessKeyId) => {
          if (lookups++ === 0) {
            inLookup();
            await new Promise<void>((resolve) => {
              release = resolve;
            });
          }
          return accessKeyId === ALICE.accessKeyId ? CREDENTIAL : undefined;
        },
      }),
    );
    const port = await listening(server);
    const client = await connect(port);
    try {
      client.socket.write(request(port));
      await looking;
      const closed = closeWithin(server, 5000);
      release();
      await expect.poll(() => responses(client.received()).length).toBe(1);
      // A keep-alive client's next request used to be served after close(), and the next, and
      // close() waited for as long as it kept sending them.
      if (!client.socket.destroyed) client.socket.write(request(port));
      expect(await closed).toBeUndefined();
      await client.closed;
      const [answer] = responses(client.received());
      expect(responses(client.received())).toHaveLength(1);
      expect(answer).toMatch(/^HTTP\/1\.1 200 /);
      expect(answer).toMatch(/\r\nConnection: close\r\n/i);
      expect(answer).toContain('"Plaintext"');
    } finally {
      client.socket.destroy();
      server.closeAllConnections();
    }
  });

  it("closes an idle keep-alive connection at once", async () => {
    const server = createKmsServer(options());
    const port = await listening(server);
    const client = await connect(port);
    try {
      client.socket.write(request(port));
      await expect.poll(() => responses(client.received()).length).toBe(1);
      expect(responses(client.received())[0]).toMatch(/\r\nConnection: keep-alive\r\n/i);
      expect(await closeWithin(server, 2000)).toBeUndefined();
    } finally {
      client.socket.destroy();
    }
  });

  it("cuts a request still trickling its body requestTimeout after close()", async () => {
    const server = createKmsServer(options());
    server.requestTimeout = 1000;
    const port = await listening(server);
    const client = await connect(port);
    const body = " ".repeat(1000);
    const whole = request(port, body);
    client.socket.write(whole.slice(0, whole.length - body.length));
    const trickle = setInterval(() => client.socket.write(" "), 100);
    try {
      await new Promise((resolve) => setTimeout(resolve, 200));
      const started = Date.now();
      expect(await closeWithin(server, 6000)).toBeUndefined();
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    } finally {
      clearInterval(trickle);
      client.socket.destroy();
      server.closeAllConnections();
    }
  });

  it("a second close() reports that the server is not running; the first still finishes", async () => {
    const server = createKmsServer(options());
    const port = await listening(server);
    const client = await connect(port);
    client.socket.write("POST / HTTP/1.1\r\n");
    try {
      const first = closeWithin(server, 5000);
      const second = await closeWithin(server, 5000);
      expect((second as NodeJS.ErrnoException).code).toBe("ERR_SERVER_NOT_RUNNING");
      expect(await first).toBeUndefined();
    } finally {
      client.socket.destroy();
    }
  });
});

describe("a client that never reads its responses", () => {
  it("is disconnected once nothing has moved for server.timeout (30 s by default)", async () => {
    const server = createKmsServer(options());
    expect(server.timeout).toBe(30_000);
    server.timeout = 1000;
    const port = await listening(server);
    const client = await connect(port);
    client.socket.pause();
    const body = '{"NumberOfBytes":1024}';
    const one = request(port, body);
    try {
      // Pipelined until the socket pushes back, reading nothing: node stops reading requests
      // once answers pile up, and requestTimeout, met by every request, never fires.
      const until = Date.now() + 3000;
      while (Date.now() < until && !client.socket.destroyed) {
        if (!client.socket.write(one)) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      expect(await Promise.race([client.closed, new Promise((r) => setTimeout(r, 8000))])).toEqual(
        expect.any(Number),
      );
    } finally {
      client.socket.destroy();
      server.closeAllConnections();
      server.close();
    }
  }, 20_000);
});

describe("with TLS", () => {
  it("closes a connection whose handshake never comes within headersTimeout's 10 s", async () => {
    const server = createKmsServer(
      options({ tls: { key: fixture("localhost-key.pem"), cert: fixture("localhost-cert.pem") } }),
    );
    const port = await listening(server);
    const client = await connect(port);
    try {
      // Node's default handshakeTimeout held this connection for 120 s.
      const closedAfter = await Promise.race([
        client.closed,
        new Promise<number>((resolve) =>
          setTimeout(() => resolve(Number.POSITIVE_INFINITY), 15_000),
        ),
      ]);
      expect(closedAfter).toBeGreaterThanOrEqual(9000);
      expect(closedAfter).toBeLessThan(15_000);
    } finally {
      client.socket.destroy();
      server.close();
    }
  }, 20_000);
});
