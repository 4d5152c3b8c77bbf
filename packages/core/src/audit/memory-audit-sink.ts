import type { AuditEvent, AuditReadOptions, AuditSink } from "./audit-sink.ts";

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

export interface MemoryAuditSinkOptions {
  /** Keep only the newest events (default: all). Verify a window with `from` (see verifyAuditLog). */
  readonly maxEvents?: number;
}

/** Keeps events in memory: for tests and short-lived processes. */
export class MemoryAuditSink implements AuditSink {
  readonly description = "memory";
  readonly #events: AuditEvent[] = [];
  readonly #max: number;

  constructor(options: MemoryAuditSinkOptions = {}) {
    this.#max = options.maxEvents ?? Number.POSITIVE_INFINITY;
  }

  async write(events: readonly AuditEvent[]): Promise<void> {
    // Frozen, and copied on read: what the trail holds cannot be changed through a reference.
    for (const e of events) this.#events.push(deepFreeze(e));
    if (this.#events.length > this.#max) this.#events.splice(0, this.#events.length - this.#max);
  }

  async read(options: AuditReadOptions = {}): Promise<readonly AuditEvent[]> {
    const after = options.after ?? -1;
    const found = this.#events.filter((e) => e.sequence > after);
    return structuredClone(options.limit === undefined ? found : found.slice(0, options.limit));
  }

  async last(): Promise<AuditEvent | undefined> {
    const e = this.#events[this.#events.length - 1];
    return e === undefined ? undefined : structuredClone(e);
  }

  /** Synchronous snapshot, convenient in tests. */
  get events(): readonly AuditEvent[] {
    return structuredClone(this.#events);
  }

  async close(): Promise<void> {}
}
