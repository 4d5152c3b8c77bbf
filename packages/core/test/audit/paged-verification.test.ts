/**
 * `kms.audit.verify()` reads the trail a page at a time (audit-trail-verification.ts). What it
 * must keep: the verdict verifyAuditLog gives on the whole trail read at once (`read()`), for any
 * trail, whatever the page size; reads that are bounded by the page size; and, on a sink that
 * selects `read({ after })` by a key column (SqliteAuditSink, PostgresAuditSink), the same
 * verdict when rows were re-keyed apart from their events.
 *
 * The oracle is the old verification: `read()`, then verifyAuditLog from sequence 0 (from the
 * first event on a sink that keepsWindow) against the head. A trail holding a row the sink
 * cannot parse failed that read as a whole; paged, it is reached only if the chain holds up to
 * it, and the oracle is then the first break of the events before it, else `malformed` there.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type AuditEvent,
  type AuditHead,
  type AuditLogVerification,
  type AuditReadOptions,
  type AuditSink,
  chainAuditEvents,
  createKms,
  JsonlAuditSink,
  KmsInternalError,
  MemoryAuditSink,
  parseStoredAuditEvent,
  type UnchainedAuditEvent,
  ValidationError,
  verifyAuditLog,
} from "@kms/core";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import {
  type AuditTrailVerification,
  type AuditTrailVerifyOptions,
  verifyAuditTrail,
} from "../../src/audit/audit-trail-verification.ts";

function unchained(i: number): UnchainedAuditEvent {
  return {
    eventVersion: "1.08",
    eventID: `event-${i}`,
    eventTime: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
    eventSource: "kms.amazonaws.com",
    eventName: i % 3 === 0 ? "Encrypt" : "Decrypt",
    awsRegion: "us-east-1",
    sourceIPAddress: "192.0.2.1",
    userIdentity: {
      type: "IAMUser",
      principalId: "AIDA",
      arn: "arn:aws:iam::111122223333:user/alice",
      accountId: "111122223333",
    },
    requestParameters: { keyId: `key-${i % 4}` },
    responseElements: null,
    requestID: `request-${i}`,
    readOnly: false,
    resources: [],
    eventType: "AwsApiCall",
    managementEvent: true,
    recipientAccountId: "111122223333",
    eventCategory: "Management",
  };
}

function chain(length: number, from?: AuditHead): AuditEvent[] {
  const start = (from?.sequence ?? -1) + 1;
  return chainAuditEvents(
    from,
    Array.from({ length }, (_, i) => unchained(start + i)),
  );
}

const headOf = (event: AuditEvent): AuditHead => ({ sequence: event.sequence, hash: event.hash });

/** A stored row: its key (a database's sequence column) and the text stored for the event. */
interface Row {
  readonly key: number;
  readonly text: string;
}

/**
 * A sink as SqliteAuditSink and PostgresAuditSink are: rows keyed by a sequence column, `read`
 * selecting and ordering by that column and parsing each row as they do. Records every read.
 */
class KeyedSink implements AuditSink {
  readonly description = "keyed";
  readonly reads: (AuditReadOptions | undefined)[] = [];
  readonly #rows: readonly Row[];
  readonly keepsWindow: boolean;

  constructor(rows: readonly Row[], keepsWindow = false) {
    this.#rows = [...rows].sort((a, b) => a.key - b.key);
    this.keepsWindow = keepsWindow;
  }

  async write(): Promise<void> {
    throw new Error("read only");
  }

  async read(options?: AuditReadOptions): Promise<readonly AuditEvent[]> {
    this.reads.push(options);
    const after = options?.after ?? -1;
    return this.#rows
      .filter((r) => r.key > after)
      .slice(0, options?.limit ?? Number.POSITIVE_INFINITY)
      .map((r) => parseStoredAuditEvent(r.text, this.description));
  }

  async last(): Promise<AuditEvent | undefined> {
    const row = this.#rows.at(-1);
    return row === undefined ? undefined : parseStoredAuditEvent(row.text, this.description);
  }

  async close(): Promise<void> {}
}

/** JsonlAuditSink's refusals, for the oracle: what its `read()` fails on. */
function parseJsonlLine(text: string): unknown {
  const event: unknown = JSON.parse(text);
  if (typeof event !== "object" || event === null || Array.isArray(event)) {
    throw new SyntaxError("not a JSON object");
  }
  if (JSON.stringify(event) !== text) throw new SyntaxError("not the text the sink writes");
  return event;
}

const parseKeyedRow = (text: string): unknown => parseStoredAuditEvent(text, "keyed");

/**
 * What the old whole-trail verification answered, and what the paged one must (see above);
 * `rejects`: the chain holds up to a row the sink cannot parse, which rejects unless
 * `unreadable: "malformed"`.
 */
function oracle(
  texts: readonly string[],
  parse: (text: string) => unknown,
  head: AuditHead | undefined,
  keepsWindow: boolean,
): {
  readonly verdict: AuditTrailVerification;
  readonly unreadable: boolean;
  readonly rejects: boolean;
} {
  const events: unknown[] = [];
  let unreadable = false;
  for (const text of texts) {
    try {
      events.push(parse(text));
    } catch {
      unreadable = true;
      break;
    }
  }
  const first = events[0] as Partial<AuditEvent> | null | undefined;
  const from =
    keepsWindow && typeof first === "object" && first !== null
      ? { from: { sequence: first.sequence as number, prevHash: first.prevHash as string } }
      : {};
  let verdict: AuditLogVerification;
  let rejects = false;
  if (unreadable) {
    const prefix = verifyAuditLog(events, from);
    rejects = prefix.ok;
    verdict = prefix.ok
      ? {
          ok: false,
          index: events.length,
          problem: "malformed",
          // The sink's own words follow; the test of each sink pins them.
          message: expect.stringMatching(
            new RegExp(
              `^event ${events.length} is not an audit event: the sink cannot parse its stored text \\(.+\\)$`,
            ),
          ) as string,
        }
      : prefix;
  } else {
    verdict = verifyAuditLog(events, {
      ...from,
      ...(head === undefined ? {} : { expectedHead: head }),
    });
  }
  if (verdict.ok) return { verdict, unreadable, rejects };
  const claimed = (events[verdict.index] as Partial<AuditEvent> | null | undefined)?.sequence;
  return {
    verdict: Number.isSafeInteger(claimed) ? { ...verdict, sequence: claimed as number } : verdict,
    unreadable,
    rejects,
  };
}

type Mutation =
  | {
      readonly kind: "edit";
      readonly at: number;
      readonly how: "field" | "sequence" | "unsequence";
    }
  | { readonly kind: "delete"; readonly at: number }
  | { readonly kind: "swap"; readonly at: number; readonly with: number }
  | { readonly kind: "copy"; readonly at: number; readonly to: number }
  | { readonly kind: "forge"; readonly at: number; readonly moveHead: boolean }
  | { readonly kind: "rekey"; readonly at: number; readonly by: number }
  | { readonly kind: "junk"; readonly at: number; readonly junk: number; readonly insert: boolean }
  | { readonly kind: "truncate"; readonly keep: number; readonly moveHead: boolean }
  | { readonly kind: "dropFront"; readonly count: number }
  | { readonly kind: "head"; readonly change: "hash" | "beyond" | "earlier" | "none" };

const JUNK = [
  "SECRET-GARBAGE",
  "null",
  "{}",
  '{"note":"approved by security"}',
  "[1]",
  '{"sequence":3}',
  "7",
  "duplicate-member",
];

const at = fc.nat({ max: 64 });
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({
    kind: fc.constant("edit" as const),
    at,
    how: fc.constantFrom("field" as const, "sequence" as const, "unsequence" as const),
  }),
  fc.record({ kind: fc.constant("delete" as const), at }),
  fc.record({ kind: fc.constant("swap" as const), at, with: at }),
  fc.record({ kind: fc.constant("copy" as const), at, to: at }),
  fc.record({ kind: fc.constant("forge" as const), at, moveHead: fc.boolean() }),
  fc.record({ kind: fc.constant("rekey" as const), at, by: fc.integer({ min: 1, max: 3 }) }),
  fc.record({
    kind: fc.constant("junk" as const),
    at,
    junk: fc.nat({ max: JUNK.length - 1 }),
    insert: fc.boolean(),
  }),
  fc.record({ kind: fc.constant("truncate" as const), keep: at, moveHead: fc.boolean() }),
  fc.record({ kind: fc.constant("dropFront" as const), count: fc.integer({ min: 1, max: 4 }) }),
  fc.record({
    kind: fc.constant("head" as const),
    change: fc.constantFrom(
      "hash" as const,
      "beyond" as const,
      "earlier" as const,
      "none" as const,
    ),
  }),
);

interface Trail {
  readonly rows: Row[];
  head: AuditHead | undefined;
}

function event(row: Row | undefined): AuditEvent | undefined {
  if (row === undefined) return undefined;
  try {
    const parsed = JSON.parse(row.text) as Partial<AuditEvent> | null;
    return typeof parsed === "object" &&
      parsed !== null &&
      typeof parsed.sequence === "number" &&
      typeof parsed.hash === "string"
      ? (parsed as AuditEvent)
      : undefined;
  } catch {
    return undefined;
  }
}

/** Inserts at position `to`, with the next free key (the rows after it re-keyed if none is). */
function insertRow(rows: Row[], to: number, text: string): void {
  const key = (rows[to - 1]?.key ?? -1) + 1;
  const next = rows[to];
  if (next !== undefined && next.key <= key) {
    const by = key - next.key + 1;
    for (let i = to; i < rows.length; i++) rows[i] = { ...rows[i]!, key: rows[i]!.key + by };
  }
  rows.splice(to, 0, { key, text });
}

function mutate(trail: Trail, m: Mutation): void {
  const { rows } = trail;
  const n = rows.length;
  const pick = (i: number) => (n === 0 ? 0 : i % n);
  switch (m.kind) {
    case "edit": {
      const i = pick(m.at);
      const e = event(rows[i]);
      if (e === undefined) return;
      const edited: Record<string, unknown> = { ...e };
      if (m.how === "field") edited.sourceIPAddress = "203.0.113.9";
      else if (m.how === "sequence") edited.sequence = Math.max(0, e.sequence - 2);
      else delete edited.sequence;
      rows[i] = { ...rows[i]!, text: JSON.stringify(edited) };
      return;
    }
    case "delete":
      if (n > 0) rows.splice(pick(m.at), 1);
      return;
    case "swap": {
      if (n === 0) return;
      const i = pick(m.at);
      const j = pick(m.with);
      const text = rows[i]!.text;
      rows[i] = { ...rows[i]!, text: rows[j]!.text };
      rows[j] = { ...rows[j]!, text };
      return;
    }
    case "copy":
      if (n > 0) insertRow(rows, m.to % (n + 1), rows[pick(m.at)]!.text);
      return;
    case "forge": {
      // Everything from row i on chained anew onto the row before it, as a forger would.
      const i = pick(m.at);
      const base = i === 0 ? undefined : event(rows[i - 1]);
      if (i > 0 && base === undefined) return;
      const rest = rows.slice(i).map(event);
      if (rest.some((e) => e === undefined)) return;
      const forged = chainAuditEvents(
        base === undefined ? undefined : headOf(base),
        rest.map((e) => {
          const { sequence: _s, prevHash: _p, hash: _h, ...body } = e!;
          return { ...body, sourceIPAddress: "198.51.100.7" };
        }),
      );
      forged.forEach((e, k) => {
        rows[i + k] = { ...rows[i + k]!, text: JSON.stringify(e) };
      });
      const last = forged.at(-1);
      if (m.moveHead && last !== undefined) trail.head = headOf(last);
      return;
    }
    case "rekey": {
      // The key column changed apart from the events (UPDATE … SET sequence = sequence + by).
      for (let i = pick(m.at); i < n; i++) rows[i] = { ...rows[i]!, key: rows[i]!.key + m.by };
      return;
    }
    case "junk": {
      const i = pick(m.at);
      let text = JUNK[m.junk]!;
      if (text === "duplicate-member") {
        const source = rows[i]?.text ?? JSON.stringify(chain(1)[0]);
        text = source.replace('"eventName":', '"eventName":"Decrypt","eventName":');
      }
      if (m.insert || n === 0) insertRow(rows, n === 0 ? 0 : i, text);
      else rows[i] = { ...rows[i]!, text };
      return;
    }
    case "truncate": {
      rows.splice(n === 0 ? 0 : m.keep % n);
      const last = event(rows.at(-1));
      if (m.moveHead) trail.head = last === undefined ? undefined : headOf(last);
      return;
    }
    case "dropFront":
      rows.splice(0, m.count);
      return;
    case "head": {
      const head = trail.head;
      if (m.change === "none") trail.head = undefined;
      else if (head === undefined) return;
      else if (m.change === "hash") trail.head = { ...head, hash: "ab".repeat(32) };
      else if (m.change === "beyond") trail.head = { ...head, sequence: head.sequence + 2 };
      else trail.head = { sequence: Math.max(0, head.sequence - 3), hash: head.hash };
      return;
    }
  }
}

const trailArb = fc.record({
  length: fc.nat({ max: 24 }),
  pageSize: fc.integer({ min: 2, max: 6 }),
  mutations: fc.array(mutationArb, { maxLength: 3 }),
});

function tampered(length: number, mutations: readonly Mutation[]): Trail {
  const events = chain(length);
  const last = events.at(-1);
  const trail: Trail = {
    rows: events.map((e) => ({ key: e.sequence, text: JSON.stringify(e) })),
    head: last === undefined ? undefined : headOf(last),
  };
  for (const m of mutations) mutate(trail, m);
  return trail;
}

/** The paged verdict, or the sink's refusal of an unparsable row as `{ rejected }`. */
async function paged(
  sink: AuditSink,
  head: AuditHead | undefined,
  options: AuditTrailVerifyOptions,
): Promise<AuditTrailVerification | { readonly rejected: true }> {
  try {
    return await verifyAuditTrail(sink, head, options);
  } catch (error) {
    expect(error).toBeInstanceOf(KmsInternalError);
    return { rejected: true };
  }
}

function expectOracle(
  expected: ReturnType<typeof oracle>,
  malformed: AuditTrailVerification | { readonly rejected: true },
  rejecting: AuditTrailVerification | { readonly rejected: true },
): void {
  expect(malformed).toStrictEqual(expected.verdict);
  expect(rejecting).toStrictEqual(expected.rejects ? { rejected: true } : expected.verdict);
}

describe("paged verification gives the whole-trail verdict on any trail", () => {
  test("a keyed sink (a database's sequence column), any page size, rows re-keyed too", async () => {
    await fc.assert(
      fc.asyncProperty(trailArb, fc.boolean(), async ({ length, pageSize, mutations }, window) => {
        const trail = tampered(length, mutations);
        const sorted = [...trail.rows].sort((a, b) => a.key - b.key);
        // How far keys run ahead of the sequences the chain gives the rows: a page or more
        // is the documented limit (below).
        const first = event(sorted[0]);
        const start = window && first !== undefined ? first.sequence : 0;
        const ahead = Math.max(0, ...sorted.map((r, i) => r.key - (start + i)));
        fc.pre(ahead < pageSize);
        const expected = oracle(
          sorted.map((r) => r.text),
          parseKeyedRow,
          trail.head,
          window,
        );
        const sink = new KeyedSink(trail.rows, window);
        if (!expected.unreadable) {
          // The oracle's events are what read() returns.
          expect(verifyAuditLog(await sink.read())).toStrictEqual(
            verifyAuditLog(sorted.map((r) => parseKeyedRow(r.text))),
          );
        }
        sink.reads.length = 0;
        const malformed = await paged(sink, trail.head, { pageSize, unreadable: "malformed" });
        const rejecting = await paged(sink, trail.head, { pageSize });
        expectOracle(expected, malformed, rejecting);
        // A window is read whole: it is bounded by design, and its first event may claim any
        // sequence, which read({ after }) cannot follow.
        for (const options of window ? [] : sink.reads) {
          expect(options?.limit).toBeGreaterThanOrEqual(1);
          expect(options?.limit).toBeLessThanOrEqual(pageSize);
        }
      }),
      { numRuns: 1500 },
    );
  });

  describe("JSONL (readPages: lines without a sequence, or with one changed, are not skipped)", () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "kms-paged-verify-"));
    });
    afterAll(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    test("any tampering, any page size", async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(trailArb, async ({ length, pageSize, mutations }) => {
          const trail = tampered(length, mutations);
          const texts = trail.rows.map((r) => r.text);
          const path = join(dir, `trail-${run++}.jsonl`);
          await writeFile(path, texts.map((t) => `${t}\n`).join(""));
          const sink = new JsonlAuditSink(path);
          const expected = oracle(texts, parseJsonlLine, trail.head, false);
          if (!expected.unreadable) {
            expect(verifyAuditLog(await sink.read())).toStrictEqual(
              verifyAuditLog(texts.map(parseJsonlLine)),
            );
          }
          const read = sink.read.bind(sink);
          let reads = 0;
          sink.read = (options) => {
            reads++;
            return read(options);
          };
          const malformed = await paged(sink, trail.head, { pageSize, unreadable: "malformed" });
          const rejecting = await paged(sink, trail.head, { pageSize });
          expectOracle(expected, malformed, rejecting);
          // One pass over the file per verification, never a read per page.
          expect(reads).toBe(0);
        }),
        { numRuns: 300 },
      );
    });
  });

  test("a trail whose keys ran ahead of its sequences by a page or more is reported broken, never passed", async () => {
    // Rows 3… re-keyed by 4 with pages of 3: the page after event 2 repeats rows already checked,
    // past what one page shows. Read whole, the chain holds.
    const events = chain(9);
    const rows = events.map((e) => ({
      key: e.sequence < 3 ? e.sequence : e.sequence + 4,
      text: JSON.stringify(e),
    }));
    const head = headOf(events.at(-1)!);
    const sink = new KeyedSink(rows);
    expect(verifyAuditLog(await sink.read(), { expectedHead: head })).toMatchObject({ ok: true });
    // Within a page, the repeated rows are recognized and skipped.
    expect(await verifyAuditTrail(sink, head, { pageSize: 6 })).toMatchObject({
      ok: true,
      count: 9,
    });
    expect(await verifyAuditTrail(sink, head, { pageSize: 3 })).toMatchObject({
      ok: false,
      problem: "deleted-or-reordered",
    });
  });
});

test("a window without readPages whose first event claims a later sequence is not followed by read({ after })", async () => {
  // Read after event 5 by key, the rows keyed 2 to 5 would be skipped and the chain would hold.
  const events = chain(9);
  const order = [4, 5, 2, 3, 0, 1, 6, 7, 8];
  const rows = order.map((n, key) => ({ key, text: JSON.stringify(events[n]) }));
  const sink = new KeyedSink(rows, true);
  const whole = verifyAuditLog(await sink.read(), {
    from: { sequence: 4, prevHash: events[3]!.hash },
  });
  expect(whole).toMatchObject({ ok: false, index: 2, problem: "deleted-or-reordered" });
  expect(await verifyAuditTrail(sink, headOf(events[8]!), { pageSize: 2 })).toStrictEqual({
    ...whole,
    sequence: 2,
  });
});

describe("verifyAuditLog firstIndex", () => {
  test("parts verified from where the one before ended are reported as the whole trail is", () => {
    const events = chain(10);
    const edited = events.map((e, i) => (i === 7 ? { ...e, sourceIPAddress: "203.0.113.9" } : e));
    const whole = verifyAuditLog(edited);
    expect(whole).toStrictEqual({
      ok: false,
      index: 7,
      problem: "edited",
      message: "event 7 was modified: its hash does not match its content",
    });
    const fifth = events[4]!;
    expect(
      verifyAuditLog(edited.slice(5), {
        from: { sequence: 5, prevHash: fifth.hash },
        firstIndex: 5,
      }),
    ).toStrictEqual(whole);
    // Without it, the index is within the given part, as before.
    expect(
      verifyAuditLog(edited.slice(5), { from: { sequence: 5, prevHash: fifth.hash } }),
    ).toMatchObject({
      index: 2,
      message: "event 2 was modified: its hash does not match its content",
    });
    const head = headOf(events[9]!);
    expect(
      verifyAuditLog(events.slice(5, 8), {
        from: { sequence: 5, prevHash: fifth.hash },
        firstIndex: 5,
        expectedHead: head,
      }),
    ).toStrictEqual(verifyAuditLog(events.slice(0, 8), { expectedHead: head }));
  });

  test.each([["5"], [-1], [2.5], [Number.NaN]])(
    "refuses firstIndex %j (not an integer from 0)",
    (firstIndex) => {
      const edited = chain(3).map((e, i) =>
        i === 0 ? { ...e, sourceIPAddress: "203.0.113.9" } : e,
      );
      expect(() => verifyAuditLog(edited, { firstIndex: firstIndex as number })).toThrow(
        ValidationError,
      );
    },
  );
});

describe("kms.audit.verify()", () => {
  /** A Kms on `sink` whose trail already holds `length` events (the Kms continues it). */
  async function kmsOn(sink: AuditSink, length: number) {
    await sink.write(chain(length));
    return createKms({ audit: sink });
  }

  /** A sink with only `read` (no readPages), over a MemoryAuditSink, recording each read. */
  function readOnlyWrapper(inner: MemoryAuditSink) {
    const reads: (AuditReadOptions | undefined)[] = [];
    const sink: AuditSink = {
      description: "wrapped",
      write: (events) => inner.write(events),
      read: (options) => {
        reads.push(options);
        return inner.read(options);
      },
      last: () => inner.last(),
      chainHead: () => inner.chainHead(),
      close: () => inner.close(),
    };
    return { sink, reads };
  }

  test("reads a long trail 1000 events at a time, never whole (regression: read())", async () => {
    const inner = new MemoryAuditSink();
    const { sink, reads } = readOnlyWrapper(inner);
    const kms = await kmsOn(sink, 2500);
    await kms.generateRandom({ numberOfBytes: 8 });
    reads.length = 0;
    const verdict = await kms.audit.verify();
    expect(verdict).toStrictEqual(
      verifyAuditLog(await inner.read(), { expectedHead: (await kms.audit.head())! }),
    );
    expect(verdict).toMatchObject({ ok: true, count: 2501 });
    expect(reads.length).toBeGreaterThanOrEqual(3);
    for (const options of reads) {
      expect(options?.limit).toBeGreaterThanOrEqual(1);
      expect(options?.limit).toBeLessThanOrEqual(1000);
    }
  });

  test("a sink with readPages is read through it, in pages of the size asked", async () => {
    const sink = new MemoryAuditSink();
    const kms = await kmsOn(sink, 20);
    const sizes: number[] = [];
    const readPages = sink.readPages.bind(sink);
    sink.readPages = async function* (pageSize) {
      for await (const page of readPages(pageSize)) {
        sizes.push(page.length);
        yield page;
      }
    };
    sink.read = () => Promise.reject(new Error("read() must not be used"));
    expect(await kms.audit.verify({ pageSize: 6 })).toMatchObject({ ok: true, count: 20 });
    expect(sizes).toStrictEqual([6, 6, 6, 2]);
  });

  test("memory sink: an event changed in place is reported as read() reports it, not by what read({ after }) leaves out", async () => {
    const sink = new MemoryAuditSink();
    const events = chain(10);
    await sink.write(events);
    const kms = await createKms({ audit: sink });
    // The sink keeps the objects it was given: event 4 now claims an earlier sequence, which a
    // read after event 3 would not return.
    (events[4] as { sequence: number }).sequence = 1;
    const whole = verifyAuditLog(await sink.read(), { expectedHead: (await kms.audit.head())! });
    expect(whole).toMatchObject({ ok: false, index: 4, problem: "edited" });
    expect(await kms.audit.verify({ pageSize: 4 })).toStrictEqual({ ...whole, sequence: 1 });
  });

  test("a capped memory sink is verified from the first event it holds, page by page", async () => {
    const sink = new MemoryAuditSink({ maxEvents: 10 });
    const kms = await kmsOn(sink, 25);
    const held = await sink.read();
    expect(held[0]?.sequence).toBe(15);
    expect(await kms.audit.verify({ pageSize: 3 })).toStrictEqual({
      ok: true,
      count: 10,
      head: headOf(held.at(-1)!),
    });
  });

  test("pinnedHead: the event with that hash, where it is; none when no event of the chain has it", async () => {
    const sink = new MemoryAuditSink();
    const kms = await kmsOn(sink, 12);
    const events = await sink.read();
    const pinned = headOf(events[7]!);
    expect(await kms.audit.verify({ pinnedHead: pinned.hash, pageSize: 5 })).toStrictEqual({
      ok: true,
      count: 12,
      head: headOf(events[11]!),
      pinned,
    });
    expect(await kms.audit.verify({ pinnedHead: "ab".repeat(32), pageSize: 5 })).toStrictEqual({
      ok: true,
      count: 12,
      head: headOf(events[11]!),
    });
  });

  test("unreadable: a line that is not JSON, as the break where it is, or the rejection", async () => {
    const dir = await mkdtemp(join(tmpdir(), "kms-paged-unreadable-"));
    try {
      const path = join(dir, "audit.jsonl");
      const lines = chain(8).map((e) => JSON.stringify(e));
      lines.splice(5, 0, "SECRET-GARBAGE");
      await writeFile(path, `${lines.join("\n")}\n`);
      const kms = await createKms({ audit: new JsonlAuditSink(path) });
      expect(await kms.audit.verify({ unreadable: "malformed", pageSize: 2 })).toStrictEqual({
        ok: false,
        index: 5,
        problem: "malformed",
        message: `event 5 is not an audit event: the sink cannot parse its stored text (audit sink jsonl:${path}: line 6 is not JSON)`,
      });
      await expect(kms.audit.verify({ pageSize: 2 })).rejects.toThrow(/line 6 is not JSON/);
      // A line that is JSON but no event: the verdict says what the sink found, not "not JSON".
      lines[5] = "[]";
      await writeFile(path, `${lines.join("\n")}\n`);
      expect(await kms.audit.verify({ unreadable: "malformed", pageSize: 2 })).toMatchObject({
        index: 5,
        message: `event 5 is not an audit event: the sink cannot parse its stored text (audit sink jsonl:${path}: line 6 is not an audit event)`,
      });
      await kms.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("unreadable: a sink's bare SyntaxError is named, never quoted (V8 quotes the text)", async () => {
    const sink: AuditSink = {
      description: "bare",
      write: async () => {},
      read: async () => JSON.parse("SECRET-GARBAGE"),
      last: async () => undefined,
      close: async () => {},
    };
    expect(await verifyAuditTrail(sink, undefined, { unreadable: "malformed" })).toStrictEqual({
      ok: false,
      index: 0,
      problem: "malformed",
      message: "event 0 is not an audit event: the sink cannot parse its stored text (SyntaxError)",
    });
  });

  test.each([
    [{ pageSize: 1 }, /"pageSize" must be between 2 and 1000000, got 1/],
    [{ pageSize: 2.5 }, /"pageSize" expected an integer/],
    [{ unreadable: "skip" }, /"unreadable" must be one of reject, malformed/],
    [
      { pinnedHead: "AB".repeat(32) },
      /"pinnedHead" expected an event hash \(64 lower-case hex digits\)/,
    ],
    [{ pinnedHead: 42 }, /"pinnedHead" expected an event hash/],
    [null, /"options" expected an object/],
  ])("options %j are a ValidationError", async (options, message) => {
    const kms = await createKms();
    const failure = await kms.audit
      .verify(options as unknown as AuditTrailVerifyOptions)
      .catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ValidationError);
    expect((failure as Error).message).toMatch(message);
  });
});
