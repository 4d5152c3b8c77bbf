import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AuditEvent,
  type AuditSink,
  assertExtendsAuditHead,
  chainAuditEvents,
  createKms,
  GENESIS_HASH,
  hashAuditEvent,
  JsonlAuditSink,
  KmsInternalError,
  MemoryAuditSink,
  type UnchainedAuditEvent,
  verifyAuditLog,
} from "@kms/core";
import { describeAuditSinkConformance } from "@kms/core/testing";
import { describe, expect, test } from "vitest";

describeAuditSinkConformance("MemoryAuditSink", async () => ({ sink: new MemoryAuditSink() }));

describeAuditSinkConformance("JsonlAuditSink", async () => {
  const dir = await mkdtemp(join(tmpdir(), "kms-audit-conf-"));
  return {
    sink: new JsonlAuditSink(join(dir, "audit.jsonl")),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

/** Wraps a sink, hiding its shared-chain capability: the Auditor chains in memory. */
function singleWriter(sink: AuditSink): AuditSink {
  return {
    description: `single(${sink.description})`,
    write: (events) => sink.write(events),
    read: (o) => sink.read(o),
    last: () => sink.last(),
    close: () => sink.close(),
  };
}

/** A shared-chain sink that records what the Auditor hands it and can be made to fail. */
class RecordingSink extends MemoryAuditSink {
  batches: number[] = [];
  failing = false;
  lie = false;
  override async appendAndChain(
    events: readonly UnchainedAuditEvent[],
  ): Promise<readonly AuditEvent[]> {
    this.batches.push(events.length);
    if (this.failing) throw new Error("connection reset");
    const chained = await super.appendAndChain(events);
    return this.lie ? chained.slice(1) : chained;
  }
}

const plaintext = new TextEncoder().encode("shared chain");

describe("chainAuditEvents / assertExtendsAuditHead", () => {
  const unchained = (n: number) =>
    ({ eventID: `e${n}`, eventName: "Encrypt" }) as unknown as UnchainedAuditEvent;

  test("chains from genesis or from a head, with core's hash", () => {
    const first = chainAuditEvents(undefined, [unchained(0), unchained(1)]);
    expect(first.map((e) => [e.sequence, e.prevHash === GENESIS_HASH])).toEqual([
      [0, true],
      [1, false],
    ]);
    for (const e of first) expect(e.hash).toBe(hashAuditEvent(e));
    const head = { sequence: first[1]!.sequence, hash: first[1]!.hash };
    const next = chainAuditEvents(head, [unchained(2)]);
    expect(next[0]).toMatchObject({ sequence: 2, prevHash: first[1]!.hash });
    expect(verifyAuditLog([...first, ...next])).toMatchObject({ ok: true, count: 3 });
    expect(chainAuditEvents(head, [])).toEqual([]);
  });

  test("rejects a batch that repeats, skips or forks from the head, naming the event", () => {
    const events = chainAuditEvents(undefined, [unchained(0), unchained(1), unchained(2)]);
    const head = { sequence: 0, hash: events[0]!.hash };
    expect(() => assertExtendsAuditHead(head, events.slice(1), "t")).not.toThrow();
    expect(() => assertExtendsAuditHead(undefined, events, "t")).not.toThrow();
    expect(() => assertExtendsAuditHead(head, events, "t")).toThrow(KmsInternalError);
    expect(() => assertExtendsAuditHead(head, events.slice(2), "t")).toThrow(/event 0/);
    expect(() => assertExtendsAuditHead(head, [events[1]!, events[1]!], "t")).toThrow(/event 1/);
    const forked = chainAuditEvents({ sequence: 0, hash: "f".repeat(64) }, [unchained(9)]);
    expect(() => assertExtendsAuditHead(head, forked, "t")).toThrow(/does not extend/);
  });
});

describe("Auditor on a shared-chain sink", () => {
  test("two Kms instances on a single-writer path collide (the stale writer is refused); on a shared chain they do not", async () => {
    const forkedSink = new MemoryAuditSink();
    // The old behaviour, kept for sinks without appendAndChain: each Auditor chains in memory.
    const single = singleWriter(forkedSink);
    const a = await createKms({ audit: single });
    const b = await createKms({ audit: single });
    await a.generateRandom({ numberOfBytes: 4 });
    // b's head (from last()) is a's event; then a writes again from its own stale head.
    await b.generateRandom({ numberOfBytes: 4 });
    await expect(a.generateRandom({ numberOfBytes: 4 })).rejects.toBeInstanceOf(KmsInternalError);

    const sharedSink = new MemoryAuditSink();
    const c = await createKms({ audit: sharedSink });
    const d = await createKms({ audit: sharedSink });
    await c.generateRandom({ numberOfBytes: 4 });
    await d.generateRandom({ numberOfBytes: 4 });
    await c.generateRandom({ numberOfBytes: 4 });
    await Promise.all(
      Array.from({ length: 30 }, (_, i) => (i % 2 ? c : d).generateRandom({ numberOfBytes: 4 })),
    );
    expect(verifyAuditLog(sharedSink.events)).toMatchObject({ ok: true, count: 33 });
    expect(await c.audit.head()).toMatchObject({ sequence: 32 });
  });

  test("keeps group commit: concurrent calls share appends", async () => {
    const sink = new RecordingSink();
    const kms = await createKms({ audit: sink });
    const keyId = (await kms.createKey()).keyMetadata.keyId;
    await Promise.all(Array.from({ length: 50 }, () => kms.encrypt({ keyId, plaintext })));
    expect(sink.batches.reduce((s, n) => s + n, 0)).toBe(51);
    expect(sink.batches.length).toBeLessThan(51);
    expect(verifyAuditLog(sink.events)).toMatchObject({ ok: true, count: 51 });
  });

  test("fail-closed: a failed append fails every call of the batch, then the chain goes on", async () => {
    const sink = new RecordingSink();
    const kms = await createKms({ audit: sink });
    await kms.generateRandom({ numberOfBytes: 4 });
    sink.failing = true;
    const results = await Promise.allSettled(
      Array.from({ length: 5 }, () => kms.generateRandom({ numberOfBytes: 4 })),
    );
    expect(results.every((r) => r.status === "rejected")).toBe(true);
    const reason = (results[0] as PromiseRejectedResult).reason as Error;
    expect(reason).toBeInstanceOf(KmsInternalError);
    expect(reason.message).toContain("could not record");
    sink.failing = false;
    await kms.generateRandom({ numberOfBytes: 4 });
    expect(verifyAuditLog(sink.events)).toMatchObject({ ok: true, count: 2 });
  });

  test("fail-closed: a sink that answers with other events than it was given acknowledges nothing", async () => {
    const sink = new RecordingSink();
    sink.lie = true;
    const kms = await createKms({ audit: sink });
    await expect(kms.generateRandom({ numberOfBytes: 4 })).rejects.toBeInstanceOf(KmsInternalError);
  });

  test("fail-open: the call succeeds and the append failure goes to onError", async () => {
    const sink = new RecordingSink();
    sink.failing = true;
    const errors: unknown[] = [];
    const kms = await createKms({
      audit: { sink, failClosed: false, onError: (e) => errors.push(e) },
    });
    await expect(kms.generateRandom({ numberOfBytes: 4 })).resolves.toBeDefined();
    await new Promise((r) => setTimeout(r, 10));
    expect(errors).toHaveLength(1);
  });

  test("verify reports truncation against the head the sink recorded", async () => {
    const sink = new MemoryAuditSink({ maxEvents: 100 });
    const a = await createKms({ audit: sink });
    const b = await createKms({ audit: sink });
    for (let i = 0; i < 4; i++) await (i % 2 ? b : a).generateRandom({ numberOfBytes: 4 });
    // a wrote last at sequence 2, b at 3: a's verification still holds b's newer head.
    expect(await a.audit.head()).toMatchObject({ sequence: 3 });
    const events = sink.events;
    const head = await a.audit.head();
    expect(verifyAuditLog(events.slice(0, 3), { expectedHead: head! })).toMatchObject({
      ok: false,
      problem: "truncated",
      index: 3,
    });
  });
});

describe("MemoryAuditSink cap", () => {
  test("keeps exactly the newest maxEvents visible, trimming in steps", async () => {
    const sink = new MemoryAuditSink({ maxEvents: 10 });
    const kms = await createKms({ audit: sink });
    for (let i = 0; i < 200; i++) await kms.generateRandom({ numberOfBytes: 1 });
    const events = sink.events;
    expect(events).toHaveLength(10);
    expect(events.map((e) => e.sequence)).toEqual([...Array(10).keys()].map((i) => 190 + i));
    expect(await sink.read({ after: 195 })).toHaveLength(4);
    expect(verifyAuditLog(events, { from: events[0]! })).toMatchObject({ ok: true });
  });
});
