import { createKms, DisabledError } from "@kms/core";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";
import { storedKey } from "./fixtures/stored-key.ts";

const ROOT = new Uint8Array(32).fill(4);
const MAX_STALENESS_MS = 1_000;

describe.skipIf(target.skipReason !== undefined)("PostgresKeyStore cache across instances", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function twoInstances(listen: boolean) {
    const schema = randomSchema("stale");
    cleanups.push(() => dropSchema(schema));
    const poolA = new pg.Pool({ connectionString: target.url! });
    const poolB = new pg.Pool({ connectionString: target.url! });
    cleanups.push(
      () => poolA.end(),
      () => poolB.end(),
    );
    const options = { schema, maxStalenessMs: MAX_STALENESS_MS, listen };
    const a = await createKms({
      store: await PostgresKeyStore.open({ ...options, pool: poolA }),
      rootKey: ROOT,
    });
    const b = await createKms({
      store: await PostgresKeyStore.open({ ...options, pool: poolB }),
      rootKey: ROOT,
    });
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    return { a, b, poolB };
  }

  /** Disables a key on A, then encrypts on B until B refuses; returns the time that took. */
  async function disableLatency(listen: boolean): Promise<number> {
    const { a, b } = await twoInstances(listen);
    const keyId = (await a.createKey()).keyMetadata.keyId;
    const plaintext = new Uint8Array(1024);
    for (let i = 0; i < 20; i++) await b.encrypt({ keyId, plaintext }); // B caches the record
    await a.disableKey({ keyId });
    const disabledAt = performance.now();
    for (;;) {
      try {
        await b.encrypt({ keyId, plaintext });
      } catch (error) {
        expect(error).toBeInstanceOf(DisabledError);
        return performance.now() - disabledAt;
      }
      expect(performance.now() - disabledAt).toBeLessThan(MAX_STALENESS_MS * 3);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  it("refuses on instance B a key disabled on instance A within maxStalenessMs (LISTEN/NOTIFY)", async () => {
    const latency = await disableLatency(true);
    console.log(
      `disable seen by the other instance after ${latency.toFixed(1)} ms (LISTEN/NOTIFY)`,
    );
    expect(latency).toBeLessThan(MAX_STALENESS_MS);
  });

  it("still refuses it within maxStalenessMs when notifications are missed (counter poll only)", async () => {
    const latency = await disableLatency(false);
    console.log(`disable seen by the other instance after ${latency.toFixed(1)} ms (poll only)`);
    expect(latency).toBeLessThan(MAX_STALENESS_MS);
  });

  it("serves repeated encrypts from the cache, without a key query per call", async () => {
    const { b, poolB } = await twoInstances(true);
    const keyId = (await b.createKey()).keyMetadata.keyId;
    await b.encrypt({ keyId, plaintext: new Uint8Array(16) });
    const texts: string[] = [];
    const query = poolB.query.bind(poolB);
    poolB.query = ((config: unknown, ...rest: unknown[]) => {
      texts.push(typeof config === "string" ? config : (config as { text: string }).text);
      return (query as (...args: unknown[]) => unknown)(config, ...rest);
    }) as typeof poolB.query;
    for (let i = 0; i < 200; i++) await b.encrypt({ keyId, plaintext: new Uint8Array(16) });
    // Besides the change-counter poll, at most a re-read or two: the notification of B's own
    // createKey may land after the first encrypt cached the record and evict it once.
    const keyReads = texts.filter((t) => !t.includes("kms_changes"));
    expect(keyReads.length).toBeLessThanOrEqual(2);
  });

  it("polls no more often than maxStalenessMs / 2 when that is longer than a timer can wait", async () => {
    // setInterval caps its delay at 2^31 - 1 ms and, past that, fires every millisecond.
    const schema = randomSchema("stale");
    cleanups.push(() => dropSchema(schema));
    const pool = new pg.Pool({ connectionString: target.url! });
    cleanups.push(() => pool.end());
    let polls = 0;
    const query = pool.query.bind(pool);
    pool.query = ((config: unknown, ...rest: unknown[]) => {
      if ((config as { text?: string } | undefined)?.text?.startsWith("SELECT counter")) polls++;
      return (query as (...args: unknown[]) => unknown)(config, ...rest);
    }) as typeof pool.query;
    const store = await PostgresKeyStore.open({
      pool,
      schema,
      maxStalenessMs: Number.MAX_SAFE_INTEGER,
    });
    cleanups.push(() => store.close());
    const afterOpen = polls;
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(polls - afterOpen).toBe(0);
  });

  it("deleteKey drops the aliases of the key this instance has cached, at once", async () => {
    const schema = randomSchema("stale");
    cleanups.push(() => dropSchema(schema));
    // No notification and no poll for a minute: only the store's own invalidation can help.
    const store = await PostgresKeyStore.open({
      connectionString: target.url!,
      schema,
      listen: false,
      maxStalenessMs: 60_000,
    });
    cleanups.push(() => store.close());
    const key = storedKey("k-1");
    await store.createKey(key);
    await store.createKey({ ...key, keyId: "k-2" });
    for (const [aliasName, targetKeyId] of [
      ["alias/one", "k-1"],
      ["alias/two", "k-1"],
      ["alias/other", "k-2"],
    ] as const) {
      await store.createAlias({ aliasName, targetKeyId, createdAt: 1, updatedAt: 1 });
      expect(await store.getAlias(aliasName)).toMatchObject({ targetKeyId }); // now cached
    }
    await store.deleteKey("k-1", 1);
    expect(await store.getAlias("alias/one")).toBeUndefined();
    expect(await store.getAlias("alias/two")).toBeUndefined();
    expect(await store.getAlias("alias/other")).toMatchObject({ targetKeyId: "k-2" });
  });

  it("sees a rotation by another instance and encrypts under the new version", async () => {
    const { a, b } = await twoInstances(true);
    const keyId = (await a.createKey()).keyMetadata.keyId;
    await b.encrypt({ keyId, plaintext: new Uint8Array(4) });
    await a.rotateKeyOnDemand({ keyId });
    const rotatedAt = performance.now();
    for (;;) {
      const { ciphertextBlob } = await b.encrypt({ keyId, plaintext: new Uint8Array(4) });
      const { plaintext } = await a.decrypt({ ciphertextBlob });
      expect(plaintext).toStrictEqual(new Uint8Array(4));
      const rotations = await b.listKeyRotations({ keyId });
      if (rotations.rotations.length === 1) break;
      expect(performance.now() - rotatedAt).toBeLessThan(MAX_STALENESS_MS);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  });
});
