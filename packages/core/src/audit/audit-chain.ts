/**
 * The hash chain over audit events: each event's `hash` is SHA-256 over a canonical
 * serialization of all its other fields, including `prevHash`, the previous event's hash. Any
 * edit, deletion, reordering or (given the expected head) truncation breaks the chain at a
 * position `verifyAuditLog` reports.
 */
import { hash } from "node:crypto";
import { KmsInternalError } from "../errors.ts";
import { assertInteger } from "../internal/assert.ts";
import { type AuditEvent, GENESIS_HASH, type UnchainedAuditEvent } from "./audit-sink.ts";

const quotedKeys = new Map<string, string>();

/** JSON-quoted key, memoized: events repeat the same few dozen field names. */
function quoted(key: string): string {
  let q = quotedKeys.get(key);
  if (q === undefined) {
    q = JSON.stringify(key);
    if (quotedKeys.size < 4096) quotedKeys.set(key, q);
  }
  return q;
}

/** JSON with object keys sorted at every level; `hash` of the top-level event is left out. */
export function canonicalize(value: unknown, top = true): string {
  if (value === null || typeof value !== "object") {
    // undefined (absent) values never reach here: events are plain JSON.
    return JSON.stringify(value) ?? "null";
  }
  if (Array.isArray(value)) {
    let out = "[";
    for (let i = 0; i < value.length; i++) {
      if (i > 0) out += ",";
      out += canonicalize(value[i], false);
    }
    return `${out}]`;
  }
  const record = value as Record<string, unknown>;
  // Default sort compares UTF-16 code units: deterministic on every platform.
  const keys = Object.keys(record).sort();
  let out = "{";
  let first = true;
  for (const key of keys) {
    const v = record[key];
    if (v === undefined || (top && key === "hash")) continue;
    if (!first) out += ",";
    first = false;
    out += `${quoted(key)}:${canonicalize(v, false)}`;
  }
  return `${out}}`;
}

export function hashEvent(event: Omit<AuditEvent, "hash"> | AuditEvent): string {
  return hash("sha256", canonicalize(event), "hex");
}

/**
 * Gives events their place in the chain after `head` (undefined: the trail is empty): sequence
 * numbers from `head.sequence + 1`, each event's prevHash the previous hash, and its hash from
 * {@link hashEvent}. The Auditor and every sink that chains for itself (`appendAndChain`) use
 * this one function, so a shared chain verifies exactly like a single-writer one.
 */
export function chainAuditEvents(
  head: AuditHead | undefined,
  events: readonly UnchainedAuditEvent[],
): AuditEvent[] {
  let sequence = head?.sequence ?? -1;
  let prevHash = head?.hash ?? GENESIS_HASH;
  const chained: AuditEvent[] = [];
  for (const event of events) {
    sequence++;
    const unhashed = { ...event, sequence, prevHash };
    prevHash = hashEvent(unhashed);
    chained.push({ ...unhashed, hash: prevHash });
  }
  return chained;
}

/**
 * Checks that already-chained events continue the chain at `head` (undefined: empty trail):
 * contiguous sequence numbers and each prevHash the hash before it. Shared-chain sinks call it
 * in `write`, under their head lock, so a writer holding a stale head cannot fork the chain.
 * Hashes are not recomputed here: that is verifyAuditLog's job.
 * @throws KMSInternalException naming the first event that does not follow.
 */
export function assertExtendsAuditHead(
  head: AuditHead | undefined,
  events: readonly AuditEvent[],
  description: string,
): void {
  let sequence = head?.sequence ?? -1;
  let prevHash = head?.hash ?? GENESIS_HASH;
  for (let i = 0; i < events.length; i++) {
    const event = events[i]!;
    if (event.sequence !== sequence + 1 || event.prevHash !== prevHash) {
      throw new KmsInternalError(
        `audit sink ${description}: event ${i} of the batch (sequence ${String(event.sequence)}) does not extend the chain head (sequence ${sequence}): another writer moved the head, or the chain was forked`,
      );
    }
    sequence = event.sequence;
    prevHash = event.hash;
  }
}

export type AuditLogProblem = "edited" | "deleted-or-reordered" | "truncated" | "malformed";

export type AuditLogVerification =
  | { readonly ok: true; readonly count: number; readonly head?: AuditHead }
  | {
      readonly ok: false;
      /**
       * Index of the first bad event (the number of events for truncation): in the given array,
       * plus `firstIndex` when that option is given.
       */
      readonly index: number;
      readonly problem: AuditLogProblem;
      readonly message: string;
    };

/** The newest event's position and hash: keep it somewhere else to detect truncation. */
export interface AuditHead {
  readonly sequence: number;
  readonly hash: string;
}

export interface VerifyOptions {
  /** Where the given events start: default the trail's beginning (sequence 0, genesis hash). */
  readonly from?: { readonly sequence: number; readonly prevHash: string };
  /** The head recorded elsewhere; a log that ends before it was truncated. */
  readonly expectedHead?: AuditHead;
  /**
   * Position in the whole trail of the first given event (default 0): the verdict's `index` and
   * its message count from it, so that a trail verified in parts (each part `from` the last
   * event of the one before) is reported as verifying it whole would report it.
   */
  readonly firstIndex?: number;
}

type AuditLogBreak = Extract<AuditLogVerification, { ok: false }>;

/**
 * verifyAuditLog in steps: `add` the events part after part, in order, then `finish`. The
 * verdict is the one verifyAuditLog gives for all the parts as one array; memory stays that of
 * one part, whatever the length of the trail.
 */
export class AuditLogVerifier {
  readonly #firstIndex: number;
  readonly #expectedHead: AuditHead | undefined;
  /** Index (among all events added) of the event at the expected head's sequence. */
  readonly #atHead: number;
  readonly #pinnedHash: string | undefined;
  #sequence: number;
  #prevHash: string;
  #count = 0;
  #last: AuditEvent | undefined;
  #headEvent: AuditEvent | undefined;
  #pinned: AuditHead | undefined;
  #broken: AuditLogBreak | undefined;

  /**
   * @param pinnedHash a hash kept from an earlier verification: `pinned` then names the first
   *   event of the chain that has it.
   */
  constructor(options: VerifyOptions = {}, pinnedHash?: string) {
    this.#sequence = options.from?.sequence ?? 0;
    this.#prevHash = options.from?.prevHash ?? GENESIS_HASH;
    // Checked: the index is added to, and "5" would make every index a string ("50").
    this.#firstIndex =
      options.firstIndex === undefined
        ? 0
        : assertInteger("firstIndex", options.firstIndex, 0, Number.MAX_SAFE_INTEGER);
    this.#expectedHead = options.expectedHead;
    this.#atHead = (options.expectedHead?.sequence ?? Number.NaN) - this.#sequence;
    this.#pinnedHash = pinnedHash;
  }

  /** Events added and found chained so far. */
  get count(): number {
    return this.#count;
  }

  /** The last event found chained: where the next part has to continue from. */
  get last(): AuditEvent | undefined {
    return this.#last;
  }

  /** The first event found chained whose hash is the pinned one. */
  get pinned(): AuditHead | undefined {
    return this.#pinned;
  }

  /**
   * Checks the next events. Returns the first break, once found (and from then on: nothing
   * after a break is checked).
   */
  add(events: readonly unknown[]): AuditLogBreak | undefined {
    if (this.#broken !== undefined) return this.#broken;
    for (let i = 0; i < events.length; i++) {
      const event = events[i] as Partial<AuditEvent> | null;
      const at = this.#count;
      if (typeof event !== "object" || event === null || typeof event.hash !== "string") {
        return this.#break(at, "malformed", (n) => `event ${n} is not an audit event`);
      }
      let computed: string;
      try {
        computed = hashEvent(event as AuditEvent);
      } catch {
        return this.#break(at, "malformed", (n) => `event ${n} cannot be serialized`);
      }
      if (computed !== event.hash) {
        return this.#break(
          at,
          "edited",
          (n) => `event ${n} was modified: its hash does not match its content`,
        );
      }
      if (event.prevHash !== this.#prevHash || event.sequence !== this.#sequence) {
        const expected = this.#sequence;
        return this.#break(
          at,
          "deleted-or-reordered",
          (n) =>
            `event ${n} (sequence ${String(event.sequence)}) does not follow the previous event (expected sequence ${expected}): events were deleted, inserted or reordered before it`,
        );
      }
      const chained = event as AuditEvent;
      this.#prevHash = chained.hash;
      this.#sequence++;
      this.#last = chained;
      if (at === this.#atHead) this.#headEvent = chained;
      if (this.#pinned === undefined && chained.hash === this.#pinnedHash) {
        this.#pinned = { sequence: chained.sequence, hash: chained.hash };
      }
      this.#count++;
    }
    return undefined;
  }

  /**
   * The verdict on everything added: the first break, or the checks against the expected head
   * (the trail reaches it, and the event at its sequence has its hash), then ok.
   */
  finish(): AuditLogVerification {
    if (this.#broken !== undefined) return this.#broken;
    const head = this.#expectedHead;
    const last = this.#last;
    if (head !== undefined) {
      if (last === undefined || last.sequence < head.sequence) {
        return this.#break(
          this.#count,
          "truncated",
          () =>
            `the log ends at sequence ${last?.sequence ?? -1} but the recorded head is ${head.sequence}: events were removed from the end`,
        );
      }
      // The chain may go on past the head (events appended since it was read), but the event at
      // the head's position must still be the one it recorded, or the tail was rewritten.
      if (this.#headEvent !== undefined && this.#headEvent.hash !== head.hash) {
        return this.#break(
          this.#atHead,
          "edited",
          (n) => `event ${n} does not match the recorded head`,
        );
      }
    }
    return {
      ok: true,
      count: this.#count,
      ...(last !== undefined ? { head: { sequence: last.sequence, hash: last.hash } } : {}),
    };
  }

  #break(at: number, problem: AuditLogProblem, message: (index: number) => string): AuditLogBreak {
    const index = this.#firstIndex + at;
    this.#broken = { ok: false, index, problem, message: message(index) };
    return this.#broken;
  }
}

/**
 * Checks a sequence of audit events (in the order a sink returned them).
 * Never throws for the events: any problem is reported with the index where it was found.
 * @throws ValidationException when `firstIndex` is not an integer from 0 up.
 */
export function verifyAuditLog(
  events: readonly unknown[],
  options: VerifyOptions = {},
): AuditLogVerification {
  const verifier = new AuditLogVerifier(options);
  return verifier.add(events) ?? verifier.finish();
}
