import { randomUUID } from "node:crypto";
import { databaseTarget } from "@kms/tooling/databases";
import { createClient } from "redis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisNonceStore } from "../src/redis-nonce-store.ts";

const { url, skipReason } = databaseTarget("redis");

describe.skipIf(skipReason !== undefined)("RedisNonceStore (real Redis)", () => {
  const client = createClient({ url: url ?? "" });
  beforeAll(async () => {
    await client.connect();
  });
  afterAll(async () => {
    await client.close();
  });

  it("accepts a nonce once, across store instances sharing the server", async () => {
    const prefix = `test:${randomUUID()}:`;
    const a = new RedisNonceStore(client, { prefix });
    const b = new RedisNonceStore(client, { prefix });
    expect(await a.checkAndStore("n1", 60_000)).toBe(true);
    expect(await b.checkAndStore("n1", 60_000)).toBe(false);
    expect(await b.checkAndStore("n2", 60_000)).toBe(true);
    expect(await client.pTTL(`${prefix}n1`)).toBeGreaterThan(0);
  });

  it("forgets a nonce after its TTL", async () => {
    const store = new RedisNonceStore(client, { prefix: `test:${randomUUID()}:` });
    expect(await store.checkAndStore("short", 5)).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await store.checkAndStore("short", 5)).toBe(true);
  });

  it("runs several checks of one nonce concurrently and admits exactly one", async () => {
    const store = new RedisNonceStore(client, { prefix: `test:${randomUUID()}:` });
    const results = await Promise.all(
      Array.from({ length: 20 }, () => store.checkAndStore("race", 60_000)),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
  });
});
