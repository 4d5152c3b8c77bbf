/**
 * The audit trail's storage contract. A sink stores events exactly as it receives them (the
 * hash chain covers every field, so a sink must not add, drop or reorder fields or events) and
 * returns them in the order they were written.
 *
 * Implementations: MemoryAuditSink and JsonlAuditSink (core), SqliteAuditSink
 * (@kms/keystore-sqlite), and any database-backed sink built on this interface.
 */

/** A JSON value; audit events are plain JSON so that every sink can store them losslessly. */
export type AuditJsonValue =
  | string
  | number
  | boolean
  | null
  | readonly AuditJsonValue[]
  | { readonly [key: string]: AuditJsonValue };

export type AuditJsonObject = { readonly [key: string]: AuditJsonValue };

/** Who made the call, in CloudTrail's `userIdentity` shape. */
export interface AuditUserIdentity {
  /** "IAMUser", "AWSAccount" (account root), "AWSService" or "Unknown". */
  readonly type: string;
  readonly principalId: string;
  readonly arn: string;
  readonly accountId: string;
  /** Service that called on the principal's behalf (kms:ViaService). */
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
  readonly eventType: "AwsApiCall";
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

export interface AuditSink {
  /** Human-readable kind for messages ("memory", "jsonl:/path", "sqlite:/path"). */
  readonly description: string;
  /**
   * Appends events in order. Resolves only once they are durable as far as the sink can
   * tell; rejects when any event could not be written (the KMS then fails the operations
   * whose events were in the batch, unless the user opted out of fail-closed auditing).
   */
  write(events: readonly AuditEvent[]): Promise<void>;
  /** Events in write order (ascending `sequence`). */
  read(options?: AuditReadOptions): Promise<readonly AuditEvent[]>;
  /** The last written event, so that a restarted KMS continues the hash chain. */
  last(): Promise<AuditEvent | undefined>;
  close(): Promise<void>;
}

/** prevHash of the first event of a trail. */
export const GENESIS_HASH = "0".repeat(64);
