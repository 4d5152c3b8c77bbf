import { createKms, type Kms } from "@kms/core";
import { databaseTarget } from "@kms/tooling/databases";
import { Column, Entity, PrimaryGeneratedColumn } from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { EncryptedColumn, encryptedWhere, fieldEncryption } from "../src/index.ts";
import { openMariadb, openPostgres, type TestDatabase } from "./backends.ts";

/**
 * Found in review: on PostgreSQL and MariaDB every `save()` holds a pooled connection for its
 * transaction, and a new data key's row was written through the same pool: as many saves as
 * connections, each needing a new data key, waited for one another forever. Data key rows now go
 * through a connection of their own, so these tests end (or fail at the deadline) instead of
 * hanging.
 */

const postgres = databaseTarget("postgres");
const mariadb = databaseTarget("mariadb");

const BACKENDS: [string, () => Promise<TestDatabase>, string | undefined][] = [
  ["PostgreSQL (pg)", () => openPostgres(postgres.url as string), postgres.skipReason],
  ["MariaDB (mysql2)", () => openMariadb(mariadb.url as string), mariadb.skipReason],
];

@Entity("kms_ps_notes")
class PoolNote {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  /** A stable data key per tenant (looked up, then stored). */
  @EncryptedColumn({ deterministic: true, context: { fromRow: ["tenantId"] } })
  handle: string;

  /** A randomized data key per tenant. */
  @EncryptedColumn({ context: { fromRow: ["tenantId"] } })
  body: string;
}

const DEADLINE_MS = 15_000;

/** `work`, or a failure once the deadline passes: a starved pool fails the test, not the run. */
async function beforeDeadline<T>(what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: still waiting after ${DEADLINE_MS / 1000} s`)),
      DEADLINE_MS,
    );
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves once `count` callers have arrived: each transaction holds its connection till then. */
function barrier(count: number): () => Promise<void> {
  let arrived = 0;
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return () => {
    arrived += 1;
    if (arrived === count) open();
    return opened;
  };
}

const note = (tenantId: string, i: number) => ({
  tenantId,
  handle: `${tenantId}-handle-${i}`,
  body: `${tenantId}-body-${i}`,
});

class Boom extends Error {}

describe.each(BACKENDS)("pool starvation on %s", (_, open, skipReason) => {
  let db: TestDatabase;
  let kms: Kms;
  let keyId: string;
  // Names this test's connections on PostgreSQL, to count and end them.
  let application: string;

  beforeEach(async (ctx) => {
    if (skipReason !== undefined) ctx.skip(skipReason);
    db = await open();
    kms = await createKms();
    keyId = (await kms.createKey()).keyMetadata.keyId;
    application = `kms-ps-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  });
  afterEach(async () => {
    await db?.close();
  });

  /** A DataSource whose pool has `poolSize` connections. */
  const connect = (poolSize: number) =>
    db.connect(fieldEncryption({ kms, keyId }), {
      entities: [PoolNote],
      pool: {
        poolSize,
        // PostgreSQL: a starved pool (the bug) fails after 20 s rather than holding the test's
        // cleanup; mysql2's pool has no such limit but closes connections still in use.
        extra:
          db.kind === "postgres"
            ? { connectionTimeoutMillis: 20_000, application_name: application }
            : {},
      },
    });

  /** Every note, as a fresh process reads them: a new engine on the same database and KMS. */
  const freshRead = async () => {
    const fresh = await db.connect(fieldEncryption({ kms, keyId }), { entities: [PoolNote] });
    const rows = await fresh.getRepository(PoolNote).find({ order: { id: "ASC" } });
    return rows.map((r) => [r.tenantId, r.handle, r.body]);
  };

  const dataKeyRows = async () =>
    Number((await db.raw(`SELECT COUNT(*) AS n FROM ${db.q("kms_data_keys")}`))[0]?.n);

  /** The database connections of this test's DataSources other than the raw driver's. */
  const openConnections = async () => {
    const rows =
      db.kind === "postgres"
        ? await db.raw("SELECT pid AS id FROM pg_stat_activity WHERE application_name = ?", [
            application,
          ])
        : await db.raw(
            "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND ID <> CONNECTION_ID()",
          );
    return rows.map((r) => Number(r.id));
  };

  test("more saves than connections, each making new data keys, on a cold DataSource", async () => {
    const ds = await connect(2);
    const notes = ds.getRepository(PoolNote);
    // The first operations of the process: every connection is taken before any data key exists.
    const saves = ["a", "b", "c", "d"].flatMap((tenant) =>
      [0, 1].map((i) => notes.save(note(tenant, i))),
    );
    await beforeDeadline("8 saves on a pool of 2", Promise.all(saves));
    const expected = ["a", "b", "c", "d"].flatMap((tenant) =>
      [0, 1].map((i) => [tenant, `${tenant}-handle-${i}`, `${tenant}-body-${i}`]),
    );
    expect((await freshRead()).sort()).toEqual(expected.sort());
  });

  test("a warm DataSource: as many saves of one new tenant as connections", async () => {
    const ds = await connect(3);
    const notes = ds.getRepository(PoolNote);
    await notes.save(note("warm", 0));
    await beforeDeadline(
      "3 saves of a new tenant on a pool of 3",
      Promise.all([0, 1, 2].map((i) => notes.save(note("new", i)))),
    );
    expect((await freshRead()).map(([tenant]) => tenant)).toEqual(["warm", "new", "new", "new"]);
  });

  test("transactions holding every connection of the pool each make a new data key", async () => {
    const ds = await connect(2);
    const arrive = barrier(2);
    const transaction = (tenant: string, held: boolean) =>
      ds.transaction(async (m) => {
        // Two of them hold both connections before either writes; the others wait for the pool.
        await m.count(PoolNote);
        if (held) await arrive();
        await m.save(PoolNote, note(tenant, 0));
        return (await m.findOneByOrFail(PoolNote, { tenantId: tenant })).body;
      });
    const bodies = await beforeDeadline(
      "4 transactions on a pool of 2",
      Promise.all([
        transaction("t1", true),
        transaction("t2", true),
        transaction("t3", false),
        transaction("t4", false),
      ]),
    );
    expect(bodies).toEqual(["t1-body-0", "t2-body-0", "t3-body-0", "t4-body-0"]);
    const notes = ds.getRepository(PoolNote);
    const where = await encryptedWhere(notes, { tenantId: "t2", handle: "t2-handle-0" });
    expect((await notes.findOneByOrFail(where)).body).toBe("t2-body-0");
  });

  test("a pool of one connection", async () => {
    const ds = await connect(1);
    const notes = ds.getRepository(PoolNote);
    await beforeDeadline(
      "saves and a transaction on a pool of 1",
      Promise.all([
        notes.save(note("p1", 0)),
        notes.save(note("p2", 0)),
        ds.transaction((m) => m.save(PoolNote, note("p3", 0))),
        notes.save(note("p1", 1)),
      ]),
    );
    expect((await freshRead()).map(([tenant]) => tenant).sort()).toEqual(["p1", "p1", "p2", "p3"]);
  });

  test("rolled-back transactions holding every connection leave their data key rows, nothing else", async () => {
    const ds = await connect(2);
    const arrive = barrier(2);
    const rolledBack = (tenant: string) =>
      ds
        .transaction(async (m) => {
          await m.count(PoolNote);
          await arrive();
          await m.save(PoolNote, note(tenant, 0));
          throw new Boom();
        })
        .then(
          () => "committed",
          (error: unknown) => (error instanceof Boom ? "rolled back" : error),
        );
    expect(
      await beforeDeadline(
        "2 transactions on a pool of 2",
        Promise.all(["r1", "r2"].map(rolledBack)),
      ),
    ).toEqual(["rolled back", "rolled back"]);
    // As before: the data key rows were committed on their own (one stable, one randomized per
    // tenant), the notes were not.
    expect(await db.raw(`SELECT ${db.q("id")} FROM ${db.q("kms_ps_notes")}`)).toEqual([]);
    expect(await dataKeyRows()).toBe(4);
    // The keys the engine kept serve the next writes, which a fresh process reads.
    await ds.getRepository(PoolNote).save([note("r1", 1), note("r2", 1)]);
    expect(await dataKeyRows()).toBe(4);
    expect(await freshRead()).toEqual([
      ["r1", "r1-handle-1", "r1-body-1"],
      ["r2", "r2-handle-1", "r2-body-1"],
    ]);
  });

  test("the data key connection is replaced when lost, and closed with the DataSource", async () => {
    const ds = await connect(2);
    const notes = ds.getRepository(PoolNote);
    await notes.save(note("k1", 0));
    if (db.kind === "postgres") {
      // The server ends the data key connection (the statement it ran last read the data key
      // table; the application's connections' ended their transactions), which the pool still
      // holds as idle when the next data key is read.
      const keyConnections = await db.raw(
        "SELECT pid FROM pg_stat_activity WHERE application_name = ? AND query LIKE ?",
        [application, "%kms_data_keys%"],
      );
      expect(keyConnections).toHaveLength(1);
      await db.raw("SELECT pg_terminate_backend(?)", [keyConnections[0]?.pid]);
    } else {
      // The server ends every connection of the DataSource, the data key connection's too. The
      // application's own pool may hand out a lost connection once (its statement fails, the
      // driver drops it): not this adapter's to retry, so its statements go until one succeeds.
      for (const id of await openConnections()) await db.raw(`KILL ${id}`);
      for (let i = 0; i < 5; i++) {
        if (
          await ds.query("SELECT 1").then(
            () => true,
            () => false,
          )
        )
          break;
      }
    }
    await beforeDeadline(
      "saves after the connections were lost",
      Promise.all([notes.save(note("k2", 0)), notes.save(note("k3", 0))]),
    );
    // Destroyed, the DataSource leaves no connection open, its data key connection included.
    await ds.destroy();
    for (let i = 0; i < 50 && (await openConnections()).length > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(await openConnections()).toEqual([]);
    // Initialized again, it writes new data keys on a new connection.
    await ds.initialize();
    await beforeDeadline("a save after initialize()", notes.save(note("k4", 0)));
    // k2 and k3 were saved at once: their ids come in either order.
    expect((await freshRead()).map(([tenant]) => tenant).sort()).toEqual(["k1", "k2", "k3", "k4"]);
  });
});
