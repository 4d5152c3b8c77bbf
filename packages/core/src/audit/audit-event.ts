/**
 * Builds the CloudTrail-shaped record of one call. Request and response are copied through a
 * filter that drops every binary value (plaintext, ciphertext, data keys, signatures, a peer's
 * public key), whatever JavaScript shape it arrives in, and every field whose name marks it as
 * secret, so no operation — including ones added later — can leak them into the trail by
 * accident.
 */
import { keyArn } from "../arn.ts";
import { parseBlob } from "../envelope/ciphertext-blob.ts";
import { isKmsError } from "../errors.ts";
import { setOwnMember } from "../internal/own-member.ts";
import type { Kms } from "../kms.ts";
import { GRANT_ID, retireGrantTarget } from "../operations/grants.ts";
import type { CallState } from "../policy/authorizer.ts";
import type { AuditJsonObject, AuditJsonValue, AuditUserIdentity } from "./audit-sink.ts";
import type { UnchainedAuditEvent } from "./auditor.ts";

/** Field names never copied into an event, whatever their type. */
const SECRET_FIELDS = new Set([
  "plaintext",
  "ciphertextblob",
  "ciphertextforrecipient",
  "privatekeyplaintext",
  "privatekeyciphertextblob",
  "sharedsecret",
  "keymaterial",
  "encryptedkeymaterial",
  "importtoken",
  "granttoken",
  "granttokens",
  "message",
  "signature",
  "mac",
  "rootkey",
  "wrappedmaterial",
]);

/**
 * Lower-cased names of the request members that hold bytes (AWS's blob members): never copied
 * into an event, whatever JavaScript type arrives in them. AWS records no blob of a KMS call,
 * and a caller that sends one as a `number[]`, a JSON-decoded Buffer or a base64 string is
 * refused (ValidationError), but its refused call is recorded with what it sent. The last two
 * are AWS members core does not serve (a Nitro Enclave's Recipient), listed so that a request
 * shaped for AWS leaves them out too.
 */
const BYTES_FIELD_NAMES = [
  "plaintext",
  "ciphertextblob",
  "message",
  "signature",
  "mac",
  "publickey",
  "attestationdocument",
] as const;

const BYTES_FIELDS: ReadonlySet<string> = new Set(BYTES_FIELD_NAMES);

type Bytes = ArrayBufferView | ArrayBuffer;

/** Names of the members of `T` (at any depth, in arrays too) whose type includes bytes. */
type BytesMembers<T, Depth extends readonly unknown[] = []> = Depth["length"] extends 6
  ? never
  : T extends Bytes | Date | ((...args: never[]) => unknown)
    ? never
    : T extends readonly (infer Item)[]
      ? BytesMembers<Item, [...Depth, unknown]>
      : T extends object
        ? {
            [K in keyof T & string]-?: [Extract<T[K], Bytes>] extends [never]
              ? BytesMembers<NonNullable<T[K]>, [...Depth, unknown]>
              : K;
          }[keyof T & string]
        : never;

type KmsMethod = {
  [K in keyof Kms & string]: Kms[K] extends (...args: never[]) => unknown ? K : never;
}[keyof Kms & string];

/** Every bytes member of every public Kms method's request. */
type RequestBytesMembers = {
  [M in KmsMethod]: BytesMembers<NonNullable<Parameters<Kms[M]>[0]>>;
}[KmsMethod];

type UnlistedBytesMember = Exclude<
  Lowercase<RequestBytesMembers>,
  (typeof BYTES_FIELD_NAMES)[number]
>;

type NoneLeft<T extends never> = T;

/**
 * Does not compile ("Type '"member"' does not satisfy the constraint 'never'") once a request of
 * Kms declares bytes in a member that BYTES_FIELD_NAMES does not list: an operation added later
 * cannot have its blob copied into the trail whenever it arrives as something else than a
 * Uint8Array.
 */
export type EveryRequestBytesMemberListed = NoneLeft<UnlistedBytesMember>;

/**
 * Fields whose members are named by the caller (an encryption context and the grant constraints
 * that hold one): their names say nothing about secrecy, and the whole map is recorded, as AWS
 * records it. Filtering them by SECRET_FIELDS left a context pair named "message" or
 * "signature" out of the event, so a trail could not tell what a call was bound to.
 */
const CALLER_NAMED_MAPS = new Set([
  "encryptioncontext",
  "sourceencryptioncontext",
  "destinationencryptioncontext",
  "encryptioncontextequals",
  "encryptioncontextsubset",
]);

const MAX_DEPTH = 6;

/**
 * Characters of text (member names and strings) one redacted request or response may put in an
 * event. Far above any valid request (a 32 KiB policy, an 8 KiB description), but failed and
 * refused calls are recorded with their requests too: without a bound, one call with a huge
 * string wrote that string to the trail (a line too long to read back, a batch whose hashing or
 * serialization failed for every call in it).
 */
const MAX_TEXT = 256 * 1024;

/** The longest request id recorded as given. */
const MAX_REQUEST_ID = 8 * 1024;

/** The longest error message recorded as given (messages may quote names from the request). */
const MAX_MESSAGE = 8 * 1024;

interface Budget {
  left: number;
}

/**
 * Items of one array looked at: holes count too, so that an array claiming 2^32 - 1 elements
 * costs no more than a short one.
 */
const MAX_ITEMS = 10_000;

/** `text`, or as much of it as `budget` allows with a note of its length. */
function bounded(text: string, budget: Budget): string {
  if (text.length <= budget.left) {
    budget.left -= text.length;
    return text;
  }
  const kept = text.slice(0, Math.max(0, budget.left));
  budget.left = 0;
  return `${kept}…[truncated from ${text.length} characters]`;
}

/** Whether an array index key: "0", "1", … (not "01", "-1", "1.5"). */
const INDEX = /^(?:0|[1-9]\d*)$/;

/**
 * Whether `value` is bytes in one of the shapes they take outside a Uint8Array: a typed array,
 * DataView or ArrayBuffer; a non-empty array of numbers only; a JSON-decoded Buffer
 * (`{ type: "Buffer", data: [...] }`); an array-like of numbers (the JSON of a Uint8Array,
 * `{ "0": 48, "1": 89, … }`, with or without `length`). No AWS KMS request or response member
 * is a list of numbers, so none of these is anything else than a blob there. Looks at no more
 * than MAX_ITEMS items, as `redact` does.
 */
function isBytesLike(value: object): boolean {
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return true;
  if (Array.isArray(value)) {
    const length = Math.min(value.length, MAX_ITEMS);
    if (length === 0) return false;
    for (let i = 0; i < length; i++) if (typeof value[i] !== "number") return false;
    return true;
  }
  const record = value as Record<string, unknown>;
  if (record.type === "Buffer" && Array.isArray(record.data)) return true;
  let indexes = 0;
  for (const [k, v] of Object.entries(record)) {
    if (k === "length" && typeof v === "number") continue;
    if (!INDEX.test(k) || typeof v !== "number") return false;
    if (++indexes >= MAX_ITEMS) break;
  }
  return indexes > 0;
}

/**
 * Copies JSON-able, non-secret parts of a value, within `budget` characters of text (strings
 * past it are cut with a note, members and items past it left out). `callerNamed`: the members
 * of this object are named by the caller (see CALLER_NAMED_MAPS), so none is dropped for its
 * name; their values are still filtered like any other.
 */
export function redact(
  value: unknown,
  depth = 0,
  callerNamed = false,
  budget: Budget = { left: MAX_TEXT },
): AuditJsonValue | undefined {
  // Every value costs one unit besides its text, so that no number of small values is free.
  budget.left--;
  if (value === null) return null;
  switch (typeof value) {
    case "string":
      return bounded(value, budget);
    case "boolean":
      return value;
    case "number":
      return Number.isFinite(value) ? value : null;
    case "object":
      break;
    default:
      return undefined;
  }
  if (depth >= MAX_DEPTH) return undefined;
  try {
    return redactObjectValue(value, depth, callerNamed, budget);
  } catch {
    // The request snapshot keeps class instances by reference, so a getter or Proxy trap of the
    // caller's runs here, after the call: when it threw, the event could not be built and the
    // call (a key scheduled for deletion included) left no trace in the trail.
    return UNREADABLE;
  }
}

/** What an event records for a value whose getter or Proxy trap threw when read. */
const UNREADABLE = "(unreadable)";

/** redact for an object under MAX_DEPTH; may throw where the caller's getters or traps do. */
function redactObjectValue(
  value: object,
  depth: number,
  callerNamed: boolean,
  budget: Budget,
): AuditJsonValue | undefined {
  if (value instanceof Date) {
    // Date's own methods: a caller's instance may override them with anything but a string.
    const time = Date.prototype.getTime.call(value);
    return Number.isNaN(time) ? null : new Date(time).toISOString();
  }
  if (isBytesLike(value)) return undefined;
  if (Array.isArray(value)) {
    const items: AuditJsonValue[] = [];
    const length = Math.min(value.length, MAX_ITEMS);
    for (let i = 0; i < length && budget.left > 0; i++) {
      const copied = redact(value[i], depth + 1, false, budget);
      if (copied !== undefined) items.push(copied);
    }
    return items;
  }
  const out: Record<string, AuditJsonValue> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (budget.left <= 0) break;
    const name = k.toLowerCase();
    if (!callerNamed && (SECRET_FIELDS.has(name) || BYTES_FIELDS.has(name))) continue;
    const key = bounded(k, budget);
    const copied = redact(v, depth + 1, !callerNamed && CALLER_NAMED_MAPS.has(name), budget);
    if (copied !== undefined) setOwnMember(out, key, copied);
  }
  return out;
}

function redactObject(value: unknown): AuditJsonObject | null {
  const copied = redact(value);
  return typeof copied === "object" && copied !== null && !Array.isArray(copied)
    ? (copied as AuditJsonObject)
    : null;
}

/** `encrypt` → `Encrypt`. */
export function eventNameOf(operation: string): string {
  return operation.charAt(0).toUpperCase() + operation.slice(1);
}

/**
 * Operations CloudTrail records as read-only: reads and cryptographic operations, which change
 * no key. DeriveSharedSecret is one (AWS records it like Sign and Decrypt), and its response
 * holds the shared secret, which the redaction drops anyway.
 */
const READ_ONLY =
  /^(list|describe|get|encrypt|decrypt|reEncrypt|generate|sign|verify|deriveSharedSecret|explain)/;

export function userIdentityOf(call: CallState): AuditUserIdentity {
  const p = call.principal;
  const type = /^arn:[^:]+:iam::\d{12}:root$/.test(p)
    ? "Root"
    : /:user\//.test(p)
      ? "IAMUser"
      : /:(assumed-)?role\//.test(p)
        ? "AssumedRole"
        : p.startsWith("arn:")
          ? "Principal"
          : "Service";
  return {
    type,
    principalId: p,
    arn: p,
    accountId: call.principalAccount,
    ...(call.accessKeyId !== undefined ? { accessKeyId: call.accessKeyId } : {}),
    ...(call.viaService !== undefined ? { invokedBy: call.viaService } : {}),
  };
}

/**
 * Who CloudTrail names for work AWS KMS does on its own (a DeleteKey at the end of a deletion
 * window, an automatic RotateKey): the account and "AWS Internal", no principal. Source: the
 * CloudTrail log entries for DeleteKey and RotateKey in the AWS KMS Developer Guide
 * (ct-delete-key.html, ct-rotatekey.html), which also record `sourceIPAddress` as "AWS Internal".
 */
const AWS_INTERNAL = "AWS Internal";

/**
 * `event` as CloudTrail records a service event (`eventType` AwsServiceEvent): under the
 * account, invoked by AWS itself, from no address. Such work is the KMS's, not a caller's, even
 * when it happens inside a call (its `requestID` tells which), so naming the default principal,
 * or the caller's address, would credit someone who did not do it. Other events are returned as
 * they are.
 */
export function asRecorded(event: UnchainedAuditEvent): UnchainedAuditEvent {
  if (event.eventType !== "AwsServiceEvent") return event;
  return {
    ...event,
    userIdentity: { accountId: event.recipientAccountId, invokedBy: AWS_INTERNAL },
    sourceIPAddress: AWS_INTERNAL,
  };
}

/**
 * The key version a symmetric ciphertext blob names. `algorithm` is the request's algorithm for
 * that ciphertext: an asymmetric one (RSAES_OAEP_*) is raw RSA output with no header, whose
 * bytes may happen to parse as one and name a version that means nothing.
 */
function keyVersionOf(blob: unknown, algorithm: unknown): number | undefined {
  if (algorithm !== undefined && algorithm !== "SYMMETRIC_DEFAULT") return undefined;
  if (!(blob instanceof Uint8Array)) return undefined;
  try {
    return parseBlob(blob).keyVersion;
  } catch {
    return undefined;
  }
}

function additionalData(call: CallState, response: unknown): AuditJsonObject | undefined {
  const data: Record<string, AuditJsonValue> = {};
  const res = (typeof response === "object" && response !== null ? response : {}) as Record<
    string,
    unknown
  >;
  const req = (
    typeof call.request === "object" && call.request !== null ? call.request : {}
  ) as Record<string, unknown>;
  const reEncrypt = call.operation === "reEncrypt";
  const written = keyVersionOf(
    res.ciphertextBlob,
    reEncrypt ? req.destinationEncryptionAlgorithm : req.encryptionAlgorithm,
  );
  if (written !== undefined) data.keyVersion = written;
  const read = keyVersionOf(
    req.ciphertextBlob,
    reEncrypt ? req.sourceEncryptionAlgorithm : req.encryptionAlgorithm,
  );
  if (read !== undefined) data.sourceKeyVersion = read;
  if (typeof res.keyMaterialId === "string") data.keyMaterialId = res.keyMaterialId;
  if (typeof res.sourceKeyMaterialId === "string") {
    data.sourceKeyMaterialId = res.sourceKeyMaterialId;
  }
  if (typeof res.destinationKeyMaterialId === "string") {
    data.destinationKeyMaterialId = res.destinationKeyMaterialId;
  }
  if (call.operation === "retireGrant") {
    // The grant token is secret and dropped from requestParameters; the grant id it names is
    // not, and is what AWS records (additionalEventData.grantId). Nothing else a token carries
    // is recorded.
    const { grantId } = retireGrantTarget(req);
    if (grantId !== undefined && GRANT_ID.test(grantId)) data.grantId = grantId;
  }
  if (call.decisions.length > 0) {
    // Compact: the key ARNs are in `resources`; the action tells ReEncryptFrom from To.
    data.authorization = call.decisions.map((d) => ({
      action: d.action,
      decision: d.decision.reason,
      ...(d.decision.statement !== undefined
        ? {
            statement: d.decision.statement.index,
            ...(d.decision.statement.sid !== undefined ? { sid: d.decision.statement.sid } : {}),
          }
        : {}),
      ...(d.decision.grantId !== undefined ? { grantId: d.decision.grantId } : {}),
    }));
  }
  return Object.keys(data).length === 0 ? undefined : data;
}

/**
 * The call's request id as the event records it. `CallOptions.requestId` comes from the caller
 * untyped at runtime: a BigInt made hashing throw and failed every call of the group-commit
 * batch, other callers' included, and an object with `toJSON` (a Date) was hashed as `{}` but
 * stored as its JSON, so the event read back as edited and verification stopped there.
 */
function requestIdOf(call: CallState): string {
  const id: unknown = call.requestId;
  return typeof id === "string" ? bounded(id, { left: MAX_REQUEST_ID }) : "(invalid requestId)";
}

export function buildAuditEvent(
  call: CallState,
  outcome: { readonly response?: unknown; readonly error?: unknown },
): UnchainedAuditEvent {
  const identity = call.settings.identity;
  const error = outcome.error;
  const extra = additionalData(call, outcome.response);
  const readOnly = READ_ONLY.test(call.operation);
  return {
    eventVersion: "1.08",
    eventID: globalThis.crypto.randomUUID(),
    eventTime: new Date(call.now).toISOString(),
    eventSource: "kms.amazonaws.com",
    eventName: eventNameOf(call.operation),
    awsRegion: identity.region,
    sourceIPAddress: call.sourceIp ?? null,
    userIdentity: userIdentityOf(call),
    requestParameters: redactObject(call.request),
    responseElements: error !== undefined || readOnly ? null : redactObject(outcome.response),
    ...(error !== undefined
      ? {
          errorCode: isKmsError(error) ? error.code : "KMSInternalException",
          errorMessage: isKmsError(error)
            ? bounded(error.message, { left: MAX_MESSAGE })
            : "internal error",
        }
      : {}),
    requestID: requestIdOf(call),
    readOnly,
    resources: [...call.keys.keys()].map((keyId) => ({
      accountId: identity.account,
      type: "AWS::KMS::Key" as const,
      ARN: keyArn(identity, keyId),
    })),
    eventType: "AwsApiCall",
    // CloudTrail records every AWS KMS call, Decrypt and Sign included, as a management event
    // (eventCategory Management, which trails can exclude as "AWS KMS events"): readOnly is what
    // separates the data-plane reads.
    managementEvent: true,
    recipientAccountId: identity.account,
    eventCategory: "Management",
    ...(extra !== undefined ? { additionalEventData: extra } : {}),
  };
}
