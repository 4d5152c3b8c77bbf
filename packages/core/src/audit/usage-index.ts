/**
 * Internal (not exported from the package): what a single-writer sink offers so that the
 * Auditor's key-usage index (what getKeyLastUsage answers from) survives a restart without
 * reading the whole trail again. The index is derived from the trail and anchored to one of its
 * events: a sink returns it only while the trail still holds that event where it was written,
 * and then the events after it, so that the index plus those events is what a read of the whole
 * trail would have given.
 */
import type { AuditHead } from "./audit-chain.ts";
import type { AuditEvent, AuditSink } from "./audit-sink.ts";

/** The member of a sink that keeps the index (JsonlAuditSink). */
export const USAGE_INDEX: unique symbol = Symbol("kms.auditUsageIndex");

/** A stored index and the trail after it. */
export interface ResumedUsageIndex {
  /** The event the index was built up to (included). */
  readonly head: AuditHead;
  /** What the Auditor saved; it checks the shape itself. */
  readonly data: unknown;
  /** The events after `head`, in write order, in pages. */
  readonly events: AsyncIterable<readonly AuditEvent[]>;
}

export interface UsageIndexStore {
  /**
   * Stores `data`, the index as of `head`, which must be the newest event of the trail (the
   * Auditor saves between its writes). Replaces the index stored before, atomically: a crash
   * leaves the old one or the new one. Stores nothing when the trail does not end with `head`.
   * @throws when the index could not be written (the Auditor ignores it: the index only saves
   *   time).
   */
  save(head: AuditHead, data: unknown): Promise<void>;
  /**
   * The stored index, if any and if the trail still holds its head event where it was when the
   * index was saved (same sequence, same hash); undefined otherwise (no index, an unreadable
   * one, a trail that was replaced, cut short or rotated).
   */
  resume(pageSize: number): Promise<ResumedUsageIndex | undefined>;
}

export function usageIndexOf(sink: AuditSink): UsageIndexStore | undefined {
  const store = (sink as { readonly [USAGE_INDEX]?: UsageIndexStore })[USAGE_INDEX];
  return typeof store === "object" && store !== null ? store : undefined;
}
