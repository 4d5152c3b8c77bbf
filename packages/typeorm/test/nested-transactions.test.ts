import { createKms, type Kms } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import type { DataSource } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { encryptedWhere, fieldEncryption } from "../src/index.ts";
import { openMariadb, openPostgres, openSqlite, type TestDatabase } from "./backends.ts";
import { User } from "./entities.ts";

/**
 * Nested `transaction()` calls run as savepoints. On SQLite the data key rows share the
 * caller's transaction (one connection), so a savepoint that rolls back takes the rows of the
 * data keys made inside it: those keys must never seal a value that is then committed. With a
 * pool (PostgreSQL, MariaDB) the rows are written on a connection of their own. Either way every
 * committed value reads back in a fresh process.
 */

const postgres = databaseTarget("postgres");
const mariadb = databaseTarget("mariadb");

const BACKENDS: [string, () => Promise<TestDatabase>, string | undefined][] = [
  ["SQLite (better-sqlite3)", openSqlite, undefined],
  ["PostgreSQL (pg)", () => openPostgres(postgres.url as string), postgres.skipReason],
  ["MariaDB (mysql2)", () => openMariadb(mariadb.url as string), mariadb.skipReason],
];

const user = (tenantId: string, name: string) =>
  Object.assign(new User(), {
    tenantId,
    email: `${name}@example.com`,
    phone: `+1 555 ${name}`,
    profile: { likes: [name], age: 7 },
    avatar: Uint8Array.from(Buffer.from(`AVATAR-${name}`)),
  });

class Boom extends Error {}

/** Runs `fn` in a nested transaction that rolls back. */
async function rolledBack(
  manager: DataSource["manager"],
  fn: (inner: DataSource["manager"]) => Promise<unknown>,
): Promise<void> {
  await expect(
    manager.transaction(async (inner) => {
      await fn(inner);
      throw new Boom();
    }),
  ).rejects.toBeInstanceOf(Boom);
}

describe.each(BACKENDS)("nested transactions on %s", (_, open, skipReason) => {
  let db: TestDatabase;
  let kms: Kms;
  let keyId: string;
  let ds: DataSource;

  beforeEach(async (ctx) => {
    if (skipReason !== undefined) ctx.skip(skipReason);
    db = await open();
    kms = await createKms();
    keyId = (await kms.createKey()).keyMetadata.keyId;
    ds = await db.connect(fieldEncryption({ kms, keyId }));
  });
  afterEach(async () => {
    await db?.close();
  });

  /** Every user as a fresh process reads them: a new engine on the same database and KMS. */
  const readFresh = async () => {
    const fresh = await db.connect(fieldEncryption({ kms, keyId }));
    const users = fresh.getRepository(User);
    return { users, all: await users.find({ order: { id: "ASC" } }) };
  };

  // Found in review: on SQLite the key made inside the rolled-back savepoint stayed cached for
  // the transaction, the outer save sealed with it and committed, and a fresh process could not
  // read the value (its data key row was gone).
  test("values committed after a savepoint rolled back read back in a fresh process", async () => {
    await ds.transaction(async (manager) => {
      await manager.transaction((inner) => inner.save(user("t1", "one")));
      await rolledBack(manager, (inner) => inner.save(user("t2", "lost")));
      await manager.save(user("t2", "two"));
    });
    const { users, all } = await readFresh();
    expect(all.map((u) => [u.tenantId, u.email, u.phone, u.profile?.likes[0]])).toEqual([
      ["t1", "one@example.com", "+1 555 one", "one"],
      ["t2", "two@example.com", "+1 555 two", "two"],
    ]);
    expect(Buffer.from(all[1]?.avatar as Uint8Array).toString()).toBe("AVATAR-two");
    // Deterministic and blind-index lookups under the key made again after the rollback.
    const byEmail = await encryptedWhere(users, { tenantId: "t2", email: "two@example.com" });
    expect((await users.findOneByOrFail(byEmail)).id).toBe(all[1]?.id);
    const byPhone = await encryptedWhere(users, { tenantId: "t2", phone: "+1 555 two" });
    expect(await users.countBy(byPhone)).toBe(1);
  });

  test("a savepoint rolled back inside another drops what it made; what the outer one made stays", async () => {
    await ds.transaction(async (manager) => {
      await manager.transaction(async (middle) => {
        await middle.save(user("t3", "middle"));
        await rolledBack(middle, async (inner) => {
          await inner.save(user("t4", "lost"));
          await inner.transaction((deepest) => deepest.save(user("t5", "lost")));
        });
        await middle.save(user("t4", "four"));
      });
      await rolledBack(manager, (inner) => inner.save(user("t6", "lost")));
      await manager.save([user("t3", "three"), user("t5", "five"), user("t6", "six")]);
    });
    const { all } = await readFresh();
    expect(all.map((u) => u.email)).toEqual([
      "middle@example.com",
      "four@example.com",
      "three@example.com",
      "five@example.com",
      "six@example.com",
    ]);
  });

  test("a released savepoint's keys are dropped when the transaction around it rolls back", async () => {
    await expect(
      ds.transaction(async (manager) => {
        await manager.transaction((inner) => inner.save(user("t7", "lost")));
        throw new Boom();
      }),
    ).rejects.toBeInstanceOf(Boom);
    await ds.getRepository(User).save(user("t7", "seven"));
    const { all } = await readFresh();
    expect(all.map((u) => [u.email, u.phone])).toEqual([["seven@example.com", "+1 555 seven"]]);
  });

  test("a nested transaction that the database fails, after its data keys were made", async () => {
    const users = ds.getRepository(User);
    await users.save(user("t8", "taken"));
    await ds.transaction(async (manager) => {
      // The second row breaks the unique email: the savepoint rolls back with t9's new keys.
      await expect(
        manager.transaction((inner) => inner.save([user("t9", "fresh"), user("t8", "taken")])),
      ).rejects.toThrow();
      await manager.save(user("t9", "nine"));
    });
    const { all } = await readFresh();
    expect(all.map((u) => u.email)).toEqual(["taken@example.com", "nine@example.com"]);
  });
});
