/**
 * The behaviour every AuditSink must show, written once and run by each sink against itself
 * (MemoryAuditSink, JsonlAuditSink, SQLite, PostgreSQL...). Sinks with the shared-chain
 * capability (`appendAndChain`) also get the shared-chain checks: one intact chain whatever
 * the number of writers, and no way to fork it through `write`.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  type AuditHead,
  chainAuditEvents,
  hashEvent,
  verifyAuditLog,
} from "../audit/audit-chain.ts";
import {
  type AuditEvent,
  type AuditSink,
  GENESIS_HASH,
  type UnchainedAuditEvent,
} from "../audit/audit-sink.ts";
import { KmsInternalError } from "../errors.ts";
import { MemoryKeyStore } from "../keystore/memory-key-store.ts";
import { createKms } from "../kms.ts";

/** What `open` hands the suite: a fresh, empty sink and how to dispose of its backing. */
export interface OpenedAuditSink {
  readonly sink: AuditSink;
  /**
   * Opens another sink on the same storage (another connection or handle), as a second
   * process would. Shared-chain sinks should provide it; without it the suite shares `sink`.
   */
  readonly openAnother?: () => Promise<AuditSink>;
  /** Runs after every sink was closed, e.g. to drop a schema or delete a file. */
  readonly cleanup?: () => Promise<void>;
}

const ACCOUNT = "111122223333";

/** A CloudTrail-shaped event with strings that trip up text encodings and JSON handling. */
function sampleEvent(n: number, extra: Record<string, unknown> = {}): UnchainedAuditEvent {
  return {
    eventVersion: "1.08",
    eventID: `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`,
    eventTime: new Date(Date.UTC(2026, 0, 1, 0, 0, 0, n)).toISOString(),
    eventSource: "kms.amazonaws.com",
    eventName: n % 2 === 0 ? "Encrypt" : "DescribeKey",
    awsRegion: "eu-west-1",
    sourceIPAddress: n % 3 === 0 ? null : "10.0.0.7",
    userIdentity: {
      type: "IAMUser",
      principalId: `arn:aws:iam::${ACCOUNT}:user/ünïcødé-🔑`,
      arn: `arn:aws:iam::${ACCOUNT}:user/ünïcødé-🔑`,
      accountId: ACCOUNT,
    },
    requestParameters: {
      keyId: "1234abcd-12ab-34cd-56ef-1234567890ab",
      encryptionContext: {
        quote: 'say "hi" \\ back',
        control: "nul\u0000tab\tline\u2028sep",
        lone: "\ud800",
        ключ: "значение",
      },
      numbers: [0, -1, 0.1, 2 ** 53 - 1, 1e21],
      nested: { deeper: [true, false, null, { empty: {} }] },
    },
    responseElements: null,
    ...(n % 4 === 3
      ? { errorCode: "AccessDeniedException", errorMessage: "not authorized (test)" }
      : {}),
    requestID: `req-${n}`,
    readOnly: n % 2 === 0,
    resources: [
      {
        accountId: ACCOUNT,
        type: "AWS::KMS::Key",
        ARN: `arn:aws:kms:eu-west-1:${ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab`,
      },
    ],
    eventType: "AwsApiCall",
    managementEvent: n % 2 !== 0,
    recipientAccountId: ACCOUNT,
    eventCategory: "Management",
    ...(n % 2 === 0 ? { additionalEventData: { keyVersion: 1 + (n % 3) } } : {}),
    ...extra,
  } as UnchainedAuditEvent;
}

function samples(from: number, count: number): UnchainedAuditEvent[] {
  return Array.from({ length: count }, (_, i) => sampleEvent(from + i));
}

function headOf(events: readonly AuditEvent[]): AuditHead | undefined {
  const last = events[events.length - 1];
  return last === undefined ? undefined : { sequence: last.sequence, hash: last.hash };
}

/**
 * Registers the conformance tests for an AuditSink. `open` must return a fresh, empty sink
 * each time; the suite closes every sink it opened (close must be idempotent), then runs
 * `cleanup`.
 *
 * @example
 * describeAuditSinkConformance("SqliteAuditSink", async () => {
 *   const path = join(await mkdtemp(join(tmpdir(), "audit-")), "audit.db");
 *   return {
 *     sink: new SqliteAuditSink({ path }),
 *     openAnother: async () => new SqliteAuditSink({ path }),
 *   };
 * });
 */
export function describeAuditSinkConformance(
  name: string,
  open: () => Promise<OpenedAuditSink>,
): void {
  describe(`${name} (AuditSink conformance)`, () => {
    const toClose: AuditSink[] = [];
    const cleanups: (() => Promise<void>)[] = [];

    afterEach(async () => {
      for (const sink of toClose.splice(0)) await sink.close();
      for (const cleanup of cleanups.splice(0)) await cleanup();
    });

    async function fresh(): Promise<OpenedAuditSink> {
      const opened = await open();
      toClose.push(opened.sink);
      if (opened.cleanup !== undefined) cleanups.push(opened.cleanup);
      return opened;
    }

    async function another(opened: OpenedAuditSink): Promise<AuditSink> {
      if (opened.openAnother === undefined) return opened.sink;
      const sink = await opened.openAnother();
      toClose.push(sink);
      return sink;
    }

    describe("storage", () => {
      it("an empty sink reads nothing", async () => {
        const { sink } = await fresh();
        expect(await sink.read()).toEqual([]);
        expect(await sink.last()).toBeUndefined();
        if (sink.chainHead !== undefined) expect(await sink.chainHead()).toBeUndefined();
      });

      it("returns written events exactly, in order, across batches", async () => {
        const { sink } = await fresh();
        const first = chainAuditEvents(undefined, samples(0, 3));
        const second = chainAuditEvents(headOf(first), samples(3, 5));
        await sink.write(first);
        await sink.write(second);
        const all = [...first, ...second];
        const read = await sink.read();
        expect(read).toStrictEqual(all);
        expect(verifyAuditLog(read)).toStrictEqual({ ok: true, count: 8, head: headOf(all) });
        expect(await sink.last()).toStrictEqual(all[7]);
      });

      it("write([]) stores nothing", async () => {
        const { sink } = await fresh();
        await sink.write([]);
        expect(await sink.read()).toEqual([]);
      });

      it("read pages by sequence with after and limit", async () => {
        const { sink } = await fresh();
        const events = chainAuditEvents(undefined, samples(0, 6));
        await sink.write(events);
        expect((await sink.read({ after: 1, limit: 2 })).map((e) => e.sequence)).toEqual([2, 3]);
        expect((await sink.read({ after: 3 })).map((e) => e.sequence)).toEqual([4, 5]);
        expect(await sink.read({ after: 5 })).toEqual([]);
        expect((await sink.read({ limit: 1 })).map((e) => e.sequence)).toEqual([0]);
        // A window verifies from where it starts.
        const window = await sink.read({ after: 2 });
        const from = { sequence: 3, prevHash: events[2]!.hash };
        expect(verifyAuditLog(window, { from })).toMatchObject({ ok: true, count: 3 });
      });

      it("a Kms writing to it keeps a trail that verifies", async () => {
        const { sink } = await fresh();
        const kms = await createKms({ audit: sink, store: new MemoryKeyStore() });
        const keyId = (await kms.createKey()).keyMetadata.keyId;
        await kms.encrypt({ keyId, plaintext: new Uint8Array(16) });
        await kms
          .encrypt({ keyId, plaintext: new Uint8Array(1) }, { principal: "svc-not-allowed" })
          .catch(() => undefined);
        const events = await kms.audit.events();
        expect(events.map((e) => e.eventName)).toEqual(["CreateKey", "Encrypt", "Encrypt"]);
        expect(await kms.audit.verify()).toMatchObject({ ok: true, count: 3 });
        expect(await kms.audit.head()).toStrictEqual(headOf(events));
      });

      it("close can be called twice", async () => {
        const { sink } = await fresh();
        await sink.close();
        await sink.close();
      });
    });

    describe("shared chain (when the sink has appendAndChain)", () => {
      /** Opens a sink, or returns undefined (test passes vacuously) for single-writer sinks. */
      async function freshShared(): Promise<
        | { opened: OpenedAuditSink; sink: AuditSink & Required<Pick<AuditSink, "appendAndChain">> }
        | undefined
      > {
        const opened = await fresh();
        const sink = opened.sink;
        if (typeof sink.appendAndChain !== "function") return undefined;
        return { opened, sink: sink as AuditSink & Required<Pick<AuditSink, "appendAndChain">> };
      }

      it("chains from the genesis hash with core's hash and stores what it returns", async () => {
        const shared = await freshShared();
        if (shared === undefined) return;
        const { sink } = shared;
        const input = samples(0, 4);
        const chained = await sink.appendAndChain(input);
        expect(chained.map((e) => e.sequence)).toEqual([0, 1, 2, 3]);
        expect(chained[0]!.prevHash).toBe(GENESIS_HASH);
        for (let i = 0; i < chained.length; i++) {
          const e = chained[i]!;
          expect(hashEvent(e)).toBe(e.hash);
          if (i > 0) expect(e.prevHash).toBe(chained[i - 1]!.hash);
          const { sequence: _s, prevHash: _p, hash: _h, ...rest } = e;
          expect(rest).toStrictEqual(input[i]);
        }
        expect(await sink.read()).toStrictEqual(chained);
        expect(verifyAuditLog(await sink.read())).toMatchObject({ ok: true, count: 4 });
        if (sink.chainHead !== undefined)
          expect(await sink.chainHead()).toStrictEqual(headOf(chained));
        expect(await sink.appendAndChain([])).toEqual([]);
        expect(await sink.read()).toHaveLength(4);
      });

      it("write accepts only events that extend the head; appendAndChain continues after it", async () => {
        const shared = await freshShared();
        if (shared === undefined) return;
        const { sink } = shared;
        const chained = await sink.appendAndChain(samples(0, 2));
        // Same sequence again (a second writer that forked the chain).
        await expect(sink.write([chained[1]!])).rejects.toBeInstanceOf(KmsInternalError);
        // Next sequence but chained from a stale head.
        const stale = chainAuditEvents(headOf(chained.slice(0, 1)), samples(2, 2));
        await expect(sink.write(stale)).rejects.toBeInstanceOf(KmsInternalError);
        // A gap.
        const gap = chainAuditEvents({ sequence: 5, hash: chained[1]!.hash }, samples(2, 1));
        await expect(sink.write(gap)).rejects.toBeInstanceOf(KmsInternalError);
        expect(await sink.read()).toStrictEqual(chained);
        const next = chainAuditEvents(headOf(chained), samples(2, 2));
        await sink.write(next);
        const after = await sink.appendAndChain(samples(4, 1));
        expect(after[0]!.sequence).toBe(4);
        expect(after[0]!.prevHash).toBe(next[1]!.hash);
        expect(verifyAuditLog(await sink.read())).toMatchObject({ ok: true, count: 5 });
      });

      it("a batch with an event that cannot be stored is refused whole; the chain goes on", async () => {
        const shared = await freshShared();
        if (shared === undefined) return;
        const { sink } = shared;
        await sink.appendAndChain(samples(0, 1));
        const bad = sampleEvent(2, { requestParameters: { size: 10n } });
        await expect(sink.appendAndChain([sampleEvent(1), bad, sampleEvent(3)])).rejects.toThrow();
        expect(await sink.read()).toHaveLength(1);
        const more = await sink.appendAndChain(samples(4, 2));
        expect(more.map((e) => e.sequence)).toEqual([1, 2]);
        expect(verifyAuditLog(await sink.read())).toMatchObject({ ok: true, count: 3 });
      });

      it("concurrent appends from two connections form one contiguous chain", async () => {
        const shared = await freshShared();
        if (shared === undefined) return;
        const writers = [shared.sink, await another(shared.opened)];
        const results = await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            writers[i % writers.length]!.appendAndChain!(samples(i * 10, 1 + (i % 3))),
          ),
        );
        const total = results.reduce((sum, r) => sum + r.length, 0);
        const read = await writers[1]!.read();
        expect(verifyAuditLog(read)).toMatchObject({ ok: true, count: total });
        expect(read.map((e) => e.sequence)).toEqual(Array.from({ length: total }, (_, i) => i));
        // Every acknowledged event is stored as returned, its batch kept together in order.
        for (const batch of results) {
          for (let i = 0; i < batch.length; i++) {
            expect(read[batch[i]!.sequence]).toStrictEqual(batch[i]);
            if (i > 0) expect(batch[i]!.sequence).toBe(batch[i - 1]!.sequence + 1);
          }
        }
      });

      it("several Kms instances on the storage share one intact chain and key usage", async () => {
        const shared = await freshShared();
        if (shared === undefined) return;
        const store = new MemoryKeyStore();
        const rootKey = new Uint8Array(32).fill(9);
        const a = await createKms({ store, rootKey, audit: shared.sink });
        const b = await createKms({ store, rootKey, audit: await another(shared.opened) });
        const keyId = (await a.createKey()).keyMetadata.keyId;
        const plaintext = new Uint8Array(32);
        await Promise.all([
          ...Array.from({ length: 20 }, () => a.encrypt({ keyId, plaintext })),
          ...Array.from({ length: 20 }, () => b.encrypt({ keyId, plaintext })),
          ...Array.from({ length: 10 }, () => b.generateRandom({ numberOfBytes: 8 })),
        ]);
        const events = await a.audit.events();
        expect(events).toHaveLength(51);
        expect(await a.audit.verify()).toMatchObject({ ok: true, count: 51 });
        expect(await b.audit.verify()).toMatchObject({ ok: true, count: 51 });
        expect(await a.audit.head()).toStrictEqual(headOf(events));
        // Usage recorded by the other instance counts.
        await a.getKeyLastUsage({ keyId });
        await b.generateRandom({ numberOfBytes: 8 });
        const { ciphertextBlob } = await b.encrypt({ keyId, plaintext });
        await b.decrypt({ ciphertextBlob });
        const usage = (await a.getKeyLastUsage({ keyId })).keyLastUsage;
        const decrypted = (await b.audit.events()).filter((e) => e.eventName === "Decrypt");
        expect(usage).toMatchObject({
          operation: "Decrypt",
          cloudTrailEventId: decrypted[0]?.eventID,
          kmsRequestId: decrypted[0]?.requestID,
        });
      });
    });
  });
}
