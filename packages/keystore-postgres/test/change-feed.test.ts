import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { ChangeFeed } from "../src/internal/change-feed.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";
import { storedKey } from "./fixtures/stored-key.ts";

const KEY = storedKey("k", { description: "old" });

async function until(condition: () => boolean, what: string): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > 5_000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe.skipIf(target.skipReason !== undefined)("ChangeFeed", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it("drops records made stale while LISTEN was down, even when a notification beats the next poll", async () => {
    const schema = randomSchema("feed");
    cleanups.push(() => dropSchema(schema));
    // The writer: another instance on the same schema.
    const writer = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    cleanups.push(() => writer.close());
    await writer.createKey(KEY);
    await writer.createKey({ ...KEY, keyId: "other" });
    const admin = new pg.Client({ connectionString: target.url! });
    await admin.connect();
    cleanups.push(() => admin.end());
    const heard: string[] = [];
    admin.on("notification", (message) => heard.push(message.payload ?? ""));
    await admin.query(`LISTEN "kms_${schema}"`);

    // The reader's feed, polled by hand only (its timer would fire after an hour).
    const pool = new pg.Pool({ connectionString: target.url! });
    cleanups.push(() => pool.end());
    const counterSql = `SELECT counter, subject FROM "${schema}".kms_changes`;
    let beforeCounterRead: (() => Promise<void>) | undefined;
    const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
    pool.query = (async (config: { text?: string }, ...rest: unknown[]) => {
      const hook = beforeCounterRead;
      if (hook !== undefined && config?.text === counterSql) {
        beforeCounterRead = undefined;
        await hook();
      }
      return query(config, ...rest);
    }) as unknown as typeof pool.query;
    const feed = new ChangeFeed({
      pool,
      listenConfig: { connectionString: target.url!, application_name: "feed-under-test" },
      channel: `kms_${schema}`,
      counterSql,
      maxStalenessMs: 3_600_000,
      cacheSize: 10,
    });
    cleanups.push(() => feed.close());
    await feed.start();

    // The LISTEN connection dies; the feed notices and empties its cache.
    const probe = { ...KEY, keyId: "probe" };
    feed.putKey(probe, feed.generation);
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
      ["feed-under-test"],
    );
    await until(() => feed.key("probe") === undefined, "the feed to notice the lost listener");

    // While nobody listens: a read caches the key, then another instance disables it.
    feed.putKey(KEY, feed.generation);
    await writer.updateKey({ ...KEY, revision: 2, keyState: "Disabled" });

    // The next poll listens again; before it reads the counter, one more change commits and
    // its notification arrives, so the poll reads the counter that notification carried.
    const other = { ...KEY, keyId: "other" };
    beforeCounterRead = async () => {
      feed.putKey(other, feed.generation);
      const notified = heard.length;
      await writer.updateKey({ ...other, revision: 2, description: "moved on" });
      await until(() => heard.length > notified, "the notification of the later change");
      // Delivered to the feed's connection too, in the same round of the server's sends.
      await new Promise((resolve) => setTimeout(resolve, 20));
    };
    await feed.poll();
    expect(beforeCounterRead).toBeUndefined();

    // The disable was never notified: the cached Enabled record must not be served.
    expect(feed.key("k")).toBeUndefined();
    expect(feed.key("other")).toBeUndefined();
  });
});

describe.skipIf(target.skipReason !== undefined)("the change notification channel", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /**
   * A client of a login role with no privilege on the store's schema: LISTEN and NOTIFY need
   * none, so this is what any role that can connect to the database can do on the channel.
   */
  async function outsider(): Promise<pg.Client> {
    const admin = new pg.Client({ connectionString: target.url! });
    await admin.connect();
    const name = `kms_outsider_${randomBytes(6).toString("hex")}`;
    await admin.query(`CREATE ROLE ${name} LOGIN`);
    const url = new URL(target.url!);
    url.username = name;
    url.password = "";
    const client = new pg.Client({ connectionString: url.href });
    await client.connect();
    cleanups.push(async () => {
      await client.end();
      await admin.query(`DROP ROLE ${name}`);
      await admin.end();
    });
    return client;
  }

  /** A pool whose queries are counted: counter reads (and how many ran at once) and the rest. */
  function countedPool() {
    const pool = new pg.Pool({ connectionString: target.url! });
    cleanups.push(() => pool.end());
    const counts = {
      counterReads: 0,
      counterReadsInFlight: 0,
      maxCounterReadsInFlight: 0,
      other: 0,
    };
    const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
    pool.query = (async (config: unknown, ...rest: unknown[]) => {
      const text = typeof config === "string" ? config : (config as { text?: string }).text;
      if (!text?.startsWith("SELECT counter")) {
        counts.other++;
        return query(config, ...rest);
      }
      counts.counterReads++;
      counts.maxCounterReadsInFlight = Math.max(
        counts.maxCounterReadsInFlight,
        ++counts.counterReadsInFlight,
      );
      try {
        return await query(config, ...rest);
      } finally {
        counts.counterReadsInFlight--;
      }
    }) as unknown as typeof pool.query;
    return { pool, counts };
  }

  async function openStore(schema: string, pool?: pg.Pool): Promise<PostgresKeyStore> {
    // A poll only every 30 s: whatever reaches the cache in these tests comes by notification.
    const options = { schema, maxStalenessMs: 60_000 };
    const store = await PostgresKeyStore.open(
      pool === undefined ? { ...options, connectionString: target.url! } : { ...options, pool },
    );
    cleanups.push(() => store.close());
    return store;
  }

  it("carries the change counter only, not the key ids and alias names written", async () => {
    const schema = randomSchema("feed");
    cleanups.push(() => dropSchema(schema));
    const store = await openStore(schema);
    const listener = await outsider();
    const payloads: string[] = [];
    listener.on("notification", (message) => payloads.push(message.payload ?? ""));
    await listener.query(`LISTEN "kms_${schema}"`);

    const key = storedKey("key-payroll-7f3a");
    await store.createKey(key);
    await store.updateKey({ ...key, revision: 2, description: "payroll" });
    await store.createAlias({
      aliasName: "alias/tenant-acme-payroll",
      targetKeyId: key.keyId,
      createdAt: 1,
      updatedAt: 1,
    });
    await store.deleteAlias("alias/tenant-acme-payroll");
    await until(() => payloads.length === 4, "four notifications");
    expect(payloads).toStrictEqual(["1", "2", "3", "4"]);
    // What changed is recorded where only the schema's roles can read it.
    const denied = await listener
      .query(`SELECT subject FROM "${schema}".kms_changes`)
      .catch((error: unknown) => error);
    expect(denied).toMatchObject({ code: "42501" });
  });

  it("a flood of forged notifications neither empties the cache nor runs more than one counter read at a time", async () => {
    const schema = randomSchema("feed");
    cleanups.push(() => dropSchema(schema));
    const writer = await openStore(schema);
    await writer.createKey(KEY);
    const { pool, counts } = countedPool();
    const reader = await openStore(schema, pool);
    expect((await reader.getKey("k"))?.description).toBe("old"); // now cached
    const forger = await outsider();
    const keyReadsBefore = counts.other;

    // Each kind of payload the previous release emptied the cache for: out of sequence, naming
    // a record, unparsable, and counters ahead of the real one (which cost a counter read).
    const forged = ["999999 k:forged", "7 a:alias/x", "garbage", "", "5", "1000000"];
    for (let i = 0; i < 300; i++) {
      await forger.query(`SELECT pg_notify($1, $2)`, [`kms_${schema}`, forged[i % forged.length]]);
      if (i % 3 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
      expect((await reader.getKey("k"))?.description).toBe("old");
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await reader.getKey("k")).toMatchObject({ description: "old" });
    expect(counts.other - keyReadsBefore).toBe(0);
    expect(counts.maxCounterReadsInFlight).toBe(1);

    // The real notifications still work after the flood.
    await writer.updateKey({ ...KEY, revision: 2, description: "new" });
    await until(() => counts.counterReadsInFlight === 0, "the counter read");
    let seen: string | undefined;
    const started = Date.now();
    while (seen !== "new" && Date.now() - started < 5_000) {
      seen = (await reader.getKey("k"))?.description;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(seen).toBe("new");
  });

  it("evicts only the record another instance changed", async () => {
    const schema = randomSchema("feed");
    cleanups.push(() => dropSchema(schema));
    const writer = await openStore(schema);
    await writer.createKey(KEY);
    await writer.createKey({ ...KEY, keyId: "k-2" });
    await writer.createAlias({
      aliasName: "alias/a",
      targetKeyId: "k",
      createdAt: 1,
      updatedAt: 1,
    });
    const { pool, counts } = countedPool();
    const reader = await openStore(schema, pool);
    // Let the notifications of the writes above arrive before the reader caches anything.
    await new Promise((resolve) => setTimeout(resolve, 50));
    await reader.getKey("k");
    await reader.getKey("k-2");
    await reader.getAlias("alias/a");

    await writer.updateKey({ ...KEY, revision: 2, description: "new" });
    const started = Date.now();
    while ((await reader.getKey("k"))?.description !== "new") {
      expect(Date.now() - started).toBeLessThan(5_000);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    // The read that saw "new" may have beaten the eviction; once that has landed, k is cached
    // again with one read, while k-2 and the alias were never evicted.
    await new Promise((resolve) => setTimeout(resolve, 50));
    await reader.getKey("k");
    const before = counts.other;
    expect((await reader.getKey("k"))?.description).toBe("new");
    expect((await reader.getKey("k-2"))?.keyId).toBe("k-2");
    expect((await reader.getAlias("alias/a"))?.targetKeyId).toBe("k");
    expect(counts.other - before).toBe(0);
  });
});
