import { ConflictError, createKms, FieldEncryptionEngine, type Kms } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import { PrismaPg } from "@prisma/adapter-pg";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { fieldEncryption, PrismaDataKeyStore } from "../src/index.ts";
import { openPostgres, schemaText, type TestDatabase } from "./backends.ts";
import { PrismaClient as PgPrismaClient } from "./generated-pg/client.ts";

/**
 * Found in review: the data key store read and wrote through the base client, so a query inside
 * an interactive transaction needed a second pooled connection for a data key the cache lacked
 * while its transaction held one. With as many transactions as connections, each waited for
 * the others until Prisma's transaction timeout failed them. Here the pools are smaller than
 * the number of concurrent transactions, and every wait is bounded: a starved pool fails the
 * test (a transaction timeout, a pool timeout, the deadline) instead of hanging it.
 */

const { url, skipReason } = databaseTarget("postgres");

const POOL = 2;
const TRANSACTIONS = 6;
/** Prisma's own limits: a transaction waiting for a connection, and one running. */
const TRANSACTION_OPTIONS = { maxWait: 20_000, timeout: 10_000 };
/** Far above what the queries need, far below the test's own timeout. */
const DEADLINE_MS = 45_000;

class Boom extends Error {}

type Setup = "default" | "before" | "engine";

/** A query extension that changes nothing. */
const PASS_THROUGH = {
  query: {
    $allModels: {
      $allOperations: ({
        args,
        query,
      }: {
        args: unknown;
        query: (a: unknown) => Promise<unknown>;
      }) => query(args),
    },
  },
};

const user = (tenantId: string, name: string) => ({
  tenantId,
  email: `${name}@example.com`,
  name: name.toUpperCase(),
  phone: `+1 555 ${name}`,
});

/** Rejects after `ms` instead of waiting for a pool that never frees a connection. */
async function withDeadline<T>(work: Promise<T>, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Why each settled promise failed; "ok" for the fulfilled ones. */
const outcomes = (results: PromiseSettledResult<unknown>[]): string[] =>
  results.map((r) =>
    r.status === "fulfilled" ? "ok" : String((r.reason as Error)?.message ?? r.reason).slice(-160),
  );

describe.skipIf(skipReason !== undefined)(
  `more interactive transactions than pooled connections (PostgreSQL, pool of ${POOL})`,
  () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    const clients: PgPrismaClient[] = [];

    beforeEach(async () => {
      db = await openPostgres(url as string);
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
    });
    afterEach(async () => {
      for (const client of clients.splice(0)) await client.$disconnect();
      await db?.close();
    });

    /** A client of its own on the test's schema, whose pool has `max` connections. */
    const pooled = (max = POOL): PgPrismaClient => {
      const { schema } = db.location as { schema: string };
      const client = new PgPrismaClient({
        adapter: new PrismaPg(
          {
            connectionString: url as string,
            options: `-c search_path=${schema}`,
            max,
            // A query waiting for a connection gives up instead of waiting forever.
            connectionTimeoutMillis: 10_000,
          },
          { schema },
        ),
      });
      clients.push(client);
      return client;
    };
    /**
     * A fresh engine (cold cache) on a client of its own. "before": on a client another query
     * extension was applied to first; "engine": an engine of the application's, its store on
     * the client's own data key delegate (the README's key rotation setup).
     */
    const extend = (client = pooled(), setup: Setup = "default") => {
      if (setup === "engine") {
        const engine = new FieldEncryptionEngine({
          kms,
          keyId,
          dataKeyStore: new PrismaDataKeyStore(client.kmsDataKey),
        });
        return client.$extends(fieldEncryption({ kms, keyId, schema: schemaText, engine }));
      }
      const base =
        setup === "before" ? (client.$extends(PASS_THROUGH) as unknown as PgPrismaClient) : client;
      return base.$extends(fieldEncryption({ kms, keyId, schema: schemaText }));
    };
    /**
     * Every user as a fresh engine reads it back, by email (the transactions commit in any
     * order): fails on a value whose key is gone.
     */
    const readFresh = async () =>
      (await extend(pooled(1)).user.findMany())
        .map((u) => [u.tenantId, u.email, u.name, u.phone])
        .sort((a, b) => String(a[1]).localeCompare(String(b[1])));
    /** Returns once a statement on the data key table waits for a row lock. */
    const waitForLockWait = async () => {
      for (let tries = 0; tries < 200; tries++) {
        const [row] = await db.prisma.$queryRawUnsafe<{ n: bigint }[]>(
          `SELECT COUNT(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%KmsDataKey%'`,
        );
        if ((row?.n ?? 0n) > 0n) return;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      throw new Error("no insert of a data key waited for the transaction's row");
    };
    const dataKeyIds = async () =>
      (await db.prisma.kmsDataKey.findMany({ select: { id: true }, orderBy: { id: "asc" } })).map(
        (k) => k.id,
      );

    test.each<[string, Setup]>([
      ["", "default"],
      [" (on a client extended before)", "before"],
      [" (an engine whose PrismaDataKeyStore is on the client)", "engine"],
    ])(
      "writes on a cold cache%s: every transaction commits, and every value reads back",
      async (_, setup) => {
        const prisma = extend(pooled(), setup);
        const names = Array.from({ length: TRANSACTIONS }, (_, i) => `w${i}`);
        const results = await withDeadline(
          Promise.allSettled(
            names.map((name, i) =>
              prisma.$transaction(
                // Two tenants: deterministic and blind-indexed values share a stable key per tenant,
                // whose row the first transaction to make it holds until it commits.
                async (tx) => tx.user.create({ data: user(`t${i % 2}`, name) }),
                TRANSACTION_OPTIONS,
              ),
            ),
          ),
        );
        expect(outcomes(results)).toEqual(names.map(() => "ok"));
        expect(await readFresh()).toEqual(
          names.map((name, i) => [
            `t${i % 2}`,
            `${name}@example.com`,
            name.toUpperCase(),
            `+1 555 ${name}`,
          ]),
        );
        // Lookups by the deterministic and blind-indexed values, under the keys those rows hold.
        const fresh = extend(pooled(1));
        expect(await fresh.user.count({ where: { tenantId: "t1", email: "w5@example.com" } })).toBe(
          1,
        );
        expect(await fresh.user.count({ where: { tenantId: "t0", phone: "+1 555 w4" } })).toBe(1);
      },
      90_000,
    );

    test("reads on a cold cache: every transaction reads its rows, without a second connection", async () => {
      const writer = extend(pooled(1));
      for (let i = 0; i < 4; i++) await writer.user.create({ data: user(`t${i % 2}`, `r${i}`) });
      const prisma = extend();
      const results = await withDeadline(
        Promise.allSettled(
          Array.from({ length: TRANSACTIONS }, (_, i) =>
            prisma.$transaction(async (tx) => {
              const tenantId = `t${i % 2}`;
              const rows = await tx.user.findMany({ where: { tenantId }, orderBy: { id: "asc" } });
              // A lookup by a deterministic value reads the tenant's stable key in the transaction.
              const found = await tx.user.findFirst({
                where: { tenantId, email: `r${i % 2}@example.com` },
              });
              return [rows.map((u) => u.name), found?.phone];
            }, TRANSACTION_OPTIONS),
          ),
        ),
      );
      expect(outcomes(results)).toEqual(Array.from({ length: TRANSACTIONS }, () => "ok"));
      expect(results.map((r) => (r.status === "fulfilled" ? r.value : undefined))).toEqual(
        Array.from({ length: TRANSACTIONS }, (_, i) =>
          i % 2 === 0 ? [["R0", "R2"], "+1 555 r0"] : [["R1", "R3"], "+1 555 r1"],
        ),
      );
    }, 90_000);

    test("transactions that roll back leave no data key behind, and no value under one", async () => {
      const prisma = extend();
      const before = await dataKeyIds();
      const results = await withDeadline(
        Promise.allSettled(
          Array.from({ length: TRANSACTIONS }, (_, i) =>
            prisma.$transaction(async (tx) => {
              await tx.user.create({ data: user("gone", `g${i}`) });
              throw new Boom();
            }, TRANSACTION_OPTIONS),
          ),
        ),
      );
      // Each failed by its own throw, not by a wait for a connection.
      expect(results.map((r) => r.status === "rejected" && r.reason instanceof Boom)).toEqual(
        Array.from({ length: TRANSACTIONS }, () => true),
      );
      // The rows of the keys made inside went with the transactions: no one can use those keys.
      expect(await dataKeyIds()).toEqual(before);
      // Nor does this engine: later writes under the same tenant, inside a transaction and not,
      // are sealed under keys whose rows exist.
      await withDeadline(
        prisma.$transaction(
          async (tx) => tx.user.create({ data: user("gone", "kept1") }),
          TRANSACTION_OPTIONS,
        ),
      );
      await prisma.user.create({ data: user("gone", "kept2") });
      expect(await readFresh()).toEqual([
        ["gone", "kept1@example.com", "KEPT1", "+1 555 kept1"],
        ["gone", "kept2@example.com", "KEPT2", "+1 555 kept2"],
      ]);
    }, 90_000);

    // Found while fixing: a stable key made inside a transaction and read back there is held by
    // the engine under its id, which every writer of the tenant shares. When the transaction
    // rolled back, a writer whose insert of that id had waited for the row got in before the
    // engine was told, and sealed its values under the rolled-back key: they never decrypted.
    test("a writer that waited for a stable key row a transaction then rolled back seals under its own key", async () => {
      const prisma = extend();
      let go = (): void => {};
      // Started from here, outside the callback's async context: another request, on the other
      // connection.
      const writer = new Promise<void>((resolve) => {
        go = resolve;
      }).then(() => prisma.user.create({ data: user("t8", "writer") }));
      await expect(
        withDeadline(
          prisma.$transaction(
            async (tx) => {
              await tx.user.create({ data: user("t8", "lost") });
              go();
              await waitForLockWait();
              // Prisma rolls the transaction back when it times out, which lets the writer's
              // insert through, long before this callback ends and the engine hears of it.
              await writer;
              throw new Boom();
            },
            { ...TRANSACTION_OPTIONS, timeout: 4_000 },
          ),
        ),
      ).rejects.toBeInstanceOf(Boom);
      expect(await readFresh()).toEqual([["t8", "writer@example.com", "WRITER", "+1 555 writer"]]);
    }, 90_000);

    test("a query on the client inside a transaction's callback is refused, not left waiting, when it needs a stable key that transaction has not committed", async () => {
      const prisma = extend();
      await withDeadline(
        prisma.$transaction(async (tx) => {
          await tx.user.create({ data: user("t9", "inside") });
          // The client, not `tx`: its insert of the tenant's stable key row would wait for the
          // transaction, and the transaction for it.
          await expect(prisma.user.create({ data: user("t9", "outside") })).rejects.toBeInstanceOf(
            ConflictError,
          );
        }, TRANSACTION_OPTIONS),
      );
      await prisma.user.create({ data: user("t9", "outside") });
      expect(await readFresh()).toEqual([
        ["t9", "inside@example.com", "INSIDE", "+1 555 inside"],
        ["t9", "outside@example.com", "OUTSIDE", "+1 555 outside"],
      ]);
    }, 90_000);
  },
);
