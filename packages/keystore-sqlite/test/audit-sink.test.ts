import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AccessDeniedError, createKms, KmsInternalError, verifyAuditLog } from "@kms/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { SqliteAuditSink, SqliteKeyStore } from "../src/index.ts";

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
    const db = new Database(path);
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
