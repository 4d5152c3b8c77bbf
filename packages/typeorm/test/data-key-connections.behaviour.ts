import { ConflictError, createKms, type Kms, MemoryDataKeyStore, ValidationError } from "@kms/core";
import {
  BeforeInsert,
  Column,
  type DataSource,
  Entity,
  PrimaryColumn,
  PrimaryGeneratedColumn,
} from "typeorm";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  EncryptedColumn,
  encryptedWhere,
  fieldEncryption,
  reencryptEntities,
} from "../src/index.ts";
import { failure, type TestDatabase } from "./backends.ts";

@Entity("kms_dkc_accounts")
class Account {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ deterministic: true, nullable: true, context: { fromRow: ["tenantId"] } })
  handle: string | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  secret: string | null;
}

/** A row whose insert a test can hold, once its values are sealed, until it says go. */
@Entity("kms_dkc_memos")
class Memo {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ deterministic: true, nullable: true, context: { fromRow: ["tenantId"] } })
  handle: string | null;

  @EncryptedColumn({ nullable: true, context: { fromRow: ["tenantId"] } })
  secret: string | null;

  /** Not a column: the listener waits for it before the INSERT. */
  hold?: Promise<void>;

  @BeforeInsert()
  async waitForHold(): Promise<void> {
    await this.hold;
  }
}

/** A randomized value with a blind index: sealing it takes two data keys, one after the other. */
@Entity("kms_dkc_indexed_memos")
class IndexedMemo {
  @PrimaryGeneratedColumn()
  id: number;

  @Column({ type: String, length: 64 })
  tenantId: string;

  @EncryptedColumn({ nullable: true, blindIndex: {}, context: { fromRow: ["tenantId"] } })
  secret: string | null;
}

/** A table without encrypted columns, for another request's failing statements. */
@Entity("kms_dkc_taken")
class Taken {
  @PrimaryColumn()
  id: number;
}

/** A promise and the function that settles it: one step of a test's choreography. */
function signal(): { readonly done: Promise<void>; readonly fire: () => void } {
  let fire: () => void = () => {};
  const done = new Promise<void>((resolve) => {
    fire = resolve;
  });
  return { done, fire };
}

/**
 * A KMS whose next generateDataKey, once armed, waits for `release()` (and says when it started):
 * an operation creating a data key is held in flight while the test opens a transaction.
 */
function gatedKms(kms: Kms) {
  let armed: { started: () => void; gate: Promise<void> } | undefined;
  const gated = new Proxy(kms, {
    get(target, property) {
      const value = Reflect.get(target, property) as unknown;
      if (typeof value !== "function") return value;
      return async (...args: unknown[]) => {
        if (property === "generateDataKey" && armed !== undefined) {
          const { started, gate } = armed;
          armed = undefined;
          started();
          await gate;
        }
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return {
    kms: gated,
    /** Holds the next generateDataKey; resolves `started` when it is called. */
    arm() {
      const started = signal();
      const gate = signal();
      armed = { started: started.fire, gate: gate.done };
      return { started: started.done, release: gate.fire };
    },
  };
}

/** mysql2's callback connection under a TypeORM query runner. */
interface RawConnection {
  query(sql: string, callback: (error: unknown) => void): void;
}

/** Runs `sql` on the connection itself, unseen by TypeORM and its subscribers. */
function rawQuery(connection: RawConnection, sql: string): Promise<void> {
  return new Promise((resolve, reject) => {
    connection.query(sql, (error) => (error ? reject(error) : resolve()));
  });
}

/**
 * Which connection data key rows go through, and what survives a rollback: on SQLite, data keys
 * created through any path (also one without the caller's query runner) while a transaction is
 * open on the one connection; one encryption per DataSource; on pooled drivers, key reads that
 * do not wait for a second connection. Run once per backend.
 */
export function describeDataKeyConnections(
  name: string,
  open: () => Promise<TestDatabase>,
  skipReason?: string,
): void {
  describe.skipIf(skipReason !== undefined)(`data key connections on ${name}`, () => {
    let db: TestDatabase;
    let kms: Kms;
    let keyId: string;
    const others: TestDatabase[] = [];

    beforeEach(async () => {
      db = await open();
      kms = await createKms();
      keyId = (await kms.createKey()).keyMetadata.keyId;
    });
    afterEach(async () => {
      await db.close();
      for (const other of others.splice(0)) await other.close();
    });

    /** What a fresh process, with nothing cached, reads from the database. */
    const freshRead = async () => {
      const fresh = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Account] });
      return fresh.getRepository(Account).find({ order: { id: "ASC" } });
    };

    const rolledBack = (error: unknown) => {
      if (!(error instanceof Error) || error.message !== "rollback") throw error;
    };

    test("a lookup inside another request's transaction makes no data key that outlives its rollback", async () => {
      const ds = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Account] });
      // A repository of the DataSource: no query runner reaches the encryption.
      const accounts = ds.getRepository(Account);
      await ds
        .transaction(async (m) => {
          await m.save(Account, { tenantId: "t0", handle: "zed", secret: null });
          // The stable data key of t1 is made here; on SQLite its row is written in this
          // transaction, on the one connection.
          await m.findBy(Account, await encryptedWhere(accounts, { tenantId: "t1", handle: "a" }));
          throw new Error("rollback");
        })
        .catch(rolledBack);
      await accounts.save({ tenantId: "t1", handle: "a", secret: "s1" });
      expect(await freshRead()).toEqual([
        expect.objectContaining({ tenantId: "t1", handle: "a", secret: "s1" }),
      ]);
    });

    test("a lookup of one request while another's transaction is open, then rolled back", async () => {
      const ds = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Account] });
      const accounts = ds.getRepository(Account);
      const opened = signal();
      const finish = signal();
      const a = ds
        .transaction(async (m) => {
          await m.save(Account, { tenantId: "t0", handle: "zed", secret: null });
          opened.fire();
          await finish.done;
          throw new Error("rollback");
        })
        .catch(rolledBack);
      await opened.done;
      // Request B, while A's transaction is open.
      const where = await encryptedWhere(accounts, { tenantId: "t1", handle: "a" });
      expect(where).toBeDefined();
      finish.fire();
      await a;
      await accounts.save({ tenantId: "t1", handle: "a", secret: "s1" });
      expect(await freshRead()).toEqual([
        expect.objectContaining({ tenantId: "t1", handle: "a", secret: "s1" }),
      ]);
    });

    test("a data key still being made when another request opens a transaction is refused on SQLite", async () => {
      const gated = gatedKms(kms);
      const ds = await db.connect(fieldEncryption({ kms: gated.kms, keyId }), {
        entities: [Account],
      });
      const accounts = ds.getRepository(Account);
      const held = gated.arm();
      // Request B begins outside any transaction, and waits for the KMS.
      const lookup = failure(() => encryptedWhere(accounts, { tenantId: "t1", handle: "a" }));
      await held.started;
      const opened = signal();
      const finish = signal();
      const a = ds
        .transaction(async (m) => {
          await m.save(Account, { tenantId: "t0", handle: null, secret: null });
          opened.fire();
          await finish.done;
          throw new Error("rollback");
        })
        .catch(rolledBack);
      await opened.done;
      held.release();
      const error = await lookup;
      if (db.kind === "sqlite") {
        // Its row would have gone into A's transaction, and away with A's rollback.
        expect(error).toBeInstanceOf(ConflictError);
        expect((error as Error).message).toMatch(
          /^a data key cannot be stored now: SQLite has one connection, and a transaction this operation is not part of began on it/,
        );
      } else {
        expect(error).toBeUndefined();
      }
      finish.fire();
      await a;
      await accounts.save({ tenantId: "t1", handle: "a", secret: "s1" });
      expect(await freshRead()).toEqual([
        expect.objectContaining({ tenantId: "t1", handle: "a", secret: "s1" }),
      ]);
    });

    test("reencryptEntities makes no data key inside another request's open transaction on SQLite", async () => {
      const ds = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Account] });
      const accounts = ds.getRepository(Account);
      await accounts.save({ tenantId: "t1", handle: null, secret: "s1" });
      const opened = signal();
      const finish = signal();
      const a = ds
        .transaction(async (m) => {
          await m.save(Account, { tenantId: "t0", handle: null, secret: null });
          opened.fire();
          await finish.done;
          throw new Error("rollback");
        })
        .catch(rolledBack);
      await opened.done;
      // Every randomized value rewritten under a new data key.
      const run = await failure(() =>
        reencryptEntities(ds, Account, { shouldReencrypt: () => true }),
      );
      if (db.kind === "sqlite") {
        expect(run).toBeInstanceOf(ConflictError);
      } else {
        expect(run).toBeUndefined();
      }
      finish.fire();
      await a;
      // Written outside any transaction, with whatever data key the engine holds for t1.
      await accounts.save({ tenantId: "t1", handle: null, secret: "s2" });
      expect((await freshRead()).map((r) => r.secret)).toEqual(["s1", "s2"]);
      // Run again with no transaction open, it goes through.
      await reencryptEntities(ds, Account, { shouldReencrypt: () => true });
      expect((await freshRead()).map((r) => r.secret)).toEqual(["s1", "s2"]);
    });

    // Found in review: on SQLite every request shares one query runner, and any statement that
    // failed there, or any transaction rolled back, put the plaintext back on the entities of
    // every write in flight, whose INSERT then failed.
    test("another request's failure does not fail a write still sealing", async () => {
      const gated = gatedKms(kms);
      const ds = await db.connect(fieldEncryption({ kms: gated.kms, keyId }), {
        entities: [Account, Taken],
      });
      const accounts = ds.getRepository(Account);
      await ds.getRepository(Taken).save({ id: 1 });
      const failures = {
        "a failed transaction": () =>
          ds.transaction((m) => m.getRepository(Taken).insert({ id: 1 })),
        "a failed insert": () => ds.getRepository(Taken).insert({ id: 1 }),
        "a failed query": () => ds.query("SELECT missing FROM kms_dkc_no_such_table"),
      };
      const writes = {
        save: (a: Partial<Account>) => accounts.save(a),
        insert: (a: Partial<Account>) => accounts.insert(a),
      };
      const expected: string[] = [];
      for (const [write, failing] of [
        ["save", "a failed transaction"],
        ["insert", "a failed insert"],
        ["insert", "a failed query"],
        ["save", "a failed query"],
      ] as const) {
        const tenantId = `t-${expected.length}`;
        const held = gated.arm();
        const pending = failure(() => writes[write]({ tenantId, handle: null, secret: tenantId }));
        await held.started;
        expect(await failure(failures[failing])).toBeInstanceOf(Error);
        held.release();
        expect(await pending, `${write} during ${failing}`).toBeUndefined();
        expected.push(tenantId);
      }
      expect((await freshRead()).map((a) => a.secret)).toEqual(expected);
    });

    test("a data key made inside another request's savepoint that rolls back seals no committed value", async () => {
      const gated = gatedKms(kms);
      const ds = await db.connect(fieldEncryption({ kms: gated.kms, keyId }), {
        entities: [Account, Memo],
      });
      const memos = ds.getRepository(Memo);
      // Request A: its first value waits for the KMS (a new stable data key), its INSERT for `go`.
      const go = signal();
      const held = gated.arm();
      const memo = Object.assign(new Memo(), {
        tenantId: "t1",
        handle: "a",
        secret: "from A",
        hold: go.done,
      });
      const a = failure(() => memos.save(memo));
      await held.started;
      // Request B opens its transaction meanwhile (on SQLite a savepoint in A's) and makes the
      // randomized data key of t1 there.
      const saved = signal();
      const finish = signal();
      const b = ds
        .transaction(async (m) => {
          await m.save(Memo, { tenantId: "t1", handle: null, secret: "from B" });
          saved.fire();
          await finish.done;
          throw new Error("rollback");
        })
        .catch(() => undefined);
      await saved.done;
      // A goes on, and seals its secret under B's key, before B rolls back.
      held.release();
      for (let i = 0; i < 1_000 && typeof memo.secret === "string"; i++) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      finish.fire();
      await b;
      go.fire();
      const outcome = await a;
      const fresh = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Memo] });
      const rows = await fresh.getRepository(Memo).find();
      if (db.kind === "sqlite") {
        // B's key lost its row with B's savepoint: A's write is refused rather than committed
        // unreadable, and the caller's object holds its plaintext again.
        expect(outcome).toBeInstanceOf(Error);
        expect(rows).toEqual([]);
        expect(memo.secret).toBe("from A");
        await memos.save(memo);
      } else {
        // B's key was committed through the pool: A is unaffected.
        expect(outcome).toBeUndefined();
      }
      expect(
        (await fresh.getRepository(Memo).find()).map((r) => [r.tenantId, r.handle, r.secret]),
      ).toEqual([["t1", "a", "from A"]]);
    });

    test("a data key whose row another request's savepoint took, while a value was sealed with it, is not used", async () => {
      const gated = gatedKms(kms);
      const ds = await db.connect(fieldEncryption({ kms: gated.kms, keyId }), {
        entities: [Account, IndexedMemo],
      });
      const memos = ds.getRepository(IndexedMemo);
      // Request A: the randomized data key of t1 waits for the KMS.
      const first = gated.arm();
      const a = failure(() => memos.save({ tenantId: "t1", secret: "from A" }));
      await first.started;
      // Request B opens a transaction (on SQLite a savepoint in A's), in which A's key row is
      // then written, and rolls it back while A waits for its blind index key.
      const opened = signal();
      const finish = signal();
      const b = ds
        .transaction(async (m) => {
          await m.count(Account);
          opened.fire();
          await finish.done;
          throw new Error("rollback");
        })
        .catch(() => undefined);
      await opened.done;
      const second = gated.arm();
      first.release();
      await second.started;
      finish.fire();
      await b;
      second.release();
      expect(await a).toBeUndefined();
      const fresh = await db.connect(fieldEncryption({ kms, keyId }), { entities: [IndexedMemo] });
      const rows = fresh.getRepository(IndexedMemo);
      expect((await rows.find()).map((r) => r.secret)).toEqual(["from A"]);
      expect(
        await rows.countBy(await encryptedWhere(rows, { tenantId: "t1", secret: "from A" })),
      ).toBe(1);
    });

    test("a SERIALIZABLE transaction makes a new stable data key without waiting on its own read", async () => {
      const ds = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Account] });
      await ds.getRepository(Account).save({ tenantId: "t0", handle: "zed", secret: null });
      // MariaDB's SERIALIZABLE makes every read a locking one: the transaction's own read of a
      // data key not yet stored held a gap lock that the key's insert through the pool waited
      // for (50 s, then a failure).
      await ds.transaction("SERIALIZABLE", (m) =>
        m.save(Account, { tenantId: "t1", handle: "a", secret: "s1" }),
      );
      if (db.kind === "mariadb") {
        // The session's level, set on the connection without TypeORM: asked of the server.
        const runner = ds.createQueryRunner();
        await runner.connect();
        const connection = (runner as unknown as { databaseConnection: RawConnection })
          .databaseConnection;
        await rawQuery(connection, "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE");
        try {
          await runner.startTransaction();
          await runner.manager.save(Account, { tenantId: "t2", handle: "b", secret: "s2" });
          await runner.commitTransaction();
        } finally {
          await rawQuery(connection, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ");
          await runner.release();
        }
      }
      expect((await freshRead()).map((r) => r.secret)).toEqual(
        db.kind === "mariadb" ? [null, "s1", "s2"] : [null, "s1"],
      );
    });

    test("one encryption refuses a second DataSource, whose data key table is another", async () => {
      const encryption = fieldEncryption({ kms, keyId });
      const ds = await db.connect(encryption, { entities: [Account] });
      await ds.getRepository(Account).save({ tenantId: "t1", handle: "a", secret: "s1" });
      const other = await open();
      others.push(other);
      const second = await other.connect(encryption, { entities: [Account] });
      const message =
        /^this fieldEncryption\(\.\.\.\) already serves another DataSource: its data key cache is shared while each database holds its own data key table/;
      const saved = await failure(() =>
        second.getRepository(Account).save({ tenantId: "t1", handle: "b", secret: "s2" }),
      );
      expect(saved).toBeInstanceOf(ValidationError);
      expect((saved as Error).message).toMatch(message);
      expect(
        await other.raw(`SELECT ${other.q("id")} FROM ${other.q("kms_dkc_accounts")}`),
      ).toEqual([]);
      expect(() => encryption.check(second)).toThrow(message);
      const third = await other.connect(encryption, {
        entities: [Account],
        withoutSubscriber: true,
      });
      expect(() => encryption.install(third)).toThrow(message);
      // The first DataSource goes on as before.
      await ds.getRepository(Account).save({ tenantId: "t1", handle: "b", secret: "s2" });
      expect((await freshRead()).map((r) => r.secret)).toEqual(["s1", "s2"]);
    });

    test("a dataKeyStore of one's own serves several DataSources", async () => {
      const encryption = fieldEncryption({ kms, keyId, dataKeyStore: new MemoryDataKeyStore() });
      const ds = await db.connect(encryption, { entities: [Account], dataKeyEntities: [] });
      const other = await open();
      others.push(other);
      const second = await other.connect(encryption, { entities: [Account], dataKeyEntities: [] });
      await ds.getRepository(Account).save({ tenantId: "t1", handle: "a", secret: "s1" });
      await second.getRepository(Account).save({ tenantId: "t1", handle: "b", secret: "s2" });
      expect((await second.getRepository(Account).find()).map((r) => r.secret)).toEqual(["s2"]);
    });

    test("transactions holding every pooled connection read data keys on a cold cache", async (ctx) => {
      if (db.kind === "sqlite") ctx.skip();
      const ds = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Account] });
      await ds.getRepository(Account).save([
        { tenantId: "a", handle: null, secret: "x" },
        { tenantId: "b", handle: null, secret: "y" },
      ]);
      // A fresh process with a pool of two (on PostgreSQL a starved pool fails after 5 s instead
      // of waiting; mysql2's pool has no such limit).
      const pooled = await db.connect(fieldEncryption({ kms, keyId }), {
        entities: [Account],
        pool:
          db.kind === "postgres"
            ? { poolSize: 2, extra: { connectionTimeoutMillis: 5_000 } }
            : { poolSize: 2 },
      });
      const read = (tenantId: string) =>
        pooled.transaction(async (m) => (await m.findOneByOrFail(Account, { tenantId })).secret);
      expect(await Promise.all([read("a"), read("b")])).toEqual(["x", "y"]);
    });

    test("a transaction whose snapshot predates a data key reads it from the pool", async (ctx) => {
      // MariaDB's REPEATABLE READ: a locking read sees a row committed after the snapshot was
      // taken, a plain read of the data key table does not.
      if (db.kind !== "mariadb") ctx.skip();
      const reader = await db.connect(fieldEncryption({ kms, keyId }), { entities: [Account] });
      await reader.getRepository(Account).save({ tenantId: "t0", handle: null, secret: "old" });
      const writer: DataSource = await db.connect(fieldEncryption({ kms, keyId }), {
        entities: [Account],
      });
      const secret = await reader.transaction("REPEATABLE READ", async (m) => {
        expect(await m.count(Account)).toBe(1);
        const { id } = await writer
          .getRepository(Account)
          .save({ tenantId: "t1", handle: null, secret: "new" });
        const row = await m.findOneOrFail(Account, {
          where: { id },
          lock: { mode: "pessimistic_read" },
        });
        return row.secret;
      });
      expect(secret).toBe("new");
    });
  });
}
