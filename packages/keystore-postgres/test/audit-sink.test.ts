import { fileURLToPath } from "node:url";
import {
  type AuditEvent,
  createKms,
  KmsInternalError,
  ValidationError,
  verifyAuditLog,
} from "@kms/core";
import { describeAuditSinkConformance } from "@kms/core/testing";
import { startWorkerProcess } from "@kms/tooling/worker-process";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresAuditSink, PostgresKeyStore } from "../src/index.ts";
import { dropSchema, randomSchema, target } from "./fixtures/database.ts";

const WORKER = fileURLToPath(new URL("./fixtures/audit-worker.ts", import.meta.url));
const rootKey = new Uint8Array(32).fill(5);

describe.skipIf(target.skipReason !== undefined)("PostgresAuditSink", () => {
  describeAuditSinkConformance("PostgresAuditSink", async () => {
    const schema = randomSchema("audit");
    const sink = await PostgresAuditSink.open({ connectionString: target.url!, schema });
    return {
      sink,
      openAnother: () => PostgresAuditSink.open({ connectionString: target.url!, schema }),
      cleanup: () => dropSchema(schema),
    };
  });

  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function rawClient(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: target.url! });
    await client.connect();
    cleanups.push(() => client.end());
    return client;
  }

  it("four processes, each with its own Kms, write one intact chain", async () => {
    const schema = randomSchema("audit_mp");
    cleanups.push(() => dropSchema(schema));
    const store = await PostgresKeyStore.open({ connectionString: target.url!, schema });
    const audit = await PostgresAuditSink.open({ connectionString: target.url!, schema });
    const kms = await createKms({ store, audit, rootKey });
    cleanups.push(() => kms.close());
    const keyId = (await kms.createKey()).keyMetadata.keyId;

    const processes = 4;
    const opsEach = 100;
    const workers = Array.from({ length: processes }, (_, w) =>
      startWorkerProcess<{ done: number }>(WORKER, [
        target.url!,
        schema,
        String(w),
        String(opsEach),
        keyId,
      ]),
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
    // Every acknowledged call has exactly one event.
    const requestIds = new Set(events.slice(1).map((e) => e.requestID));
    expect(requestIds.size).toBe(processes * opsEach);
    for (let w = 0; w < processes; w++) {
      for (let i = 0; i < opsEach; i++) expect(requestIds.has(`w${w}-${i}`)).toBe(true);
    }
    // The processes really interleaved: otherwise the chain would prove nothing about locking.
    const switches = events
      .slice(1)
      .filter(
        (e, i, all) => i > 0 && e.requestID.split("-")[0] !== all[i - 1]!.requestID.split("-")[0],
      );
    expect(switches.length).toBeGreaterThan(processes);
    expect(await kms.audit.head()).toMatchObject({ sequence: total - 1 });
  }, 120_000);

  describe("tampering with the rows is detected at the right index", () => {
    async function trail(): Promise<{
      schema: string;
      kms: Awaited<ReturnType<typeof createKms>>;
      client: pg.Client;
      original: { sequence: string; event: string }[];
    }> {
      const schema = randomSchema("audit_tamper");
      cleanups.push(() => dropSchema(schema));
      const audit = await PostgresAuditSink.open({ connectionString: target.url!, schema });
      const kms = await createKms({ audit, rootKey });
      cleanups.push(() => kms.close());
      const keyId = (await kms.createKey()).keyMetadata.keyId;
      for (let i = 0; i < 5; i++) {
        await kms.encrypt({ keyId, plaintext: new Uint8Array(8) }, { requestId: `r${i}` });
      }
      expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 6 });
      const client = await rawClient();
      const { rows } = await client.query<{ sequence: string; event: string }>(
        `SELECT sequence, event FROM "${schema}".kms_audit_events ORDER BY sequence`,
      );
      return { schema, kms, client, original: rows };
    }

    async function readBack(client: pg.Client, schema: string): Promise<AuditEvent[]> {
      const { rows } = await client.query<{ event: string }>(
        `SELECT event FROM "${schema}".kms_audit_events ORDER BY sequence`,
      );
      return rows.map((r) => JSON.parse(r.event) as AuditEvent);
    }

    it("an edited row", async () => {
      const { schema, kms, client } = await trail();
      await client.query(
        `UPDATE "${schema}".kms_audit_events SET event = replace(event, '"r2"', '"r9"') WHERE sequence = 3`,
      );
      expect(verifyAuditLog(await readBack(client, schema))).toMatchObject({
        ok: false,
        index: 3,
        problem: "edited",
      });
      expect(await kms.audit.verify()).toMatchObject({ ok: false, index: 3, problem: "edited" });
    });

    it("a deleted row", async () => {
      const { schema, kms, client } = await trail();
      await client.query(`DELETE FROM "${schema}".kms_audit_events WHERE sequence = 2`);
      expect(verifyAuditLog(await readBack(client, schema))).toMatchObject({
        ok: false,
        index: 2,
        problem: "deleted-or-reordered",
      });
      expect(await kms.audit.verify()).toMatchObject({ ok: false, index: 2 });
    });

    it("reordered rows (events swapped between sequence numbers)", async () => {
      const { schema, kms, client, original } = await trail();
      const update = `UPDATE "${schema}".kms_audit_events SET event = $2 WHERE sequence = $1`;
      await client.query(update, [1, original[4]!.event]);
      await client.query(update, [4, original[1]!.event]);
      expect(verifyAuditLog(await readBack(client, schema))).toMatchObject({
        ok: false,
        index: 1,
        problem: "deleted-or-reordered",
      });
      expect(await kms.audit.verify()).toMatchObject({ ok: false, index: 1 });
    });

    it("removed trailing rows, against the head row", async () => {
      const { schema, kms, client } = await trail();
      await client.query(`DELETE FROM "${schema}".kms_audit_events WHERE sequence >= 4`);
      // The rows left are a valid chain on their own; only the recorded head exposes the cut.
      expect(verifyAuditLog(await readBack(client, schema))).toMatchObject({ ok: true, count: 4 });
      // A fresh instance knows nothing but what the database says.
      const sink = await PostgresAuditSink.open({ connectionString: target.url!, schema });
      const other = await createKms({ audit: sink, rootKey });
      cleanups.push(() => other.close());
      expect(await other.audit.verify()).toMatchObject({
        ok: false,
        index: 4,
        problem: "truncated",
      });
      expect(await kms.audit.verify()).toMatchObject({ ok: false, problem: "truncated" });
    });
  });

  it("fail-closed: a call is refused when its event cannot be stored", async () => {
    const schema = randomSchema("audit_fail");
    cleanups.push(() => dropSchema(schema));
    const audit = await PostgresAuditSink.open({ connectionString: target.url!, schema });
    const kms = await createKms({ audit, rootKey });
    cleanups.push(() => kms.close());
    await kms.generateRandom({ numberOfBytes: 4 });
    const client = await rawClient();
    await client.query(`ALTER TABLE "${schema}".kms_audit_events RENAME TO moved`);
    const error = await kms.generateRandom({ numberOfBytes: 4 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toContain("could not record");
    await client.query(`ALTER TABLE "${schema}".moved RENAME TO kms_audit_events`);
    await kms.generateRandom({ numberOfBytes: 4 });
    // The refused call left no event and no moved head: the chain goes on intact.
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 2 });
  });

  it("a stuck transaction on the head row fails appends after lockTimeoutMs, not forever", async () => {
    const schema = randomSchema("audit_lock");
    cleanups.push(() => dropSchema(schema));
    const audit = await PostgresAuditSink.open({
      connectionString: target.url!,
      schema,
      lockTimeoutMs: 200,
    });
    const kms = await createKms({ audit, rootKey });
    cleanups.push(() => kms.close());
    await kms.generateRandom({ numberOfBytes: 4 });
    const holder = await rawClient();
    await holder.query(`BEGIN; SELECT * FROM "${schema}".kms_audit_head FOR UPDATE`);
    const started = Date.now();
    const error = await kms.generateRandom({ numberOfBytes: 4 }).catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error).toBeInstanceOf(KmsInternalError);
    expect((error as Error).message).toContain("could not record");
    const cause = (error as Error).cause as Error;
    expect(cause.message).toMatch(/timed out waiting for the write lock .*55P03.*lockTimeoutMs/);
    await holder.query("ROLLBACK");
    await kms.generateRandom({ numberOfBytes: 4 });
    expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 2 });
  });

  it.each([-1, 1.5, 2 ** 31, "10"])("refuses lockTimeoutMs %s", async (lockTimeoutMs) => {
    await expect(
      PostgresAuditSink.open({
        connectionString: target.url!,
        lockTimeoutMs: lockTimeoutMs as number,
      }),
    ).rejects.toThrow(/"lockTimeoutMs"/);
  });

  it("rejects bad options and use after close", async () => {
    await expect(
      PostgresAuditSink.open({ connectionString: target.url!, schema: "Bad-Name" }),
    ).rejects.toBeInstanceOf(ValidationError);
    await expect(
      PostgresAuditSink.open({} as unknown as { connectionString: string }),
    ).rejects.toBeInstanceOf(ValidationError);
    const schema = randomSchema("audit_closed");
    cleanups.push(() => dropSchema(schema));
    const sink = await PostgresAuditSink.open({ connectionString: target.url!, schema });
    await sink.close();
    await expect(sink.read()).rejects.toBeInstanceOf(KmsInternalError);
    await expect(sink.appendAndChain([])).rejects.toBeInstanceOf(KmsInternalError);
  });
});
