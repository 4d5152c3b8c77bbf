import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ServerAuthorities } from "../src/authorities.ts";

function listening(server: Server, target: string | number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    if (typeof target === "string") server.listen(target, resolve);
    else server.listen(target, "127.0.0.1", resolve);
  });
}

function closed(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

describe("ServerAuthorities.follow", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("names the loopback host:port a TCP server listens on, then the public ones", async () => {
    const authorities = new ServerAuthorities(["api.example.test"]);
    const server = createServer();
    authorities.follow(server);
    await listening(server, 0);
    cleanups.push(() => closed(server));
    const { port } = server.address() as { port: number };
    expect(authorities.list).toEqual([
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      "api.example.test",
    ]);
  });

  it("keeps only the public ones on a Unix socket, where there is no port", async () => {
    const dir = await mkdtemp(join(tmpdir(), "demo-authorities-"));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const authorities = new ServerAuthorities(["api.example.test"]);
    // A stale port from an earlier TCP listen must not survive the move to a socket.
    const server = createServer();
    authorities.follow(server);
    await listening(server, 0);
    await closed(server);
    await listening(server, join(dir, "demo.sock"));
    cleanups.push(() => closed(server));
    expect(authorities.list).toEqual(["api.example.test"]);
    expect(authorities.list.join(" ")).not.toMatch(/undefined/);
  });
});
