import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import {
  type AuditEvent,
  type AuditHead,
  chainAuditEvents,
  type UnchainedAuditEvent,
  verifyAuditLog,
} from "@kms/core";
import { SqliteAuditSink } from "@kms/keystore-sqlite";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { EXIT_AUDIT_BROKEN } from "../src/index.ts";
import { initializedWorkspace, type RunResult, run, type workspace } from "./helpers.ts";

let ws: ReturnType<typeof workspace>;
beforeEach(async () => {
  ws = await initializedWorkspace();
});
afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  ws.dispose();
});

function kms(argv: readonly string[]): Promise<RunResult> {
  return run(argv, { cwd: ws.dir, env: ws.env });
}

/** The SQLite key store's audit table (`kms_audit_events`), read or edited with the raw driver. */
function withDatabase<T>(use: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(join(ws.dir, ".kms", "kms.db"));
  try {
    return use(db);
  } finally {
    db.close();
  }
}

function storedEvents(): AuditEvent[] {
  return withDatabase((db) =>
    (
      db.prepare("SELECT event FROM kms_audit_events ORDER BY sequence").all() as {
        event: string;
      }[]
    ).map((row) => JSON.parse(row.event) as AuditEvent),
  );
}

function lines(result: RunResult): AuditEvent[] {
  expect(result.out.endsWith("\n") || result.out === "").toBe(true);
  return result.out
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as AuditEvent);
}

interface Key {
  readonly keyId: string;
  readonly arn: string;
}

/** Two keys, an alias for the first, and a file encrypted under it and decrypted again. */
async function populate(): Promise<{ a: Key; b: Key }> {
  const a = JSON.parse((await kms(["create-key", "--description", "a"])).out) as Key;
  const b = JSON.parse((await kms(["create-key", "--description", "b"])).out) as Key;
  expect((await kms(["create-alias", "alias/a", a.keyId])).code).toBe(0);
  writeFileSync(join(ws.dir, "plain.txt"), "SECRET-PLAINTEXT-42");
  const encrypted = await kms(["encrypt", "--key", "alias/a", "--in", "plain.txt", "--out", "c"]);
  expect(encrypted.code).toBe(0);
  expect((await kms(["decrypt", "--in", "c", "--out", "back.txt"])).code).toBe(0);
  return { a, b };
}

describe("kms audit list", () => {
  it("prints every event as one JSON line, exactly as stored, and records nothing itself", async () => {
    await populate();
    const stored = storedEvents();
    const listed = await kms(["audit", "list"]);
    expect(listed.code).toBe(0);
    expect(listed.err).toBe("");
    expect(listed.out.split("\n")).toHaveLength(stored.length + 1);
    expect(lines(listed)).toStrictEqual(stored);
    expect(listed.out).not.toContain("SECRET-PLAINTEXT-42");
    // Reading the trail is not a KMS call: the trail is unchanged.
    expect(storedEvents()).toStrictEqual(stored);
  });

  it("--key keeps the events naming the key's ARN; an alias is resolved first", async () => {
    const { a, b } = await populate();
    const expected = storedEvents().filter((e) => e.resources.some((r) => r.ARN === a.arn));
    // `kms encrypt` asks for a data key, `kms decrypt` has it decrypted.
    const uses = ["CreateAlias", "GenerateDataKey", "Decrypt"];
    expect(expected.map((e) => e.eventName)).toStrictEqual(uses);
    const forA = await kms(["audit", "list", "--key", "alias/a"]);
    expect(forA.code).toBe(0);
    expect(lines(forA)).toStrictEqual(expected);

    // The alias lookup was a DescribeKey of its own, recorded after the listing it served; a
    // key id or ARN is matched without one.
    const again = lines(await kms(["audit", "list", "--key", a.arn]));
    expect(again.map((e) => e.eventName)).toStrictEqual([...uses, "DescribeKey"]);
    expect(lines(await kms(["audit", "list", "--key", a.keyId]))).toStrictEqual(again);

    const forB = lines(await kms(["audit", "list", "--key", b.keyId]));
    expect(forB).toStrictEqual([]);
  });

  it("--since keeps events at or after the time, with its zone", async () => {
    // Only Date is faked: the clock each event's eventTime comes from.
    vi.useFakeTimers({ toFake: ["Date"] });
    for (const time of ["2026-03-01T09:00:00Z", "2026-03-01T10:00:00Z", "2026-03-02T10:00:00Z"]) {
      vi.setSystemTime(new Date(time));
      expect((await kms(["create-key", "--description", time])).code).toBe(0);
    }
    vi.useRealTimers();
    const stored = storedEvents();
    expect(stored.map((e) => e.eventTime)).toStrictEqual([
      "2026-03-01T09:00:00.000Z",
      "2026-03-01T10:00:00.000Z",
      "2026-03-02T10:00:00.000Z",
    ]);
    const since = async (time: string) => lines(await kms(["audit", "list", "--since", time]));
    expect(await since("2026-03-01T10:00:00Z")).toStrictEqual(stored.slice(1));
    expect(await since("2026-03-01T10:00:00.001Z")).toStrictEqual(stored.slice(2));
    expect(await since("2026-03-01T12:00:00+02:00")).toStrictEqual(stored.slice(1));
    expect(await since("2026-03-01T11:00:00+02:00")).toStrictEqual(stored);
    expect(await since("2026-03-02")).toStrictEqual(stored.slice(2));
    expect(await since("2026-03-03")).toStrictEqual([]);
  });

  it("pages with --limit and --after, saying on stderr where to continue", async () => {
    await populate();
    const stored = storedEvents();
    expect(stored.length).toBeGreaterThan(4);
    const first = await kms(["audit", "list", "--limit", "2"]);
    expect(first.code).toBe(0);
    const page = lines(first);
    expect(page).toStrictEqual(stored.slice(0, 2));
    expect(first.err).toBe(
      "kms: more events follow; continue with --after 1 (the last line's sequence)\n",
    );
    const rest = await kms(["audit", "list", "--after", "1"]);
    expect(lines(rest)).toStrictEqual(stored.slice(2));
    expect(rest.err).toBe("");
    // The last page, exactly full: nothing follows, so no hint.
    const last = await kms(["audit", "list", "--after", "1", "--limit", String(stored.length - 2)]);
    expect(lines(last)).toStrictEqual(stored.slice(2));
    expect(last.err).toBe("");
  });

  it("the default limit is 100 events", async () => {
    expect((await kms(["create-key"])).code).toBe(0);
    for (let i = 0; i < 102; i += 1) expect((await kms(["list-keys"])).code).toBe(0);
    const listed = await kms(["audit", "list"]);
    expect(lines(listed).map((e) => e.sequence)).toStrictEqual([...Array(100).keys()]);
    expect(listed.err).toContain("--after 99");
  });

  it("--key lists the history of a key that has since been deleted", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(new Date("2026-03-01T09:00:00Z"));
    const { a } = await populate();
    const history = storedEvents().filter((e) => e.resources.some((r) => r.ARN === a.arn));
    expect((await kms(["schedule-key-deletion", a.keyId, "--days", "7"])).code).toBe(0);
    vi.setSystemTime(new Date("2026-03-09T09:00:00Z"));
    // Past its window the key is destroyed on the next access.
    expect((await kms(["describe-key", a.keyId])).code).toBe(1);
    vi.useRealTimers();
    for (const name of [a.keyId, a.arn]) {
      const listed = await kms(["audit", "list", "--key", name]);
      expect(listed.code).toBe(0);
      const events = lines(listed);
      expect(events.slice(0, history.length)).toStrictEqual(history);
      expect(events.map((e) => e.eventName)).toContain("ScheduleKeyDeletion");
    }
  });

  it("an unknown alias as --key is NotFoundException (exit 1)", async () => {
    await populate();
    const missing = await kms(["audit", "list", "--key", "alias/nope"]);
    expect(missing.code).toBe(1);
    expect(missing.out).toBe("");
    expect(missing.err).toMatch(/^NotFoundException: /);
  });

  it.each([
    ["--limit 0", ["--limit", "0"], "--limit expected at least 1, got 0"],
    ["--limit ten", ["--limit", "ten"], '--limit expected a whole number, got "ten"'],
    ["--after -1", ["--after=-1"], '--after expected a whole number, got "-1"'],
    ["--since yesterday", ["--since", "yesterday"], "--since expected an ISO 8601 time"],
    ["--since 1", ["--since", "1"], "--since expected an ISO 8601 time"],
    ["--since 2024-02-30", ["--since", "2024-02-30"], "--since expected an ISO 8601 time"],
    ["--since without zone", ["--since", "2024-02-01T10:00"], "--since expected an ISO 8601 time"],
  ])("%s is a usage error (exit 2)", async (_name, flags, message) => {
    await populate();
    const result = await kms(["audit", "list", ...flags]);
    expect(result.code).toBe(2);
    expect(result.out).toBe("");
    expect(result.err).toContain(`kms: audit list: ${message}`);
    expect(result.err).toContain("\n\nUsage: kms audit list ");
  });
});

describe("kms audit verify", () => {
  it("an untouched trail: ok, the number of events and the head; records nothing itself", async () => {
    await populate();
    const stored = storedEvents();
    const last = stored[stored.length - 1] as AuditEvent;
    const verified = await kms(["audit", "verify"]);
    expect(verified.err).toBe("");
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: true,
      events: stored.length,
      head: { sequence: last.sequence, hash: last.hash },
    });
    expect(storedEvents()).toStrictEqual(stored);
  });

  it(`an edited event: exit ${EXIT_AUDIT_BROKEN}, naming its index and sequence, not its contents`, async () => {
    await populate();
    const marker = `TAMPERED-${"x".repeat(4096)}`;
    withDatabase((db) => {
      const row = db.prepare("SELECT event FROM kms_audit_events WHERE sequence = 2").get() as {
        event: string;
      };
      const event = JSON.parse(row.event) as Record<string, unknown>;
      event.sourceIPAddress = marker;
      db.prepare("UPDATE kms_audit_events SET event = ? WHERE sequence = 2").run(
        JSON.stringify(event),
      );
    });
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    expect(EXIT_AUDIT_BROKEN).toBe(3);
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      index: 2,
      sequence: 2,
      problem: "edited",
      message: "event 2 was modified: its hash does not match its content",
    });
    expect(verified.err).toBe(
      "AuditChainBroken: the audit trail is broken at event 2 (sequence 2): event 2 was modified: its hash does not match its content\n",
    );
    expect(verified.out + verified.err).not.toContain("TAMPERED");
  });

  it(`events deleted from the end: exit ${EXIT_AUDIT_BROKEN}, truncation against the recorded head`, async () => {
    await populate();
    const stored = storedEvents();
    const head = stored.length - 1;
    withDatabase((db) =>
      db.prepare("DELETE FROM kms_audit_events WHERE sequence >= ?").run(head - 1),
    );
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    const message = `the log ends at sequence ${head - 2} but the recorded head is ${head}: events were removed from the end`;
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      index: head - 1,
      problem: "truncated",
      message,
    });
    expect(verified.err).toBe(
      `AuditChainBroken: the audit trail is broken at event ${head - 1}: ${message}\n`,
    );
  });

  it(`a row that is not JSON: exit ${EXIT_AUDIT_BROKEN}, malformed at its index`, async () => {
    await populate();
    withDatabase((db) =>
      db.prepare("UPDATE kms_audit_events SET event = 'SECRET-GARBAGE' WHERE sequence = 3").run(),
    );
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      index: 3,
      problem: "malformed",
      message: expect.stringMatching(
        /^event 3 is not an audit event: the sink cannot parse its stored text \(.*a stored event is not JSON\)$/,
      ),
    });
    expect(verified.err).toMatch(/^AuditChainBroken: the audit trail is broken at event 3: /);
    expect(verified.out + verified.err).not.toContain("SECRET-GARBAGE");
  });

  it("an event another process appends while it reads is not taken for truncation", async () => {
    await populate();
    const read = SqliteAuditSink.prototype.read;
    let appended = false;
    vi.spyOn(SqliteAuditSink.prototype, "read").mockImplementation(async function (
      this: SqliteAuditSink,
      options,
    ) {
      const events = await read.call(this, options);
      if (!appended) {
        appended = true;
        // What a `kms serve` on the same data dir does between the two reads.
        const { sequence: _s, prevHash: _p, hash: _h, ...unchained } = events[0] as AuditEvent;
        const next: UnchainedAuditEvent = { ...unchained, eventID: crypto.randomUUID() };
        await this.appendAndChain([next]);
      }
      return events;
    });
    const verified = await kms(["audit", "verify"]);
    expect(appended).toBe(true);
    expect(verified.err).toBe("");
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.out)).toMatchObject({ ok: true });
  });

  it("--principal does not apply (exit 2); a missing data dir is not created (exit 1)", async () => {
    await populate();
    const principal = await kms([
      "audit",
      "verify",
      "--principal",
      "arn:aws:iam::000000000000:user/alice",
    ]);
    expect(principal.code).toBe(2);
    expect(principal.err).toMatch(/^kms: audit verify: --principal does not apply/);
    for (const sub of ["verify", "list"]) {
      const elsewhere = await kms(["--data-dir", "typo", "audit", sub]);
      expect(elsewhere.code, sub).toBe(1);
      expect(elsewhere.out).toBe("");
      expect(elsewhere.err).toBe(
        `KeyStoreNotFoundError: no key store in ${join(ws.dir, "typo")} (no kms.db there): run "kms init" to create one, or pass the right --data-dir (or KMS_DATA_DIR)\n`,
      );
      expect(existsSync(join(ws.dir, "typo"))).toBe(false);
    }
  });
});

/** Events `kms audit verify` reads from the sink at a time (READ_CHUNK in audit-commands.ts). */
const READ_CHUNK = 1000;
/** Three reads: two full chunks and a partial one. */
const LONG_TRAIL = 2 * READ_CHUNK + 500;

/** Grows the trail to `length` events (copies of its last one, chained as the sink chains). */
async function growTrail(length: number): Promise<void> {
  const sink = new SqliteAuditSink({ path: join(ws.dir, ".kms", "kms.db") });
  try {
    const { sequence, prevHash: _p, hash: _h, ...unchained } = (await sink.last()) as AuditEvent;
    await sink.appendAndChain(Array.from({ length: length - sequence - 1 }, () => unchained));
  } finally {
    await sink.close();
  }
  expect(storedEvents()).toHaveLength(length);
}

function recordedHead(): AuditHead {
  return withDatabase(
    (db) =>
      db.prepare("SELECT sequence, hash FROM kms_audit_head WHERE singleton = 1").get() as {
        sequence: number;
        hash: string;
      },
  );
}

function editEvent(sequence: number, edit: (event: Record<string, unknown>) => void): void {
  withDatabase((db) => {
    const row = db
      .prepare("SELECT event FROM kms_audit_events WHERE sequence = ?")
      .get(sequence) as {
      event: string;
    };
    const event = JSON.parse(row.event) as Record<string, unknown>;
    edit(event);
    db.prepare("UPDATE kms_audit_events SET event = ? WHERE sequence = ?").run(
      JSON.stringify(event),
      sequence,
    );
  });
}

/**
 * What `verify` printed before it read the trail in chunks: core's verdict on the whole trail,
 * read at once, against the recorded head.
 */
function wholeTrailVerdict(): Record<string, unknown> {
  const events = storedEvents();
  const result = verifyAuditLog(events, { expectedHead: recordedHead() });
  if (result.ok) {
    return { ok: true, events: result.count, head: result.head ?? null };
  }
  const sequence = events[result.index]?.sequence;
  return {
    ok: false,
    index: result.index,
    ...(sequence === undefined ? {} : { sequence }),
    problem: result.problem,
    message: result.message,
  };
}

describe(`kms audit verify on a trail longer than one read (${LONG_TRAIL} events)`, () => {
  beforeEach(async () => {
    expect((await kms(["create-key"])).code).toBe(0);
    await growTrail(LONG_TRAIL);
  });

  it("reads the sink in bounded chunks and verifies every event (regression: read whole)", async () => {
    const reads: (Parameters<SqliteAuditSink["read"]>[0] | undefined)[] = [];
    const read = SqliteAuditSink.prototype.read;
    vi.spyOn(SqliteAuditSink.prototype, "read").mockImplementation(function (
      this: SqliteAuditSink,
      options,
    ) {
      reads.push(options);
      return read.call(this, options);
    });
    const verified = await kms(["audit", "verify"]);
    expect(verified.err).toBe("");
    expect(verified.code).toBe(0);
    const last = storedEvents().at(-1) as AuditEvent;
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: true,
      events: LONG_TRAIL,
      head: { sequence: last.sequence, hash: last.hash },
    });
    expect(JSON.parse(verified.out)).toStrictEqual(wholeTrailVerdict());
    expect(reads.length).toBeGreaterThanOrEqual(3);
    for (const options of reads) {
      expect(options?.limit).toBeGreaterThanOrEqual(1);
      expect(options?.limit).toBeLessThanOrEqual(READ_CHUNK);
    }
  });

  it(`an edited event in the third chunk: exit ${EXIT_AUDIT_BROKEN}, at its index in the trail`, async () => {
    editEvent(2345, (event) => {
      event.sourceIPAddress = "203.0.113.9";
    });
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    const message = "event 2345 was modified: its hash does not match its content";
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      index: 2345,
      sequence: 2345,
      problem: "edited",
      message,
    });
    expect(JSON.parse(verified.out)).toStrictEqual(wholeTrailVerdict());
    expect(verified.err).toBe(
      `AuditChainBroken: the audit trail is broken at event 2345 (sequence 2345): ${message}\n`,
    );
  });

  it(`the first event of a chunk deleted: exit ${EXIT_AUDIT_BROKEN}, the chain checked across reads`, async () => {
    withDatabase((db) =>
      db.prepare("DELETE FROM kms_audit_events WHERE sequence = ?").run(READ_CHUNK),
    );
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    const message = `event ${READ_CHUNK} (sequence ${READ_CHUNK + 1}) does not follow the previous event (expected sequence ${READ_CHUNK}): events were deleted, inserted or reordered before it`;
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      index: READ_CHUNK,
      sequence: READ_CHUNK + 1,
      problem: "deleted-or-reordered",
      message,
    });
    expect(JSON.parse(verified.out)).toStrictEqual(wholeTrailVerdict());
    expect(verified.err).toBe(
      `AuditChainBroken: the audit trail is broken at event ${READ_CHUNK} (sequence ${READ_CHUNK + 1}): ${message}\n`,
    );
  });

  it(`a later chunk chained onto a forged event: exit ${EXIT_AUDIT_BROKEN} where the fork starts`, async () => {
    // Events from the second chunk on chained anew onto a different event before them: every
    // chunk but the first is a valid chain on its own.
    const stored = storedEvents();
    const forkedFrom = { ...(stored[READ_CHUNK - 1] as AuditEvent), hash: "cd".repeat(32) };
    const rest = stored
      .slice(READ_CHUNK)
      .map(({ sequence: _s, prevHash: _p, hash: _h, ...unchained }) => unchained);
    const forged = chainAuditEvents(forkedFrom, rest);
    withDatabase((db) => {
      const update = db.prepare("UPDATE kms_audit_events SET event = ? WHERE sequence = ?");
      db.exec("BEGIN");
      for (const event of forged) update.run(JSON.stringify(event), event.sequence);
      db.exec("COMMIT");
      const last = forged.at(-1) as AuditEvent;
      db.prepare("UPDATE kms_audit_head SET sequence = ?, hash = ? WHERE singleton = 1").run(
        last.sequence,
        last.hash,
      );
    });
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    expect(JSON.parse(verified.out)).toMatchObject({
      ok: false,
      index: READ_CHUNK,
      sequence: READ_CHUNK,
      problem: "deleted-or-reordered",
    });
    expect(JSON.parse(verified.out)).toStrictEqual(wholeTrailVerdict());
  });

  it(`the tail deleted down to a whole number of chunks: exit ${EXIT_AUDIT_BROKEN}, truncation`, async () => {
    withDatabase((db) =>
      db.prepare("DELETE FROM kms_audit_events WHERE sequence >= ?").run(2 * READ_CHUNK),
    );
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    const message = `the log ends at sequence ${2 * READ_CHUNK - 1} but the recorded head is ${LONG_TRAIL - 1}: events were removed from the end`;
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      index: 2 * READ_CHUNK,
      problem: "truncated",
      message,
    });
    expect(JSON.parse(verified.out)).toStrictEqual(wholeTrailVerdict());
    expect(verified.err).toBe(
      `AuditChainBroken: the audit trail is broken at event ${2 * READ_CHUNK}: ${message}\n`,
    );
  });

  it("a recorded head chunks before the end is checked where it is", async () => {
    const stored = storedEvents();
    const earlier = stored[1200] as AuditEvent;
    // The trail grew past the head by more than a read, as with a `kms serve` appending meanwhile.
    const setHead = (hash: string): void =>
      withDatabase((db) => {
        db.prepare("UPDATE kms_audit_head SET sequence = ?, hash = ? WHERE singleton = 1").run(
          earlier.sequence,
          hash,
        );
      });
    setHead(earlier.hash);
    const grown = await kms(["audit", "verify"]);
    expect(grown.code).toBe(0);
    expect(JSON.parse(grown.out)).toStrictEqual(wholeTrailVerdict());
    expect(JSON.parse(grown.out)).toMatchObject({ ok: true, events: LONG_TRAIL });

    setHead("ab".repeat(32));
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      index: 1200,
      sequence: 1200,
      problem: "edited",
      message: "event 1200 does not match the recorded head",
    });
    expect(JSON.parse(verified.out)).toStrictEqual(wholeTrailVerdict());
  });

  it("rows whose sequence column was raised apart from their events are read once, as whole", async () => {
    // The events and the head are untouched, so the chain holds; a read after event 1999 by the
    // column meets event 1999 (now keyed 2000) again.
    withDatabase((db) => {
      db.prepare(
        "UPDATE kms_audit_events SET sequence = sequence + 1000000 WHERE sequence >= 1500",
      ).run();
      db.prepare(
        "UPDATE kms_audit_events SET sequence = sequence - 999999 WHERE sequence >= 1000000",
      ).run();
    });
    const verified = await kms(["audit", "verify"]);
    expect(verified.err).toBe("");
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.out)).toMatchObject({ ok: true, events: LONG_TRAIL });
    expect(JSON.parse(verified.out)).toStrictEqual(wholeTrailVerdict());
  });

  it(`a row in the third chunk that is not JSON: exit ${EXIT_AUDIT_BROKEN}, malformed at its index`, async () => {
    withDatabase((db) =>
      db
        .prepare("UPDATE kms_audit_events SET event = 'SECRET-GARBAGE' WHERE sequence = 2100")
        .run(),
    );
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      index: 2100,
      problem: "malformed",
      message: expect.stringMatching(
        /^event 2100 is not an audit event: the sink cannot parse its stored text \(.*a stored event is not JSON\)$/,
      ),
    });
    expect(verified.err).toMatch(/^AuditChainBroken: the audit trail is broken at event 2100: /);
    expect(verified.out + verified.err).not.toContain("SECRET-GARBAGE");
  });

  it.each([
    ["an earlier chunk", 1500],
    ["the same chunk", 2050],
  ])(
    "a break in %s before a row that is not JSON is the one reported: the first",
    async (_where, edited) => {
      editEvent(edited, (event) => {
        event.sourceIPAddress = "203.0.113.9";
      });
      withDatabase((db) =>
        db
          .prepare("UPDATE kms_audit_events SET event = 'SECRET-GARBAGE' WHERE sequence = 2100")
          .run(),
      );
      const verified = await kms(["audit", "verify"]);
      expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
      expect(JSON.parse(verified.out)).toStrictEqual({
        ok: false,
        index: edited,
        sequence: edited,
        problem: "edited",
        message: `event ${edited} was modified: its hash does not match its content`,
      });
    },
  );

  it("--head: a head pinned in the first chunk is found; cut off in a later chunk, it is missing", async () => {
    const pinned = storedEvents()[700] as AuditEvent;
    const kept = await kms(["audit", "verify", "--head", pinned.hash]);
    expect(kept.code).toBe(0);
    expect(JSON.parse(kept.out)).toMatchObject({
      ok: true,
      events: LONG_TRAIL,
      pinned: { sequence: 700, hash: pinned.hash },
    });
    const later = storedEvents()[1700] as AuditEvent;
    truncateWithHead(1500);
    expect((await kms(["audit", "verify"])).code).toBe(0);
    const missing = await kms(["audit", "verify", "--head", later.hash]);
    expect(missing.code).toBe(EXIT_AUDIT_BROKEN);
    expect(JSON.parse(missing.out)).toStrictEqual({
      ok: false,
      problem: "pinned-head-missing",
      message: `no event has the pinned head hash ${later.hash}: the trail was cut short before that event, or rewritten`,
    });
  });
});

/** What someone who can write kms.db does after cutting the trail short: move the head to match. */
function truncateWithHead(keep: number): void {
  withDatabase((db) => {
    db.prepare("DELETE FROM kms_audit_events WHERE sequence >= ?").run(keep);
    const last = storedEvents().at(-1) as AuditEvent;
    db.prepare("UPDATE kms_audit_head SET sequence = ?, hash = ? WHERE singleton = 1").run(
      last.sequence,
      last.hash,
    );
  });
}

describe("kms audit verify --head", () => {
  async function pin(): Promise<{ sequence: number; hash: string }> {
    const verified = await kms(["audit", "verify"]);
    expect(verified.code).toBe(0);
    return (JSON.parse(verified.out) as { head: { sequence: number; hash: string } }).head;
  }

  it("a head kept from an earlier verify is still in the grown trail: ok, and where it is", async () => {
    await populate();
    const kept = await pin();
    await kms(["create-key", "--description", "later"]);
    const stored = storedEvents();
    expect(stored.length).toBeGreaterThan(kept.sequence + 1);
    const last = stored.at(-1) as AuditEvent;
    // Hex in upper case is the same hash.
    for (const hash of [kept.hash, kept.hash.toUpperCase()]) {
      const verified = await kms(["audit", "verify", "--head", hash]);
      expect(verified.err).toBe("");
      expect(verified.code).toBe(0);
      expect(JSON.parse(verified.out)).toStrictEqual({
        ok: true,
        events: stored.length,
        head: { sequence: last.sequence, hash: last.hash },
        pinned: kept,
      });
    }
    expect(storedEvents()).toStrictEqual(stored);
  });

  it(`a trail cut short before the pinned head, with the recorded head moved to match: exit ${EXIT_AUDIT_BROKEN}`, async () => {
    await populate();
    const kept = await pin();
    truncateWithHead(kept.sequence - 1);
    // Without --head the trail checks out against the head stored beside it: the gap --head closes.
    expect((await kms(["audit", "verify"])).code).toBe(0);
    const verified = await kms(["audit", "verify", "--head", kept.hash]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    const message = `no event has the pinned head hash ${kept.hash}: the trail was cut short before that event, or rewritten`;
    expect(JSON.parse(verified.out)).toStrictEqual({
      ok: false,
      problem: "pinned-head-missing",
      message,
    });
    expect(verified.err).toBe(`AuditChainBroken: the audit trail is broken: ${message}\n`);
  });

  it(`a trail rewritten and chained anew up to a new head: exit ${EXIT_AUDIT_BROKEN}`, async () => {
    await populate();
    const kept = await pin();
    // Event 1 edited, and every event from it on hashed again, as a forger who knows the format would.
    const forged = storedEvents().map(({ sequence: _s, prevHash: _p, hash: _h, ...rest }, i) =>
      i === 1 ? { ...rest, sourceIPAddress: "203.0.113.9" } : rest,
    );
    const rechained = chainAuditEvents(undefined, forged as UnchainedAuditEvent[]);
    const last = rechained.at(-1) as AuditEvent;
    withDatabase((db) => {
      for (const event of rechained) {
        db.prepare("UPDATE kms_audit_events SET event = ? WHERE sequence = ?").run(
          JSON.stringify(event),
          event.sequence,
        );
      }
      db.prepare("UPDATE kms_audit_head SET sequence = ?, hash = ? WHERE singleton = 1").run(
        last.sequence,
        last.hash,
      );
    });
    expect((await kms(["audit", "verify"])).code).toBe(0);
    const verified = await kms(["audit", "verify", "--head", kept.hash]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    expect(JSON.parse(verified.out)).toMatchObject({ ok: false, problem: "pinned-head-missing" });
  });

  it(`a hash no event ever had, or an empty trail: exit ${EXIT_AUDIT_BROKEN}`, async () => {
    await kms(["init"]);
    const unknown = "ab".repeat(32);
    expect(storedEvents()).toStrictEqual([]);
    const empty = await kms(["audit", "verify", "--head", unknown]);
    expect(empty.code).toBe(EXIT_AUDIT_BROKEN);
    expect(JSON.parse(empty.out)).toMatchObject({ ok: false, problem: "pinned-head-missing" });
    await populate();
    const other = await kms(["audit", "verify", "--head", unknown]);
    expect(other.code).toBe(EXIT_AUDIT_BROKEN);
    expect(other.err).toMatch(
      /^AuditChainBroken: the audit trail is broken: no event has the pinned head hash (ab){32}: /,
    );
  });

  it("a chain broken before the pinned head is reported as the break, where it is", async () => {
    await populate();
    const kept = await pin();
    withDatabase((db) => db.prepare("DELETE FROM kms_audit_events WHERE sequence = 1").run());
    const verified = await kms(["audit", "verify", "--head", kept.hash]);
    expect(verified.code).toBe(EXIT_AUDIT_BROKEN);
    expect(JSON.parse(verified.out)).toMatchObject({
      ok: false,
      index: 1,
      sequence: 2,
      problem: "deleted-or-reordered",
    });
  });

  it.each([
    ["not hex", "z".repeat(64)],
    ["too short", "ab".repeat(31)],
    ["too long", "ab".repeat(33)],
    ["a sequence:hash pair", `4:${"ab".repeat(32)}`],
  ])(
    "a --head that is %s is a usage error (exit 2), before the store is opened",
    async (_name, head) => {
      // Run on a data dir with no store: a store lookup would fail otherwise, exit 1.
      const verified = await kms(["--data-dir", "none", "audit", "verify", "--head", head]);
      expect(verified.code).toBe(2);
      expect(verified.out).toBe("");
      expect(verified.err).toMatch(
        new RegExp(
          `^kms: audit verify: --head expected an event hash \\(64 hex digits, the "head\\.hash" an earlier verify printed\\), got "${head}"\n\nUsage: kms audit verify \\[--head <hash>\\]`,
        ),
      );
      expect(existsSync(join(ws.dir, "none"))).toBe(false);
    },
  );

  it("an empty or repeated --head is a usage error (exit 2)", async () => {
    const hash = "ab".repeat(32);
    for (const argv of [
      ["audit", "verify", "--head="],
      ["audit", "verify", "--head", hash, "--head", hash],
    ]) {
      const verified = await kms(argv);
      expect(verified.code).toBe(2);
      expect(verified.err).toMatch(/^kms: audit verify: --head /);
    }
  });
});

describe("kms audit: the command line", () => {
  it.each([
    [
      "no subcommand",
      ["audit"],
      /^kms: audit: missing subcommand\n\nUsage: kms audit <subcommand>/,
    ],
    ["an unknown subcommand", ["audit", "show"], /^kms: audit: unknown subcommand "show"\n\n/],
    ["a list option on verify", ["audit", "verify", "--limit", "3"], /^kms: .*--limit/],
    ["an extra argument", ["audit", "verify", "now"], /^kms: audit verify: unexpected argument/],
  ])("%s is a usage error", async (_name, argv, message) => {
    const result = await kms(["--data-dir", "none", ...argv]);
    expect(result.code).toBe(2);
    expect(result.err).toMatch(message);
    expect(existsSync(join(ws.dir, "none"))).toBe(false);
  });

  it("help lists the subcommands", async () => {
    for (const argv of [
      ["help", "audit"],
      ["audit", "--help"],
    ]) {
      const help = await kms(argv);
      expect(help.code).toBe(0);
      expect(help.out).toMatch(/^Usage: kms audit <subcommand>\n/);
      expect(help.out).not.toContain("kms encrypt");
      expect(help.out).toContain("  kms audit list [--key <keyId|alias|ARN>]");
      expect(help.out).toContain("  kms audit verify [--head <hash>]\n");
    }
    const one = await kms(["help", "audit", "verify"]);
    expect(one.out).toMatch(/^Usage: kms audit verify \[--head <hash>\]\n/);
    const flag = await kms(["audit", "list", "--help"]);
    expect(flag.out).toMatch(/^Usage: kms audit list /);
    expect((await kms(["--help"])).out).toContain("kms last-used <keyId>");
  });
});

describe("kms last-used", () => {
  it("reports no use before an encrypt and its GenerateDataKey after it, with ISO dates", async () => {
    const created = JSON.parse((await kms(["create-key"])).out) as Key & { creationDate: string };
    expect((await kms(["create-alias", "alias/a", created.keyId])).code).toBe(0);
    // As AWS's GetKeyLastUsage: a key id or key ARN, not an alias.
    const byAlias = await kms(["last-used", "alias/a"]);
    expect(byAlias.code).toBe(1);
    expect(byAlias.err).toMatch(
      /^NotFoundException: Invalid keyId alias\/a: getKeyLastUsage takes a key id or key ARN, not an alias\n/,
    );
    const before = await kms(["last-used", created.arn]);
    expect(before.code).toBe(0);
    expect(JSON.parse(before.out)).toStrictEqual({
      keyId: created.arn,
      trackingStartDate: created.creationDate,
      keyCreationDate: created.creationDate,
    });

    writeFileSync(join(ws.dir, "plain.txt"), "hello");
    expect(
      (await kms(["encrypt", "--key", created.keyId, "--in", "plain.txt", "--out", "c"])).code,
    ).toBe(0);
    // `kms encrypt` envelope-encrypts: its use of the key is GenerateDataKey.
    const encrypt = storedEvents().find((e) => e.eventName === "GenerateDataKey") as AuditEvent;
    const after = await kms(["last-used", created.keyId]);
    expect(after.code).toBe(0);
    expect(JSON.parse(after.out)).toStrictEqual({
      keyId: created.arn,
      keyLastUsage: {
        operation: "GenerateDataKey",
        timestamp: encrypt.eventTime,
        cloudTrailEventId: encrypt.eventID,
        kmsRequestId: encrypt.requestID,
      },
      trackingStartDate: created.creationDate,
      keyCreationDate: created.creationDate,
    });
    // It is a KMS call of its own, recorded like any other (and never a use).
    expect(storedEvents().filter((e) => e.eventName === "GetKeyLastUsage")).toHaveLength(3);
  });

  it("an unknown key is NotFoundException (exit 1)", async () => {
    const missing = await kms(["last-used", "1234abcd-12ab-34cd-56ef-1234567890ab"]);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^NotFoundException: /);
  });
});
