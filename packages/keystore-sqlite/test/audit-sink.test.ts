import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  AccessDeniedError,
  type AuditEvent,
  chainAuditEvents,
  createKms,
  KmsInternalError,
  type UnchainedAuditEvent,
  verifyAuditLog,
} from "@kms/core";
import { describeAuditSinkConformance } from "@kms/core/testing";
import { startWorkerProcess } from "@kms/tooling/worker-process";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { retainSqliteHandle, SqliteAuditSink, SqliteKeyStore } from "../src/index.ts";

const WORKER = fileURLToPath(new URL("./fixtures/audit-worker.ts", import.meta.url));

describeAuditSinkConformance("SqliteAuditSink (own file)", async () => {
  const folder = await mkdtemp(join(tmpdir(), "kms-sqlite-audit-conf-"));
  const path = join(folder, "audit.db");
  return {
    sink: new SqliteAuditSink({ path }),
    openAnother: async () => new SqliteAuditSink({ path }),
    cleanup: () => rm(folder, { recursive: true, force: true }),
  };
});

describeAuditSinkConformance("SqliteAuditSink (caller's database)", async () => {
  const folder = await mkdtemp(join(tmpdir(), "kms-sqlite-audit-conf-"));
  const path = join(folder, "audit.db");
  const databases: Database.Database[] = [];
  const open = () => {
    const database = retainSqliteHandle(new Database(path));
    database.exec("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000");
    databases.push(database);
    return new SqliteAuditSink({ database });
  };
  return {
    sink: open(),
    openAnother: async () => open(),
    cleanup: async () => {
      for (const database of databases) database.close();
      await rm(folder, { recursive: true, force: true });
    },
  };
});

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "kms-sqlite-audit-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const rootKey = new Uint8Array(32).fill(7);
const plaintext = new TextEncoder().encode("audited plaintext");

describe("SqliteAuditSink", () => {
  test("records every call in the key store's own file and survives a restart", async () => {
    const path = join(dir, "kms.db");
    const a = await createKms({
      store: SqliteKeyStore.open({ path }),
      rootKey,
      audit: new SqliteAuditSink({ path }),
    });
    const keyId = (await a.createKey()).keyMetadata.keyId;
    await a.encrypt({ keyId, plaintext });
    await expect(
      a.encrypt({ keyId, plaintext }, { principal: "arn:aws:iam::111122223333:user/x" }),
    ).rejects.toBeInstanceOf(AccessDeniedError);
    await a.close();

    const b = await createKms({
      store: SqliteKeyStore.open({ path }),
      rootKey,
      audit: new SqliteAuditSink({ path }),
    });
    await b.describeKey({ keyId });
    const events = await b.audit.events();
    expect(events.map((e) => [e.eventName, e.errorCode ?? "ok"])).toEqual([
      ["CreateKey", "ok"],
      ["Encrypt", "ok"],
      ["Encrypt", "AccessDeniedException"],
      ["DescribeKey", "ok"],
    ]);
    expect(await b.audit.verify()).toMatchObject({ ok: true, count: 4 });
    expect(JSON.stringify(events)).not.toContain(Buffer.from(plaintext).toString("base64"));
    await b.close();

    // Tampering in the table is detected at the edited row.
    const db = retainSqliteHandle(new Database(path));
    db.prepare(
      "UPDATE kms_audit_events SET event = replace(event, '\"DescribeKey\"', '\"Decrypt\"') WHERE sequence = 3",
    ).run();
    const rows = db
      .prepare("SELECT event FROM kms_audit_events ORDER BY sequence")
      .pluck()
      .all() as string[];
    db.close();
    expect(verifyAuditLog(rows.map((r) => JSON.parse(r)))).toMatchObject({ ok: false, index: 3 });
  });

  test("a stored event that is not JSON is KMSInternalException, not a bare SyntaxError", async () => {
    const path = join(dir, "audit.db");
    const sink = new SqliteAuditSink({ path });
    const kms = await createKms({ audit: sink });
    await kms.generateRandom({ numberOfBytes: 4 });
    await kms.generateRandom({ numberOfBytes: 4 });
    const db = retainSqliteHandle(new Database(path));
    db.prepare("UPDATE kms_audit_events SET event = '{not json' WHERE sequence = 1").run();
    db.close();
    for (const read of [() => sink.read(), () => sink.last(), () => kms.audit.verify()]) {
      const error = await read().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(KmsInternalError);
      expect((error as KmsInternalError).cause).toBeInstanceOf(SyntaxError);
      expect((error as Error).message).toContain("a stored event is not JSON");
    }
    // The rows before it still read.
    expect(await sink.read({ limit: 1 })).toHaveLength(1);
    await kms.close();
  });

  test("a forked chain (same sequence written twice) fails the write", async () => {
    const path = join(dir, "audit.db");
    const sink = new SqliteAuditSink({ path });
    const kms = await createKms({ audit: sink });
    await kms.generateRandom({ numberOfBytes: 4 });
    const [first] = await sink.read();
    await expect(sink.write([first!])).rejects.toBeInstanceOf(KmsInternalError);
    expect(await sink.read()).toHaveLength(1);
    await kms.close();
  });

  test("keeps chaining on a caller's database that reads integers as BigInt", async () => {
    const database = retainSqliteHandle(new Database(join(dir, "safe.db")));
    database.defaultSafeIntegers(true);
    const sink = new SqliteAuditSink({ database });
    const kms = await createKms({ audit: sink });
    for (let i = 0; i < 3; i++) await kms.generateRandom({ numberOfBytes: 4 });
    expect(await sink.chainHead()).toMatchObject({ sequence: 2 });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 3 });
    await kms.close();
    database.close();
  });

  test("fails with KMSInternalException, not a driver error, on a file that is not a database or a database closed under it", async () => {
    const junk = join(dir, "junk.db");
    await writeFile(junk, "definitely not sqlite ".repeat(100));
    const opening = (() => {
      try {
        return new SqliteAuditSink({ path: junk });
      } catch (error) {
        return error;
      }
    })();
    expect(opening).toBeInstanceOf(KmsInternalError);
    expect((opening as Error).cause).toBeInstanceOf(Database.SqliteError);

    const database = retainSqliteHandle(new Database(join(dir, "closed.db")));
    const sink = new SqliteAuditSink({ database });
    database.close();
    for (const call of [() => sink.read(), () => sink.last(), () => sink.chainHead()]) {
      await expect(call()).rejects.toBeInstanceOf(KmsInternalError);
    }
  });

  test("refuses to append inside a transaction the connection's owner began, so no acknowledged event rolls back", async () => {
    const database = retainSqliteHandle(new Database(join(dir, "shared.db")));
    const sink = new SqliteAuditSink({ database });
    const kms = await createKms({ audit: sink });
    await kms.generateRandom({ numberOfBytes: 4 });
    database.exec("BEGIN");
    try {
      await expect(kms.generateRandom({ numberOfBytes: 4 })).rejects.toBeInstanceOf(
        KmsInternalError,
      );
    } finally {
      database.exec("ROLLBACK");
    }
    // Had the event gone into the owner's transaction, the rollback would have removed it and the
    // head with it: a shorter chain that still verifies.
    await kms.generateRandom({ numberOfBytes: 4 });
    expect((await sink.read()).map((e) => e.eventName)).toEqual([
      "GenerateRandom",
      "GenerateRandom",
    ]);
    await kms.close();
    database.close();
  });

  test("creates its own file readable by the owner only (0600)", async () => {
    const path = join(dir, "private.db");
    const sink = new SqliteAuditSink({ path });
    const kms = await createKms({ audit: sink });
    await kms.generateRandom({ numberOfBytes: 4 });
    for (const file of [path, `${path}-wal`, `${path}-shm`]) {
      expect(((await stat(file)).mode & 0o777).toString(8), file).toBe("600");
    }
    await kms.close();
  });

  test("read pages by sequence; last returns the newest event", async () => {
    const sink = new SqliteAuditSink({ path: join(dir, "a.db") });
    const kms = await createKms({ audit: sink });
    for (let i = 0; i < 5; i++) await kms.generateRandom({ numberOfBytes: 4 });
    expect((await sink.read({ after: 1, limit: 2 })).map((e) => e.sequence)).toEqual([2, 3]);
    expect((await sink.last())?.sequence).toBe(4);
    await kms.close();
    await expect(sink.read()).rejects.toBeInstanceOf(KmsInternalError);
  });
});

describe("SqliteAuditSink shared chain", () => {
  test("four processes, each with its own Kms on one file, write one intact chain", async () => {
    const path = join(dir, "kms.db");
    const kms = await createKms({
      store: SqliteKeyStore.open({ path }),
      audit: new SqliteAuditSink({ path }),
      rootKey,
    });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    const processes = 4;
    const opsEach = 100;
    const workers = Array.from({ length: processes }, (_, w) =>
      startWorkerProcess<{ done: number }>(WORKER, [path, String(w), String(opsEach), keyId]),
    );
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.go();
    const results = await Promise.all(workers.map((w) => w.result));
    expect(results.map((r) => r.done)).toEqual(Array(processes).fill(opsEach));

    const events = await kms.audit.events();
    const total = 1 + processes * opsEach;
    expect(events).toHaveLength(total);
    expect(verifyAuditLog(events)).toMatchObject({ ok: true, count: total });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: total });
    expect(events.map((e) => e.sequence)).toEqual(Array.from({ length: total }, (_, i) => i));
    const requestIds = new Set(events.slice(1).map((e) => e.requestID));
    expect(requestIds.size).toBe(processes * opsEach);
    for (let w = 0; w < processes; w++) {
      for (let i = 0; i < opsEach; i++) expect(requestIds.has(`w${w}-${i}`)).toBe(true);
    }
    // The processes really interleaved: otherwise the chain would prove nothing about locking.
    const writerOf = (e: AuditEvent) => e.requestID.split("-")[0];
    const switches = events.slice(2).filter((e, i) => writerOf(e) !== writerOf(events[i + 1]!));
    expect(switches.length).toBeGreaterThan(processes);
    await kms.close();
  }, 120_000);

  test("a file written before the head table existed continues its chain", async () => {
    const path = join(dir, "old.db");
    const db = retainSqliteHandle(new Database(path));
    db.exec(
      "CREATE TABLE kms_audit_events (sequence INTEGER NOT NULL PRIMARY KEY, event TEXT NOT NULL) STRICT",
    );
    const old = chainAuditEvents(undefined, [
      { eventID: "a", eventName: "CreateKey" },
      { eventID: "b", eventName: "Encrypt" },
    ] as unknown as UnchainedAuditEvent[]);
    const insert = db.prepare("INSERT INTO kms_audit_events VALUES (?, ?)");
    for (const e of old) insert.run(e.sequence, JSON.stringify(e));
    db.close();
    const sink = new SqliteAuditSink({ path });
    expect(await sink.chainHead()).toEqual({ sequence: 1, hash: old[1]!.hash });
    const kms = await createKms({ audit: sink });
    await kms.generateRandom({ numberOfBytes: 4 });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 3 });
    await kms.close();
  });

  describe("tampering with the rows is detected at the right index", () => {
    async function trail(): Promise<{ path: string; kms: Awaited<ReturnType<typeof createKms>> }> {
      const path = join(dir, "tamper.db");
      const kms = await createKms({ audit: new SqliteAuditSink({ path }) });
      const keyId = (await kms.createKey()).keyMetadata.keyId;
      for (let i = 0; i < 5; i++) {
        await kms.encrypt({ keyId, plaintext }, { requestId: `r${i}` });
      }
      expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 6 });
      return { path, kms };
    }

    function tamper(path: string, sql: string): AuditEvent[] {
      const db = retainSqliteHandle(new Database(path));
      db.exec(sql);
      const rows = db
        .prepare("SELECT event FROM kms_audit_events ORDER BY sequence")
        .pluck()
        .all() as string[];
      db.close();
      return rows.map((r) => JSON.parse(r) as AuditEvent);
    }

    test("an edited row", async () => {
      const { path, kms } = await trail();
      const rows = tamper(
        path,
        "UPDATE kms_audit_events SET event = replace(event, '\"r2\"', '\"r9\"') WHERE sequence = 3",
      );
      expect(verifyAuditLog(rows)).toMatchObject({ ok: false, index: 3, problem: "edited" });
      expect(await kms.audit.verify()).toMatchObject({ ok: false, index: 3, problem: "edited" });
      await kms.close();
    });

    test("a deleted row", async () => {
      const { path, kms } = await trail();
      const rows = tamper(path, "DELETE FROM kms_audit_events WHERE sequence = 2");
      expect(verifyAuditLog(rows)).toMatchObject({
        ok: false,
        index: 2,
        problem: "deleted-or-reordered",
      });
      expect(await kms.audit.verify()).toMatchObject({ ok: false, index: 2 });
      await kms.close();
    });

    test("reordered rows (sequence numbers swapped)", async () => {
      const { path, kms } = await trail();
      const rows = tamper(
        path,
        `UPDATE kms_audit_events SET sequence = -1 WHERE sequence = 1;
         UPDATE kms_audit_events SET sequence = 1 WHERE sequence = 4;
         UPDATE kms_audit_events SET sequence = 4 WHERE sequence = -1;`,
      );
      expect(verifyAuditLog(rows)).toMatchObject({
        ok: false,
        index: 1,
        problem: "deleted-or-reordered",
      });
      expect(await kms.audit.verify()).toMatchObject({ ok: false, index: 1 });
      await kms.close();
    });

    test("removed trailing rows, against the head row", async () => {
      const { path, kms } = await trail();
      await kms.close();
      const rows = tamper(path, "DELETE FROM kms_audit_events WHERE sequence >= 4");
      // The rows left are a valid chain on their own; only the recorded head exposes the cut.
      expect(verifyAuditLog(rows)).toMatchObject({ ok: true, count: 4 });
      const fresh = await createKms({ audit: new SqliteAuditSink({ path }) });
      expect(await fresh.audit.verify()).toMatchObject({
        ok: false,
        index: 4,
        problem: "truncated",
      });
      await fresh.close();
    });
  });
});
