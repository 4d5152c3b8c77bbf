/**
 * Builds the CloudTrail-shaped record of one call. Request and response are copied through a
 * filter that drops every binary value (plaintext, ciphertext, data keys, signatures) and every
 * field whose name marks it as secret, so no operation — including ones added later — can leak
 * them into the trail by accident.
 */
import { keyArn } from "../arn.ts";
import { parseBlob } from "../envelope/ciphertext-blob.ts";
import { isKmsError } from "../errors.ts";
import { setOwnMember } from "../internal/own-member.ts";
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
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : value.toISOString();
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return undefined;
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
    if (!callerNamed && SECRET_FIELDS.has(name)) continue;
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
    ...(call.viaService !== undefined ? { invokedBy: call.viaService } : {}),
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
