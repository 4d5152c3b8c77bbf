/**
 * The audit trail's storage contract. A sink stores events exactly as it receives them (the
 * hash chain covers every field, so a sink must not add, drop or reorder fields or events) and
 * returns them in the order they were written.
 *
 * Implementations: MemoryAuditSink and JsonlAuditSink (core), SqliteAuditSink
 * (@kms/keystore-sqlite), PostgresAuditSink (@kms/keystore-postgres), and any database-backed
 * sink built on this interface.
 */
import { KmsInternalError } from "../errors.ts";
import type { AuditHead } from "./audit-chain.ts";

/** A JSON value; audit events are plain JSON so that every sink can store them losslessly. */
export type AuditJsonValue =
  | string
  | number
  | boolean
  | null
  | readonly AuditJsonValue[]
  | { readonly [key: string]: AuditJsonValue };

export type AuditJsonObject = { readonly [key: string]: AuditJsonValue };

/**
 * Who made the call, in CloudTrail's `userIdentity` shape. A service event (`eventType`
 * AwsServiceEvent: work the KMS did on its own) names no principal, as CloudTrail records them:
 * `{ accountId, invokedBy: "AWS Internal" }`, without `type`, `principalId` and `arn`.
 */
export interface AuditUserIdentity {
  /** "Root", "IAMUser", "AssumedRole", "Principal" or "Service"; absent in a service event. */
  readonly type?: string;
  /** Absent in a service event. */
  readonly principalId?: string;
  /** The principal's ARN; absent in a service event. */
  readonly arn?: string;
  readonly accountId: string;
  /** The access key the call was signed with (`CallOptions.accessKeyId`), when it was. */
  readonly accessKeyId?: string;
  /** Service that called on the principal's behalf (kms:ViaService); "AWS Internal" in a service event. */
  readonly invokedBy?: string;
}

/** A resource the call touched, in CloudTrail's `resources` shape. */
export interface AuditResource {
  readonly accountId: string;
  readonly type: "AWS::KMS::Key";
  readonly ARN: string;
}

/**
 * One call to the KMS, shaped like a CloudTrail record for KMS. Request parameters never hold
 * plaintext, ciphertext or key material; encryption context is included (as in AWS) because
 * it is not secret.
 */
export interface AuditEvent {
  readonly eventVersion: "1.08";
  /** Position in this trail: 0 for the first event, +1 per event. */
  readonly sequence: number;
  readonly eventID: string;
  /** ISO-8601 UTC. */
  readonly eventTime: string;
  readonly eventSource: "kms.amazonaws.com";
  /** AWS operation name in PascalCase ("Encrypt", "CreateGrant"). */
  readonly eventName: string;
  readonly awsRegion: string;
  /** The caller's address when it gave one (`CallOptions.sourceIp`); "AWS Internal" in a service event. */
  readonly sourceIPAddress: string | null;
  readonly userIdentity: AuditUserIdentity;
  readonly requestParameters: AuditJsonObject | null;
  readonly responseElements: AuditJsonObject | null;
  /** AWS exception name when the call failed or was denied. */
  readonly errorCode?: string;
  readonly errorMessage?: string;
  readonly requestID: string;
  readonly readOnly: boolean;
  readonly resources: readonly AuditResource[];
  /**
   * "AwsServiceEvent" for work the KMS did on its own (a key destroyed at the end of its
   * deletion window, an automatic rotation, a record sealed on open), as CloudTrail marks them.
   */
  readonly eventType: "AwsApiCall" | "AwsServiceEvent";
  readonly managementEvent: boolean;
  readonly recipientAccountId: string;
  readonly eventCategory: "Management";
  /** E.g. `{ keyMaterialId, keyVersion }` for cryptographic operations. */
  readonly additionalEventData?: AuditJsonObject;
  /** `hash` of the previous event; 64 zeros for the first event of a trail. */
  readonly prevHash: string;
  /** Hex SHA-256 over the canonical serialization of every other field (see audit-chain.ts). */
  readonly hash: string;
}

export interface AuditReadOptions {
  /** Only events with `sequence > after`. */
  readonly after?: number;
  readonly limit?: number;
}

/** An event as the facade builds it, before the chain gives it sequence, prevHash and hash. */
export type UnchainedAuditEvent = Omit<AuditEvent, "sequence" | "prevHash" | "hash">;

/**
 * Where audit events are stored.
 *
 * A sink either leaves chaining to the Auditor (single writer: the Auditor keeps the chain head
 * in memory, so only one Kms may write the storage at a time), or offers the shared-chain
 * capability, `appendAndChain`, with which any number of Kms instances and processes write one
 * chain: the sink assigns positions and hashes itself, atomically against the head it stores.
 */
export interface AuditSink {
  /** Human-readable kind for messages ("memory", "jsonl:/path", "sqlite:/path"). */
  readonly description: string;
  /**
   * True when the sink drops its oldest events by design (a capped MemoryAuditSink): `verify()`
   * then checks the chain from the first event it still holds. Otherwise the trail must start
   * at sequence 0, so removing events from the front is reported like any other deletion.
   */
  readonly keepsWindow?: boolean;
  /**
   * Appends events in order. Resolves only once they are durable as far as the sink can
   * tell; rejects when any event could not be written (the KMS then fails the operations
   * whose events were in the batch, unless the user opted out of fail-closed auditing).
   */
  write(events: readonly AuditEvent[]): Promise<void>;
  /** Events in write order (ascending `sequence`). */
  read(options?: AuditReadOptions): Promise<readonly AuditEvent[]>;
  /**
   * Optional: what `read()` without options returns, in the same order, in pages of at most
   * `pageSize` events, each read when the caller asks for it. `kms.audit.verify()` reads through
   * it when a sink has it, else with `read({ after, limit })`, which selects events by their
   * sequence and so cannot see a stored event whose sequence was changed, or that has none, in
   * the middle of the trail (a file's line). A stored event it cannot parse fails the iteration
   * where that event is, after the page of the events before it.
   */
  readPages?(pageSize: number): AsyncIterable<readonly AuditEvent[]>;
  /** The last written event, so that a restarted KMS continues the hash chain. */
  last(): Promise<AuditEvent | undefined>;
  close(): Promise<void>;
  /**
   * Shared-chain capability (optional): chains `events` onto the head this sink stores and
   * appends them, atomically with respect to every other writer of the same storage. Inside
   * one transaction that holds a lock on the head, the sink reads the head, assigns sequence,
   * prevHash and hash with core's `chainAuditEvents` (never a hashing of its own), inserts the
   * events, moves the head and commits. Resolves with the chained events in the given order
   * once they are durable; rejects, having stored none of them, otherwise. When a sink has
   * it, the Auditor calls it instead of `write`.
   *
   * A sink with this capability must also make `write` accept only events that extend its
   * head (same checks as `assertExtendsAuditHead`), so that no writer can fork the chain.
   */
  appendAndChain?(events: readonly UnchainedAuditEvent[]): Promise<readonly AuditEvent[]>;
  /**
   * The head this sink recorded apart from the events (shared-chain sinks): the newest
   * sequence and hash ever appended, undefined for an empty trail. Verification compares the
   * trail with it, so events removed from the end are reported as truncation.
   */
  chainHead?(): Promise<AuditHead | undefined>;
}

/** prevHash of the first event of a trail. */
export const GENESIS_HASH = "0".repeat(64);

/**
 * The event a database sink stored as `text` (the JSON.stringify of the event, as written).
 * The chain hashes the parsed event, so a row re-spelled to parse to the same event (a member
 * given twice: JSON.parse keeps the last, other readers of the table may keep the first) would
 * verify: only the exact text a sink writes is accepted.
 * @throws KMSInternalException whose cause is a SyntaxError (readers such as `kms audit verify`
 *   tell a tampered row from a failed read by it) for text that is not JSON or not that text.
 */
export function parseStoredAuditEvent(text: string, description: string): AuditEvent {
  let event: unknown;
  try {
    event = JSON.parse(text);
  } catch (error) {
    // verifyAuditLog reports edited rows; a row that is not even JSON cannot be returned.
    throw new KmsInternalError(`${description}: a stored event is not JSON`, { cause: error });
  }
  if (JSON.stringify(event) !== text) {
    const sequence = (event as { sequence?: unknown } | null)?.sequence;
    const row = typeof sequence === "number" ? `at sequence ${sequence}` : "(without a sequence)";
    throw new KmsInternalError(
      `${description}: the stored event ${row} is not the text this sink writes for it (a member given twice, or changed spacing or escapes)`,
      { cause: new SyntaxError("not the JSON text this sink writes for the event") },
    );
  }
  return event as AuditEvent;
}
