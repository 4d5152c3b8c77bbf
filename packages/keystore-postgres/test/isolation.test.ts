import { createKms, type Kms } from "@kms/core";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresAuditSink, PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

const ROOT = new Uint8Array(32).fill(7);

/** Settles every promise and returns the rejection reasons, so none goes unobserved. */
async function failures(promises: readonly Promise<unknown>[]): Promise<unknown[]> {
  const settled = await Promise.allSettled(promises);
  return settled.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
}

describe.skipIf(target.skipReason !== undefined)(
  "PostgresKeyStore and PostgresAuditSink under a stricter default isolation level",
  () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    });

    // A database or role can default every transaction to a stricter level
    // (ALTER DATABASE … SET default_transaction_isolation); the store must not depend on it.
    it.each(["repeatable read", "serializable"])(
      "three instances open a new schema together, write the same key and audit, with default_transaction_isolation = %s",
      async (isolation) => {
        const schema = randomSchema("iso");
        cleanups.push(() => dropSchema(schema));
        const pools = Array.from({ length: 3 }, () => {
          const pool = new pg.Pool({
            connectionString: target.url!,
            options: `-c default_transaction_isolation=${isolation.replace(" ", "\\ ")}`,
          });
          cleanups.push(() => pool.end());
          return pool;
        });
        const { rows } = await pools[0]!.query<{ level: string }>(
          "SELECT current_setting('default_transaction_isolation') AS level",
        );
        expect(rows[0]!.level).toBe(isolation);

        // Migrations: all three wait on one advisory lock, then must see each other's commit.
        const opened = await Promise.allSettled(
          pools.map(async (pool) => ({
            store: await PostgresKeyStore.open({ pool, schema }),
            audit: await PostgresAuditSink.open({ pool, schema }),
          })),
        );
        expect(opened.flatMap((r) => (r.status === "rejected" ? [r.reason] : []))).toEqual([]);
        const instances: Kms[] = [];
        for (const result of opened) {
          if (result.status !== "fulfilled") continue;
          const kms = await createKms({ ...result.value, rootKey: ROOT });
          cleanups.push(() => kms.close());
          instances.push(kms);
        }

        // Writers queue on the change counter and the audit head; each must go on from the
        // row the one before it committed.
        const keyId = (await instances[0]!.createKey()).keyMetadata.keyId;
        const writes = instances.flatMap((kms, i) => [
          kms.createKey(),
          kms.createKey(),
          ...Array.from({ length: 4 }, (_, j) =>
            kms.tagResource({ keyId, tags: [{ tagKey: `i${i}-${j}`, tagValue: "x" }] }),
          ),
        ]);
        expect(await failures(writes)).toEqual([]);
        // Audit appends alone, a few rounds of one call per instance at once.
        for (let round = 0; round < 5; round++) {
          const calls = instances.map((kms) => kms.generateRandom({ numberOfBytes: 1 }));
          expect(await failures(calls)).toEqual([]);
        }

        const tags = await instances[1]!.listResourceTags({ keyId });
        expect(tags.tags).toHaveLength(12);
        expect((await instances[2]!.listKeys()).keys).toHaveLength(7);
        expect(await instances[0]!.audit.verify()).toMatchObject({ ok: true });
      },
      60_000,
    );
  },
);
