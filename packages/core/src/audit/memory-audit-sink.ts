import { type AuditHead, assertExtendsAuditHead, chainAuditEvents } from "./audit-chain.ts";
import type { AuditEvent, AuditReadOptions, AuditSink, UnchainedAuditEvent } from "./audit-sink.ts";

export interface MemoryAuditSinkOptions {
  /** Keep only the newest events (default: all). Verify a window with `from` (see verifyAuditLog). */
  readonly maxEvents?: number;
}

/**
 * Keeps events in memory: for tests and short-lived processes. A shared-chain sink: several Kms
 * instances of one process may write to the same MemoryAuditSink and keep one intact chain.
 */
export class MemoryAuditSink implements AuditSink {
  readonly description = "memory";
  readonly keepsWindow: boolean;
  readonly #events: AuditEvent[] = [];
  readonly #max: number;
  readonly #slack: number;
  #head: AuditHead | undefined;
  /** Appends run one after another: `write` may be asynchronous (e.g. in a subclass). */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(options: MemoryAuditSinkOptions = {}) {
    this.#max = options.maxEvents ?? Number.POSITIVE_INFINITY;
    this.keepsWindow = Number.isFinite(this.#max);
    this.#slack = Number.isFinite(this.#max) ? Math.max(64, Math.ceil(this.#max / 4)) : 0;
  }

  /** @throws KMSInternalException when the events do not extend the chain head. */
  async write(events: readonly AuditEvent[]): Promise<void> {
    assertExtendsAuditHead(this.#head, events, this.description);
    // Copied on read (structuredClone), so callers never hold a reference into the trail.
    for (const e of events) this.#events.push(e);
    const last = events[events.length - 1];
    if (last !== undefined) this.#head = { sequence: last.sequence, hash: last.hash };
    // Trimming one event per write shifts the whole array every call once the cap is reached;
    // trimming in slack-sized steps keeps writes O(1) amortized. Reads see only the newest max.
    if (this.#events.length > this.#max + this.#slack) {
      this.#events.splice(0, this.#events.length - this.#max);
    }
  }

  /** The events a reader may see: the newest `maxEvents`. */
  #visible(): AuditEvent[] {
    const excess = this.#events.length - this.#max;
    return excess > 0 ? this.#events.slice(excess) : this.#events;
  }

  /** Chains `events` after the head and writes them; concurrent calls queue. */
  appendAndChain(events: readonly UnchainedAuditEvent[]): Promise<readonly AuditEvent[]> {
    const appended = this.#tail.then(async () => {
      const chained = chainAuditEvents(this.#head, events);
      await this.write(chained);
      return chained;
    });
    this.#tail = appended.catch(() => undefined);
    return appended;
  }

  async chainHead(): Promise<AuditHead | undefined> {
    return this.#head === undefined ? undefined : { ...this.#head };
  }

  async read(options: AuditReadOptions = {}): Promise<readonly AuditEvent[]> {
    const after = options.after ?? -1;
    const found = this.#visible().filter((e) => e.sequence > after);
    return structuredClone(options.limit === undefined ? found : found.slice(0, options.limit));
  }

  /**
   * The events `read()` returns (those held when the first page is asked for), in copied pages:
   * the copies of a whole read would double the trail's memory.
   */
  async *readPages(pageSize: number): AsyncGenerator<readonly AuditEvent[]> {
    const held = this.#visible().filter((e) => e.sequence > -1);
    for (let i = 0; i < held.length; i += pageSize) {
      yield structuredClone(held.slice(i, i + pageSize));
    }
  }

  async last(): Promise<AuditEvent | undefined> {
    const e = this.#events[this.#events.length - 1];
    return e === undefined ? undefined : structuredClone(e);
  }

  /** Synchronous snapshot, convenient in tests. */
  get events(): readonly AuditEvent[] {
    return structuredClone(this.#visible());
  }

  async close(): Promise<void> {}
}
