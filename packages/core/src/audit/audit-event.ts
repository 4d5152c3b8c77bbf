/**
 * Builds the CloudTrail-shaped record of one call. Request and response are copied through a
 * filter that drops every binary value (plaintext, ciphertext, data keys, signatures) and every
 * field whose name marks it as secret, so no operation — including ones added later — can leak
 * them into the trail by accident.
 */
import { keyArn } from "../arn.ts";
import { parseBlob } from "../envelope/ciphertext-blob.ts";
import { isKmsError } from "../errors.ts";
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

const MAX_DEPTH = 6;

/** Copies JSON-able, non-secret parts of a value. */
export function redact(value: unknown, depth = 0): AuditJsonValue | undefined {
  if (value === null) return null;
  switch (typeof value) {
    case "string":
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
    return value.map((v) => redact(v, depth + 1)).filter((v) => v !== undefined);
  }
  const out: Record<string, AuditJsonValue> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (SECRET_FIELDS.has(k.toLowerCase())) continue;
    const copied = redact(v, depth + 1);
    if (copied === undefined) continue;
    if (k === "__proto__") {
      // Assigning would set out's prototype (or do nothing) and leave the member out of the
      // event: an encryption-context key "__proto__" (parsed from JSON) went unrecorded.
      Object.defineProperty(out, k, {
        value: copied,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    } else {
      out[k] = copied;
    }
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

const READ_ONLY = /^(list|describe|get|encrypt|decrypt|reEncrypt|generate|sign|verify|explain)/;

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

function keyVersionOf(blob: unknown): number | undefined {
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
  const written = keyVersionOf(res.ciphertextBlob);
  if (written !== undefined) data.keyVersion = written;
  const read = keyVersionOf(req.ciphertextBlob);
  if (read !== undefined) data.sourceKeyVersion = read;
  if (typeof res.keyMaterialId === "string") data.keyMaterialId = res.keyMaterialId;
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

export function buildAuditEvent(
  call: CallState,
  outcome: { readonly response?: unknown; readonly error?: unknown },
): UnchainedAuditEvent {
  const identity = call.settings.identity;
  const error = outcome.error;
  const extra = additionalData(call, outcome.response);
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
    responseElements:
      error !== undefined || READ_ONLY.test(call.operation) ? null : redactObject(outcome.response),
    ...(error !== undefined
      ? {
          errorCode: isKmsError(error) ? error.code : "KMSInternalException",
          errorMessage: isKmsError(error) ? error.message : "internal error",
        }
      : {}),
    requestID: call.requestId,
    readOnly: READ_ONLY.test(call.operation),
    resources: [...call.keys.keys()].map((keyId) => ({
      accountId: identity.account,
      type: "AWS::KMS::Key" as const,
      ARN: keyArn(identity, keyId),
    })),
    eventType: "AwsApiCall",
    managementEvent: !READ_ONLY.test(call.operation),
    recipientAccountId: identity.account,
    eventCategory: "Management",
    ...(extra !== undefined ? { additionalEventData: extra } : {}),
  };
}
