import { createKms, type Kms } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { fieldEncryption } from "../src/index.ts";
import { openPostgres, openSqlite, schemaText, type TestDatabase } from "./backends.ts";

/**
 * Prisma 7 runs `tx.$transaction(…)` as a savepoint of `tx`'s transaction. On SQLite the data
 * key rows share that transaction (one connection): a savepoint that rolls back takes the rows
 * of the keys made inside it, and a released one leaves them to the outer transaction's
 * outcome. Every committed value must read back in a fresh client.
 */

const postgres = databaseTarget("postgres");

const BACKENDS: [string, () => Promise<TestDatabase>, string | undefined][] = [
  ["SQLite (better-sqlite3)", openSqlite, undefined],
  ["PostgreSQL (pg)", () => openPostgres(postgres.url as string), postgres.skipReason],
];

class Boom extends Error {}

const user = (tenantId: string, name: string) => ({
  tenantId,
  email: `${name}@example.com`,
  name: name.toUpperCase(),
  phone: `+1 555 ${name}`,
});

describe.each(BACKENDS)("nested interactive transactions on %s", (_, open, skipReason) => {
  let db: TestDatabase;
  let kms: Kms;
  let keyId: string;

  beforeEach(async (ctx) => {
    if (skipReason !== undefined) ctx.skip(skipReason);
    db = await open();
    kms = await createKms();
    keyId = (await kms.createKey()).keyMetadata.keyId;
  });
  afterEach(async () => {
    await db?.close();
  });

  const extend = () => db.prisma.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
  /** The values as a fresh client reads them: a new engine on the same database and KMS. */
  const readFresh = async () =>
    (await extend().user.findMany({ orderBy: { id: "asc" } })).map((u) => [
      u.tenantId,
      u.email,
      u.name,
      u.phone,
    ]);

  // Found in review: a nested commit ended the whole transaction's scope as committed, so the
  // keys it had made became the engine's own; when the outer transaction then rolled back, their
  // rows went with it, and later writes sealed values under keys that no longer existed.
  test("keys released by a nested transaction are dropped when the outer one rolls back", async () => {
    const prisma = extend();
    await expect(
      prisma.$transaction(async (tx) => {
        await tx.user.create({ data: user("t1", "lost") });
        await tx.$transaction(async (inner) => inner.user.create({ data: user("t1", "lost2") }));
        throw new Boom();
      }),
    ).rejects.toBeInstanceOf(Boom);
    await prisma.user.create({ data: user("t1", "one") });
    expect(await readFresh()).toEqual([["t1", "one@example.com", "ONE", "+1 555 one"]]);
  });

  test("keys made inside a nested transaction that rolls back are not used after it", async () => {
    const prisma = extend();
    await prisma.$transaction(async (tx) => {
      await tx.user.create({ data: user("t1", "one") });
      await expect(
        tx.$transaction(async (inner) => {
          await inner.user.create({ data: user("t2", "lost") });
          await inner.$transaction(async (deepest) =>
            deepest.user.create({ data: user("t3", "lost") }),
          );
          throw new Boom();
        }),
      ).rejects.toBeInstanceOf(Boom);
      await tx.user.create({ data: user("t2", "two") });
      await tx.$transaction(async (inner) => inner.user.create({ data: user("t3", "three") }));
    });
    expect(await readFresh()).toEqual([
      ["t1", "one@example.com", "ONE", "+1 555 one"],
      ["t2", "two@example.com", "TWO", "+1 555 two"],
      ["t3", "three@example.com", "THREE", "+1 555 three"],
    ]);
    // Deterministic and blind-index lookups under the keys made again.
    const fresh = extend();
    expect(await fresh.user.count({ where: { tenantId: "t2", email: "two@example.com" } })).toBe(1);
    expect(await fresh.user.count({ where: { tenantId: "t3", phone: "+1 555 three" } })).toBe(1);
  });
});
