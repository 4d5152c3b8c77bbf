import { createKms, KmsInternalError, ValidationError } from "@kms/core";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

const ROOT = new Uint8Array(32).fill(6);

describe.skipIf(target.skipReason !== undefined)("PostgresKeyStore lockTimeoutMs", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** A Kms on a fresh schema with one key, and a raw client holding the writers' lock. */
  async function lockedByAnother(lockTimeoutMs: number) {
    const schema = randomSchema("lock");
    cleanups.push(() => dropSchema(schema));
    const store = await PostgresKeyStore.open({
      connectionString: target.url!,
      schema,
      lockTimeoutMs,
    });
    const kms = await createKms({ store, rootKey: ROOT });
    cleanups.push(() => kms.close());
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const holder = new pg.Client({ connectionString: target.url! });
    await holder.connect();
    cleanups.push(() => holder.end());
    await holder.query(`BEGIN; SELECT * FROM "${schema}".kms_changes FOR UPDATE`);
    return { kms, keyId, holder };
  }

  it("a stuck transaction holding the writers' lock fails writes after the timeout; reads go on", async () => {
    const { kms, keyId, holder } = await lockedByAnother(200);

    const started = Date.now();
    const blocked = kms.createKey().catch((e: unknown) => e);
    const error = await blocked;
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toMatch(/timed out waiting for the write lock .*55P03/);
    // Reads take no lock.
    await expect(kms.describeKey({ keyId })).resolves.toMatchObject({
      keyMetadata: { keyId },
    });

    await holder.query("ROLLBACK");
    await expect(kms.createKey()).resolves.toBeDefined();
    expect((await kms.listKeys()).keys).toHaveLength(2);
  });

  it("0 waits for the lock as long as it is held", async () => {
    const { kms, holder } = await lockedByAnother(0);
    const waiting = kms.createKey();
    let settled = false;
    void waiting.finally(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(settled).toBe(false);
    await holder.query("COMMIT");
    await expect(waiting).resolves.toBeDefined();
  });

  it.each([-1, 0.5, 2 ** 31, "100"])("refuses lockTimeoutMs %s", async (lockTimeoutMs) => {
    const open = PostgresKeyStore.open({
      connectionString: target.url!,
      lockTimeoutMs: lockTimeoutMs as number,
    });
    await expect(open).rejects.toBeInstanceOf(ValidationError);
    await expect(open).rejects.toThrow(/"lockTimeoutMs"/);
  });
});
