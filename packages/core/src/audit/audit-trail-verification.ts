/**
 * Verification of the trail a sink holds, read a page at a time: memory stays that of a page or
 * two whatever the trail's length, and the verdict is the one verifyAuditLog gives for the whole
 * trail read at once (see {@link verifyAuditTrail} for the two cases where it is not).
 */
import { KmsInternalError, ValidationError } from "../errors.ts";
import { assertInteger, assertObject, assertOneOf } from "../internal/assert.ts";
import {
  type AuditHead,
  type AuditLogVerification,
  AuditLogVerifier,
  type VerifyOptions,
} from "./audit-chain.ts";
import type { AuditEvent, AuditSink } from "./audit-sink.ts";

/** Events read from the sink at a time when `pageSize` is not given. */
const DEFAULT_AUDIT_PAGE_SIZE = 1000;

/** Options of `kms.audit.verify()`. */
export interface AuditTrailVerifyOptions {
  /**
   * The `head.hash` of an earlier verification, kept where whoever can write the trail cannot:
   * an ok verdict then has `pinned`, the event of the chain with that hash, or no `pinned` when
   * none has it (the trail was cut short before that event, or rewritten). A recorded head lives
   * with the events, so only a pin tells a trail cut short (or chained anew) with its recorded
   * head moved to match from the trail that was pinned.
   */
  readonly pinnedHead?: string;
  /**
   * A stored event the sink cannot even parse (a row that is not JSON, or not the text the sink
   * writes: the sink's KMSInternalException caused by a SyntaxError): `"reject"` (default)
   * rejects with that error, as reading the trail does; `"malformed"` reports it as the break
   * (`malformed`, at its position), unless the chain breaks before it.
   */
  readonly unreadable?: "reject" | "malformed";
  /** Events read from the sink at a time: 2 to 1,000,000, default 1000. */
  readonly pageSize?: number;
}

/**
 * verifyAuditLog's verdict on the whole trail, with what only a read of the sink can add: where
 * the pinned head is, and the sequence the event at a break claims (when it claims one).
 */
export type AuditTrailVerification =
  | (Extract<AuditLogVerification, { ok: true }> & {
      /** The first event whose hash is `pinnedHead`; absent without one, or when none has it. */
      readonly pinned?: AuditHead;
    })
  | (Extract<AuditLogVerification, { ok: false }> & {
      /** What the event at `index` gives as its sequence, when it gives a safe integer. */
      readonly sequence?: number;
    });

const EVENT_HASH = /^[0-9a-f]{64}$/;

/**
 * Verifies the trail `sink` holds against `expectedHead` (read before this is called, so that
 * events appended meanwhile extend past it instead of reading as truncation), from sequence 0,
 * or, for a sink that `keepsWindow`, from its first event.
 *
 * The sink is read through `readPages` when it has it (storage order, nothing left out), else
 * with `read({ after, limit })`, each page after the last event checked (a sink that keepsWindow
 * and has no readPages is read whole: its window bounds it). `after` selects by the sink's key
 * (a database's sequence column), which a row whose column was raised apart from its event
 * still meets after the event before it was checked: such a page starts with rows already
 * checked, which an overlapping read recognizes and skips, as a whole read sees each row once.
 *
 * The verdict is verifyAuditLog's on `read()` of the whole trail, except that: a stored event the
 * sink cannot parse is reached only if the chain holds up to it (a whole read failed on it
 * before anything was checked); and, on a sink without `readPages`, rows whose keys run ahead of
 * their events' sequences by a page or more are reported as a break where they repeat (never
 * as a chain that holds).
 * @throws ValidationException for bad options; the sink's error when a read fails (a stored
 *   event it cannot parse too, unless `unreadable: "malformed"`).
 */
export async function verifyAuditTrail(
  sink: AuditSink,
  expectedHead: AuditHead | undefined,
  options?: AuditTrailVerifyOptions,
): Promise<AuditTrailVerification> {
  const { pinnedHead, unreadable, pageSize } = verifyOptions(options);
  const pages =
    typeof sink.readPages === "function"
      ? sink.readPages(pageSize)
      : sink.keepsWindow === true
        ? wholeWindow(sink)
        : pagesByRead(sink, pageSize);
  let verifier: AuditLogVerifier | undefined;
  try {
    for await (const page of pages) {
      const first = page[0] as Partial<AuditEvent> | null | undefined;
      if (first === undefined) continue;
      verifier ??= new AuditLogVerifier(
        { ...startOf(sink, first), ...(expectedHead === undefined ? {} : { expectedHead }) },
        pinnedHead,
      );
      const before = verifier.count;
      const broken = verifier.add(page);
      if (broken !== undefined) {
        const claimed = (page[broken.index - before] as Partial<AuditEvent> | null)?.sequence;
        return {
          ...broken,
          ...(Number.isSafeInteger(claimed) ? { sequence: claimed as number } : {}),
        };
      }
    }
  } catch (error) {
    if (unreadable !== "malformed" || !isUnparsableEvent(error)) throw error;
    const index = verifier?.count ?? 0;
    return {
      ok: false,
      index,
      problem: "malformed",
      message: `event ${index} is not an audit event: the sink cannot parse its stored text (${unparsableReason(error)})`,
    };
  }
  verifier ??= new AuditLogVerifier(expectedHead === undefined ? {} : { expectedHead }, pinnedHead);
  const verdict = verifier.finish();
  if (!verdict.ok) {
    // Only the head's own event can be "edited" here: the chain put it at the head's sequence.
    return verdict.problem === "edited" && expectedHead !== undefined
      ? { ...verdict, sequence: expectedHead.sequence }
      : verdict;
  }
  const pinned = verifier.pinned;
  return pinned === undefined ? verdict : { ...verdict, pinned };
}

/**
 * Why the sink could not parse a stored event, for a verdict's message: a sink's
 * KMSInternalException names the row and what is wrong with it (not JSON, not an object, not the
 * text it writes); a bare SyntaxError is named by class only, as V8's message quotes the text.
 */
function unparsableReason(error: unknown): string {
  return error instanceof KmsInternalError ? error.message : "SyntaxError";
}

function verifyOptions(options: AuditTrailVerifyOptions | undefined): {
  readonly pinnedHead: string | undefined;
  readonly unreadable: "reject" | "malformed";
  readonly pageSize: number;
} {
  if (options === undefined) {
    return { pinnedHead: undefined, unreadable: "reject", pageSize: DEFAULT_AUDIT_PAGE_SIZE };
  }
  const o = assertObject("options", options);
  const pinnedHead = o.pinnedHead;
  if (
    pinnedHead !== undefined &&
    (typeof pinnedHead !== "string" || !EVENT_HASH.test(pinnedHead))
  ) {
    throw new ValidationError(
      `"pinnedHead" expected an event hash (64 lower-case hex digits), got ${typeof pinnedHead === "string" ? JSON.stringify(pinnedHead.slice(0, 80)) : typeof pinnedHead}`,
    );
  }
  return {
    pinnedHead,
    unreadable:
      o.unreadable === undefined
        ? "reject"
        : assertOneOf("unreadable", o.unreadable, ["reject", "malformed"] as const),
    pageSize:
      o.pageSize === undefined
        ? DEFAULT_AUDIT_PAGE_SIZE
        : assertInteger("pageSize", o.pageSize, 2, 1_000_000),
  };
}

/**
 * Only a sink that drops old events by design may start mid-chain: for any other, a trail that
 * does not start at sequence 0 has lost its oldest events.
 */
function startOf(sink: AuditSink, first: Partial<AuditEvent> | null): VerifyOptions {
  if (sink.keepsWindow !== true || typeof first !== "object" || first === null) return {};
  return { from: { sequence: first.sequence as number, prevHash: first.prevHash as string } };
}

/**
 * A sink's refusal of a stored event it cannot parse (its cause a SyntaxError, see
 * parseStoredAuditEvent): a verdict on the trail, unlike other read failures.
 */
function isUnparsableEvent(error: unknown): boolean {
  return (
    error instanceof SyntaxError ||
    (error instanceof KmsInternalError && error.cause instanceof SyntaxError)
  );
}

/**
 * A sink that keeps a window holds a bounded number of events, and its first event may claim any
 * sequence: `read({ after })` cannot follow its events by their sequences (a tampered first
 * event that claims a later one would have the rows up to that sequence skipped), so it is read
 * whole, as before.
 */
async function* wholeWindow(sink: AuditSink): AsyncGenerator<readonly AuditEvent[]> {
  let events: readonly AuditEvent[];
  try {
    events = await sink.read();
  } catch (error) {
    if (!isUnparsableEvent(error)) throw error;
    // The events before the row it cannot parse: a break among them is the verdict.
    for (let size = 2; ; size *= 2) {
      const rows = await readRows(sink, undefined, size);
      if (rows.unparsable !== undefined) {
        if (rows.events.length > 0) yield rows.events;
        throw rows.unparsable;
      }
      if (rows.complete) throw error;
    }
  }
  yield events;
}

/** Rows of one read, in the sink's order. */
interface Rows {
  readonly events: readonly AuditEvent[];
  /** The read returned fewer rows than asked for (more: the sink ignores `limit`). */
  readonly complete: boolean;
  /** The sink's refusal of the row after `events`. */
  readonly unparsable?: unknown;
}

/**
 * The trail through `read({ after, limit })`, page after page: each page follows the last event
 * of the one before, which the caller found chained (it stops reading at a break).
 */
async function* pagesByRead(sink: AuditSink, size: number): AsyncGenerator<readonly AuditEvent[]> {
  let rows = await readRows(sink, undefined, size);
  for (;;) {
    if (rows.events.length > 0) yield rows.events;
    if (rows.unparsable !== undefined) throw rows.unparsable;
    const last = rows.events.at(-1);
    if (rows.complete || last === undefined) return;
    rows = await following(sink, last, size);
  }
}

/**
 * Up to `size` rows after `after` (from the start without it). A read that fails on a row the
 * sink cannot parse gives the rows before that row, found by halving the limit (a read fails
 * exactly when it reaches the row): a break among them is the verdict, not the failure.
 */
async function readRows(sink: AuditSink, after: number | undefined, size: number): Promise<Rows> {
  const range = (limit: number) => (after === undefined ? { limit } : { after, limit });
  try {
    const events = await sink.read(range(size));
    return { events, complete: events.length !== size };
  } catch (error) {
    if (!isUnparsableEvent(error)) throw error;
    let readable: readonly AuditEvent[] = [];
    let low = 0;
    let high = size - 1;
    while (low < high) {
      const limit = Math.ceil((low + high) / 2);
      try {
        readable = await sink.read(range(limit));
        low = limit;
      } catch (again) {
        if (!isUnparsableEvent(again)) throw again;
        high = limit - 1;
      }
    }
    return { events: readable.slice(0, low), complete: false, unparsable: error };
  }
}

/**
 * The rows that follow `last` in the sink's order, up to `size`. A read after `last.sequence`
 * selects rows by the sink's key: the events that follow when every event checked is keyed by
 * its sequence (as sinks store them). A row whose key was raised apart from its event is
 * returned again, and the first row returned is then one already checked (its sequence is not
 * past `last`'s); the rows up to `last` are then skipped. A read from `last` itself tells that
 * apart from a trail that really holds a copy of `last` (or of an event before it) next.
 */
async function following(sink: AuditSink, last: AuditEvent, size: number): Promise<Rows> {
  const rows = await readRows(sink, last.sequence, size);
  const first = rows.events[0] as Partial<AuditEvent> | null | undefined;
  const repeated =
    typeof first === "object" &&
    first !== null &&
    typeof first.sequence === "number" &&
    first.sequence <= last.sequence;
  if (!repeated) return rows;
  // Up to a row the sink cannot parse, as the rows themselves were read.
  const overlap = (await readRows(sink, last.sequence - 1, size)).events;
  const text = JSON.stringify(last);
  // Keyed by sequence: `last` first, then the rows the read after it returned.
  const keyed =
    overlap.length === Math.min(size, rows.events.length + 1) &&
    JSON.stringify(overlap[0]) === text &&
    overlap
      .slice(1)
      .every(
        (e, i) => i >= rows.events.length || JSON.stringify(e) === JSON.stringify(rows.events[i]),
      );
  if (keyed) return rows;
  const at = rows.events.findIndex((e) => JSON.stringify(e) === text);
  if (at === -1) return rows;
  const rest = rows.events.slice(at + 1);
  // A full page of rows read again: nothing to go on from.
  if (rest.length === 0 && !rows.complete && rows.unparsable === undefined) return rows;
  return { ...rows, events: rest };
}
