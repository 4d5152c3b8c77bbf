/**
 * Chains and writes audit events. Events recorded while a write is in flight are written
 * together in the next batch (group commit), so concurrent calls share one sink write; a call
 * is acknowledged only once the batch holding its event is written (fail-closed), or at once
 * when the user opted out (fail-open), in which case write failures go to `onError`.
 */
import { KmsInternalError } from "../errors.ts";
import { hashEvent } from "./audit-chain.ts";
import { type AuditEvent, type AuditSink, GENESIS_HASH } from "./audit-sink.ts";

export type UnchainedAuditEvent = Omit<AuditEvent, "sequence" | "prevHash" | "hash">;

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

export interface KeyLastUsage {
  readonly timestamp: Date;
  readonly operation: string;
  readonly eventId: string;
}

/** Operations that count as "using" a key for getKeyLastUsage (AWS: cryptographic ones). */
const USAGE_EVENTS = new Set([
  "Encrypt",
  "Decrypt",
  "ReEncrypt",
  "GenerateDataKey",
  "GenerateDataKeyWithoutPlaintext",
  "GenerateDataKeyPair",
  "GenerateDataKeyPairWithoutPlaintext",
  "Sign",
  "Verify",
  "GenerateMac",
  "VerifyMac",
  "DeriveSharedSecret",
]);

export class Auditor {
  readonly sink: AuditSink;
  readonly failClosed: boolean;
  readonly #onError: (error: unknown) => void;
  #queue: Pending[] = [];
  #writing = false;
  #head: { sequence: number; hash: string } | undefined;
  #usage: Map<string, KeyLastUsage> | undefined;

  constructor(sink: AuditSink, options: AuditorOptions = {}) {
    this.sink = sink;
    this.failClosed = options.failClosed ?? true;
    this.#onError = options.onError ?? (() => {});
  }

  /** Resolves once the event is written (fail-closed) or queued (fail-open). */
  record(event: UnchainedAuditEvent): Promise<void> {
    const written = new Promise<AuditEvent>((resolve, reject) => {
      this.#queue.push({ event, resolve, reject });
    });
    if (!this.#writing) void this.#drain();
    if (this.failClosed) return written.then(() => undefined);
    written.catch((error: unknown) => this.#onError(error));
    return Promise.resolve();
  }

  /** The newest written event's position and hash (for truncation checks). */
  async head(): Promise<{ sequence: number; hash: string } | undefined> {
    await this.#ensureHead();
    return this.#head?.sequence === -1 ? undefined : this.#head;
  }

  async #ensureHead(): Promise<void> {
    if (this.#head !== undefined) return;
    const last = await this.sink.last();
    this.#head = last === undefined ? { sequence: -1, hash: GENESIS_HASH } : last;
    this.#head = { sequence: this.#head.sequence, hash: this.#head.hash };
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        try {
          if (this.#head === undefined) await this.#ensureHead();
          let { sequence, hash } = this.#head!;
          const chained: AuditEvent[] = batch.map(({ event }) => {
            sequence++;
            const unhashed = { ...event, sequence, prevHash: hash };
            hash = hashEvent(unhashed);
            return { ...unhashed, hash };
          });
          await this.sink.write(chained);
          this.#head = { sequence, hash };
          for (const e of chained) this.#noteUsage(e);
          for (let i = 0; i < batch.length; i++) batch[i]!.resolve(chained[i]!);
        } catch (error) {
          // Nothing of the batch counts as written; the chain continues from the old head.
          this.#head = undefined;
          const failure = new KmsInternalError(
            `audit sink ${this.sink.description} could not record the call`,
            { cause: error },
          );
          for (const p of batch) p.reject(failure);
        }
      }
    } finally {
      this.#writing = false;
    }
  }

  #noteUsage(event: AuditEvent): void {
    if (this.#usage === undefined || event.errorCode !== undefined) return;
    if (!USAGE_EVENTS.has(event.eventName)) return;
    for (const r of event.resources) {
      this.#usage.set(r.ARN, {
        timestamp: new Date(event.eventTime),
        operation: event.eventName,
        eventId: event.eventID,
      });
    }
  }

  /** Last successful cryptographic use of a key (by ARN), from the trail. */
  async lastUsage(keyArn: string): Promise<KeyLastUsage | undefined> {
    if (this.#usage === undefined) {
      const usage = new Map<string, KeyLastUsage>();
      this.#usage = usage;
      for (const event of await this.sink.read()) this.#noteUsage(event);
    }
    return this.#usage.get(keyArn);
  }

  async close(): Promise<void> {
    while (this.#writing || this.#queue.length > 0) await new Promise((r) => setImmediate(r));
    await this.sink.close();
  }
}
