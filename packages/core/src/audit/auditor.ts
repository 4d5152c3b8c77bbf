/**
 * Chains and writes audit events. Events recorded while a write is in flight are written
 * together in the next batch (group commit), so concurrent calls share one sink write; a call
 * is acknowledged only once the batch holding its event is written (fail-closed), or at once
 * when the user opted out (fail-open), in which case write failures go to `onError`.
 *
 * Two ways to chain a batch:
 * - single writer (the sink has only `write`): the Auditor keeps the head in memory and chains
 *   the batch itself. Two Kms instances on one such sink would fork the chain.
 * - shared chain (the sink has `appendAndChain`): the sink chains the batch against the head it
 *   stores, under its own lock, so any number of instances and processes share one chain.
 */
import { KmsInternalError } from "../errors.ts";
import { type AuditHead, chainAuditEvents } from "./audit-chain.ts";
import { asRecorded } from "./audit-event.ts";
import type { UnchainedAuditEvent } from "./audit-sink.ts";
import { type AuditEvent, type AuditSink, GENESIS_HASH } from "./audit-sink.ts";
import { type UsageIndexStore, usageIndexOf } from "./usage-index.ts";

export type { UnchainedAuditEvent } from "./audit-sink.ts";

export interface AuditorOptions {
  /** Default true: an operation fails when its event cannot be written. */
  readonly failClosed?: boolean;
  /** Called with write failures in fail-open mode. */
  readonly onError?: (error: unknown) => void;
}

interface Pending {
  readonly event: UnchainedAuditEvent;
  readonly resolve: (written: AuditEvent) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * AWS's KeyLastUsageTrackingOperation values: the operations that count as using a key. Core
 * serves no Encapsulate or Decapsulate (ML-KEM), so those two never occur here; they are listed
 * so that the type is AWS's.
 */
const KEY_LAST_USAGE_OPERATIONS = [
  "Decapsulate",
  "Decrypt",
  "DeriveSharedSecret",
  "Encapsulate",
  "Encrypt",
  "GenerateDataKey",
  "GenerateDataKeyPair",
  "GenerateDataKeyPairWithoutPlaintext",
  "GenerateDataKeyWithoutPlaintext",
  "GenerateMac",
  "ReEncrypt",
  "Sign",
  "Verify",
  "VerifyMac",
] as const;

/** An operation getKeyLastUsage reports (AWS's KeyLastUsageTrackingOperation). */
export type KeyLastUsageOperation = (typeof KEY_LAST_USAGE_OPERATIONS)[number];

const USAGE_EVENTS: ReadonlySet<string> = new Set(KEY_LAST_USAGE_OPERATIONS);

function isUsageEvent(eventName: string): eventName is KeyLastUsageOperation {
  return USAGE_EVENTS.has(eventName);
}

/** The last successful cryptographic use of a key, from its audit event (AWS's KeyLastUsageData). */
export interface KeyLastUsage {
  readonly operation: KeyLastUsageOperation;
  /** The event's `eventTime`. */
  readonly timestamp: Date;
  /** The event's `eventID` (AWS: the CloudTrail event id). */
  readonly cloudTrailEventId: string;
  /** The event's `requestID`: the call's `CallOptions.requestId`, or the UUID core chose. */
  readonly kmsRequestId: string;
  /** @deprecated Use `cloudTrailEventId` (same value); kept for one release. */
  readonly eventId: string;
}

interface NotedUsage {
  readonly usage: KeyLastUsage;
  readonly sequence: number;
}

/** Events per page when the usage index is built from the trail: its memory stays bounded. */
const USAGE_PAGE = 1000;

/**
 * Events written after which a single-writer Auditor saves its usage index on a sink that keeps
 * one (JsonlAuditSink): a restarted Kms then reads at most about this many events of the trail,
 * not all of it (it is also saved once built, and on close).
 */
const USAGE_INDEX_EVERY = 10_000;

/** One saved index entry: [key ARN, sequence, operation, time (epoch ms), eventID, requestID]. */
type IndexEntry = readonly [string, number, KeyLastUsageOperation, number, string, string];

interface IndexData {
  /** Epoch ms of the oldest event noted, null before any. */
  readonly trackingStart: number | null;
  readonly usage: readonly IndexEntry[];
}

function isIndexEntry(value: unknown, head: number): value is IndexEntry {
  if (!Array.isArray(value) || value.length !== 6) return false;
  const [arn, sequence, operation, time, eventId, requestId] = value as unknown[];
  return (
    typeof arn === "string" &&
    Number.isSafeInteger(sequence) &&
    (sequence as number) <= head &&
    typeof operation === "string" &&
    isUsageEvent(operation) &&
    Number.isFinite(time) &&
    typeof eventId === "string" &&
    typeof requestId === "string"
  );
}

/** `data` as a saved index built up to sequence `head`, or undefined when it is not one. */
function indexDataOf(data: unknown, head: number): IndexData | undefined {
  if (typeof data !== "object" || data === null) return undefined;
  const { trackingStart, usage } = data as Record<string, unknown>;
  if (trackingStart !== null && !Number.isFinite(trackingStart)) return undefined;
  if (!Array.isArray(usage) || !usage.every((entry) => isIndexEntry(entry, head))) {
    return undefined;
  }
  return { trackingStart: trackingStart as number | null, usage: usage as IndexEntry[] };
}

/** What the trail tells about one key (see {@link Auditor.lastUsage}). */
export interface KeyUsageRecord {
  readonly usage: KeyLastUsage | undefined;
  /**
   * Time of the oldest event the answer was read from: uses before it are unknown. Undefined
   * while no event has been seen (an empty trail).
   */
  readonly trackingStart: Date | undefined;
}

export class Auditor {
  readonly sink: AuditSink;
  readonly failClosed: boolean;
  /** True when the sink chains events itself (`appendAndChain`), shared by many writers. */
  readonly sharedChain: boolean;
  readonly #onError: (error: unknown) => void;
  #queue: Pending[] = [];
  #writing = false;
  /** Single writer: the chain head. Shared chain: the head after this Auditor's last batch. */
  #head: { sequence: number; hash: string } | undefined;
  /** Counts the batches settled (written or failed): a head read across one is stale. */
  #headEpoch = 0;
  /** Each key's newest use by ARN, with the sequence of its event. */
  #usage: Map<string, NotedUsage> | undefined;
  /** Epoch ms of the oldest event noted in #usage. */
  #trackingStart: number | undefined;
  /**
   * Single writer: the one read that fills #usage, of the whole trail, or of the saved index
   * and the events after it.
   */
  #usageLoaded: Promise<void> | undefined;
  /** Single writer: #usage holds every event up to the head (the read above is done). */
  #usageComplete = false;
  /** Shared chain: the newest sequence whose usage is in #usage (others write too). */
  #usageSeen = -1;
  /** Single writer: where the sink keeps the usage index, if it does. */
  readonly #index: UsageIndexStore | undefined;
  /** Events in #usage that the saved index does not hold. */
  #unindexed = 0;
  /**
   * Set once a batch failed to write: lines of it may be in the file without being in #usage,
   * and an index saved after it would keep that difference past a restart, which reads the
   * trail again instead.
   */
  #indexStale = false;

  constructor(sink: AuditSink, options: AuditorOptions = {}) {
    this.sink = sink;
    this.failClosed = options.failClosed ?? true;
    this.#onError = options.onError ?? (() => {});
    this.sharedChain = typeof sink.appendAndChain === "function";
    this.#index = this.sharedChain ? undefined : usageIndexOf(sink);
  }

  /**
   * Resolves once the event is written (fail-closed) or queued (fail-open). A service event is
   * written in CloudTrail's shape for one (see asRecorded) whoever built it: here, where every
   * event enters the trail, no way of recording the KMS's own work can credit a principal.
   */
  record(event: UnchainedAuditEvent): Promise<void> {
    const written = new Promise<AuditEvent>((resolve, reject) => {
      this.#queue.push({ event: asRecorded(event), resolve, reject });
    });
    if (!this.#writing) void this.#drain();
    if (this.failClosed) return written.then(() => undefined);
    written.catch((error: unknown) => this.#onError(error));
    return Promise.resolve();
  }

  /**
   * The newest written event's position and hash (for truncation checks). Shared chain: the
   * head the sink recorded (other writers move it), or this Auditor's own newer one.
   */
  async head(): Promise<AuditHead | undefined> {
    if (this.sharedChain) {
      const recorded = await this.#recordedHead();
      const own = this.#head;
      if (own !== undefined && (recorded === undefined || own.sequence > recorded.sequence)) {
        return own;
      }
      return recorded;
    }
    await this.#ensureHead();
    return this.#head?.sequence === -1 ? undefined : this.#head;
  }

  async #recordedHead(): Promise<AuditHead | undefined> {
    if (typeof this.sink.chainHead === "function") return this.sink.chainHead();
    const last = await this.sink.last();
    return last === undefined ? undefined : { sequence: last.sequence, hash: last.hash };
  }

  /**
   * Reads the head from the sink when it is not known. `head()` may run this while a batch is
   * written: a read that started before the batch landed (or before it failed, leaving some of
   * its lines) must not replace what the write set, or the next batch would be chained again
   * from the older head and fork the trail. So it is kept only when no write settled during it.
   */
  async #ensureHead(): Promise<void> {
    while (this.#head === undefined) {
      const epoch = this.#headEpoch;
      const last = await this.sink.last();
      if (epoch !== this.#headEpoch) continue;
      this.#head =
        last === undefined
          ? { sequence: -1, hash: GENESIS_HASH }
          : { sequence: last.sequence, hash: last.hash };
    }
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        try {
          const chained = this.sharedChain
            ? await this.#appendShared(batch)
            : await this.#writeSingle(batch);
          const last = chained[chained.length - 1]!;
          this.#head = { sequence: last.sequence, hash: last.hash };
          this.#headEpoch++;
          for (let i = 0; i < batch.length; i++) batch[i]!.resolve(chained[i]!);
        } catch (error) {
          // Nothing of the batch counts as written; the chain continues from the old head.
          if (!this.sharedChain) {
            this.#head = undefined;
            this.#headEpoch++;
            this.#indexStale = true;
          }
          const failure = new KmsInternalError(
            `audit sink ${this.sink.description} could not record the call`,
            { cause: error },
          );
          for (const p of batch) p.reject(failure);
        }
        // Here, between writes, the trail ends with the head the index is saved at.
        if (this.#unindexed >= USAGE_INDEX_EVERY) await this.#saveIndex();
      }
    } finally {
      this.#writing = false;
    }
  }

  /**
   * Saves #usage as the sink's usage index, at the head. Only between writes (in #drain, or
   * when nothing is being written), so that the trail ends with the head and #usage holds every
   * event up to it.
   */
  async #saveIndex(): Promise<void> {
    const index = this.#index;
    const usage = this.#usage;
    if (index === undefined || usage === undefined || !this.#usageComplete) return;
    if (this.#indexStale) return;
    const noted = this.#unindexed;
    try {
      await this.#ensureHead();
      const head = this.#head;
      if (head === undefined || head.sequence < 0) return;
      const entries: IndexEntry[] = [];
      for (const [arn, { sequence, usage: u }] of usage) {
        entries.push([
          arn,
          sequence,
          u.operation,
          u.timestamp.getTime(),
          u.cloudTrailEventId,
          u.kmsRequestId,
        ]);
      }
      const data: IndexData = { trackingStart: this.#trackingStart ?? null, usage: entries };
      await index.save({ sequence: head.sequence, hash: head.hash }, data);
    } catch {
      // The index only saves a restarted Kms time: without it, that Kms reads more of the
      // trail, which stays what the answers come from.
    } finally {
      // Saved or not, tried again only after as many events again.
      this.#unindexed -= noted;
    }
  }

  /** Saves the index now unless a write is under way (#drain saves it then, when due). */
  async #saveIndexIdle(): Promise<void> {
    if (this.#writing || this.#unindexed === 0) return;
    this.#writing = true;
    try {
      await this.#saveIndex();
    } finally {
      this.#writing = false;
    }
    // Calls recorded while the index was being saved.
    if (this.#queue.length > 0) void this.#drain();
  }

  async #writeSingle(batch: readonly Pending[]): Promise<readonly AuditEvent[]> {
    if (this.#head === undefined) await this.#ensureHead();
    const chained = chainAuditEvents(
      this.#head,
      batch.map((p) => p.event),
    );
    await this.sink.write(chained);
    if (this.#usage !== undefined) {
      for (const e of chained) this.#noteUsage(e);
      if (this.#index !== undefined) this.#unindexed += chained.length;
    }
    return chained;
  }

  async #appendShared(batch: readonly Pending[]): Promise<readonly AuditEvent[]> {
    const chained = await this.sink.appendAndChain!(batch.map((p) => p.event));
    // A sink that answers for other events than it was given must not acknowledge anything.
    const matches =
      Array.isArray(chained) &&
      chained.length === batch.length &&
      chained.every((e, i) => e?.eventID === batch[i]!.event.eventID);
    if (!matches) {
      throw new KmsInternalError(
        `audit sink ${this.sink.description} returned events that do not match the batch`,
      );
    }
    return chained;
  }

  #noteUsage(event: AuditEvent): void {
    if (this.#usage === undefined) return;
    // The oldest by time, not the first noted: a write may be noted before the initial read ends.
    // Events come back from storage that others can write: a line that is not an event (which
    // verification reports) must not break getKeyLastUsage or move trackingStart to NaN.
    const time = Date.parse(event.eventTime);
    if (Number.isNaN(time)) return;
    if (this.#trackingStart === undefined || time < this.#trackingStart) this.#trackingStart = time;
    if (event.errorCode !== undefined || !isUsageEvent(event.eventName)) return;
    if (!Array.isArray(event.resources)) return;
    for (const r of event.resources) {
      if (typeof r?.ARN !== "string") continue;
      // Writes are noted as they land, so an initial read that was in flight during one may
      // bring older uses of the same key afterwards: they must not replace the newer one.
      const known = this.#usage.get(r.ARN);
      if (known !== undefined && known.sequence >= event.sequence) continue;
      this.#usage.set(r.ARN, {
        sequence: event.sequence,
        usage: {
          operation: event.eventName,
          timestamp: new Date(event.eventTime),
          cloudTrailEventId: event.eventID,
          kmsRequestId: event.requestID,
          eventId: event.eventID,
        },
      });
    }
  }

  /**
   * Last successful cryptographic use of a key (by ARN), from the trail, and since when the trail
   * is known: from the oldest event this Auditor has read or written, which for a sink that drops
   * old events (a capped MemoryAuditSink) can be later than the key's first use.
   */
  async lastUsage(keyArn: string): Promise<KeyUsageRecord> {
    if (this.sharedChain) {
      // Other writers use keys too: catch up with everything appended since the last look.
      this.#usage ??= new Map<string, NotedUsage>();
      const fresh = await this.sink.read({ after: this.#usageSeen });
      const first = fresh[0];
      if (first !== undefined && this.#usageSeen >= 0 && first.sequence > this.#usageSeen + 1) {
        // The sink dropped events this Auditor never read: a newer use may have been among them,
        // so what is known no longer says which use was the last. Start over from what is held.
        this.#usage.clear();
        this.#trackingStart = undefined;
      }
      for (const event of fresh) {
        this.#noteUsage(event);
        if (event.sequence > this.#usageSeen) this.#usageSeen = event.sequence;
      }
      return this.#record(keyArn);
    }
    // Concurrent first calls share one read: answering from the map while it is being filled
    // would report a used key as unused.
    this.#usageLoaded ??= this.#loadUsage();
    await this.#usageLoaded;
    return this.#record(keyArn);
  }

  /**
   * Fills #usage from the saved index and the events after it where the sink keeps one, else
   * from the whole trail; a page at a time either way, so that memory does not grow with the
   * trail. Then saves the index, so that the next start reads from here.
   */
  async #loadUsage(): Promise<void> {
    // Set before the read, so that writes landing during it are noted too.
    this.#usage = new Map<string, NotedUsage>();
    try {
      const resumed = await this.#index?.resume(USAGE_PAGE).catch(() => undefined);
      const saved = resumed && indexDataOf(resumed.data, resumed.head.sequence);
      if (saved !== undefined) this.#restore(saved);
      const pages = saved !== undefined && resumed !== undefined ? resumed.events : this.#trail();
      for await (const page of pages) {
        for (const event of page) this.#noteUsage(event);
        if (this.#index !== undefined) this.#unindexed += page.length;
      }
    } catch (error) {
      this.#usage = undefined;
      this.#trackingStart = undefined;
      this.#usageLoaded = undefined;
      this.#unindexed = 0;
      throw error;
    }
    this.#usageComplete = true;
    await this.#saveIndexIdle();
  }

  /** The whole trail, in pages where the sink reads in pages. */
  #trail(): AsyncIterable<readonly AuditEvent[]> {
    const sink = this.sink;
    if (typeof sink.readPages === "function") return sink.readPages(USAGE_PAGE);
    return (async function* () {
      yield await sink.read();
    })();
  }

  /** Merges a saved index into #usage (which may already hold writes newer than it). */
  #restore(saved: IndexData): void {
    const usage = this.#usage!;
    for (const [arn, sequence, operation, time, eventId, requestId] of saved.usage) {
      const known = usage.get(arn);
      if (known !== undefined && known.sequence >= sequence) continue;
      usage.set(arn, {
        sequence,
        usage: {
          operation,
          timestamp: new Date(time),
          cloudTrailEventId: eventId,
          kmsRequestId: requestId,
          eventId,
        },
      });
    }
    const start = saved.trackingStart;
    if (start !== null && (this.#trackingStart === undefined || start < this.#trackingStart)) {
      this.#trackingStart = start;
    }
  }

  /** Copies, so that a caller changing a returned Date does not change what the next call sees. */
  #record(keyArn: string): KeyUsageRecord {
    const usage = this.#usage?.get(keyArn)?.usage;
    return {
      usage: usage === undefined ? undefined : { ...usage, timestamp: new Date(usage.timestamp) },
      trackingStart: this.#trackingStart === undefined ? undefined : new Date(this.#trackingStart),
    };
  }

  async close(): Promise<void> {
    while (this.#writing || this.#queue.length > 0) await new Promise((r) => setImmediate(r));
    // The next start then reads none of the trail written since the last save.
    await this.#saveIndexIdle();
    await this.sink.close();
  }
}
