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

    // The reader's feed, polled by hand only (its timer would fire after an hour).
    const pool = new pg.Pool({ connectionString: target.url! });
    cleanups.push(() => pool.end());
    const counterSql = `SELECT counter FROM "${schema}".kms_changes`;
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
      await writer.updateKey({ ...other, revision: 2, description: "moved on" });
      await until(() => feed.key("other") === undefined, "the notification of the later change");
    };
    await feed.poll();
    expect(beforeCounterRead).toBeUndefined();

    // The disable was never notified: the cached Enabled record must not be served.
    expect(feed.key("k")).toBeUndefined();
  });
});
