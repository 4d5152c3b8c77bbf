/**
 * AWS Signature Version 4 verification, Authorization-header form only, for the `kms` service.
 * Canonical request, string to sign and signing key follow the SigV4 specification
 * (docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html) as the AWS SDK for
 * JavaScript computes them for non-S3 services. Only node:crypto is used.
 */
import {
  createHash,
  createHmac,
  createSecretKey,
  type KeyObject,
  timingSafeEqual,
} from "node:crypto";
import { KmsInternalError } from "@kms/core";
import type { ServerCredential } from "../options.ts";
import type { AllowedHosts } from "./allowed-hosts.ts";
import { MESSAGES, ProtocolError } from "./protocol-error.ts";
import type { RequestHeaders } from "./request-headers.ts";

export const ALGORITHM = "AWS4-HMAC-SHA256";
export const SERVICE = "kms";
const TERMINATOR = "aws4_request";

/**
 * Headers a signature must cover. `host` and `x-amz-date` as SigV4 requires; `x-amz-target` and
 * `content-type` because they choose the operation and how the body is read: a signature that
 * does not cover them could be replayed as another operation with the same body.
 */
export const REQUIRED_SIGNED_HEADERS: readonly string[] = [
  "content-type",
  "host",
  "x-amz-date",
  "x-amz-target",
];

/**
 * AWS's bound on access key ids (IAM: 16–128 characters). An id past it is refused before the
 * credentials lookup runs, so a lookup function never receives a huge attacker-chosen string.
 */
export const MAX_ACCESS_KEY_ID_LENGTH = 128;

/** Query parameters of presigned (query-string) authentication, which is not supported. */
const PRESIGN_PARAMETERS = ["x-amz-algorithm", "x-amz-credential", "x-amz-signature"];

export interface RequestHead {
  readonly method: string;
  /** Path as received, percent-encoded as the client sent it, without the query. */
  readonly rawPath: string;
  /** Query as received, without the `?`; empty when there is none. */
  readonly rawQuery: string;
  readonly headers: RequestHeaders;
}

export interface VerifierSettings {
  readonly region: string;
  readonly clockSkewMs: number;
  readonly now: () => number;
  readonly lookup: (accessKeyId: string) => Promise<ServerCredential | undefined>;
  /** The `Host` values a request may carry; undefined to accept any. */
  readonly allowedHosts: AllowedHosts | undefined;
}

export interface VerifiedCaller {
  readonly accessKeyId: string;
  readonly principal: string;
}

interface ParsedAuthorization {
  readonly accessKeyId: string;
  readonly scopeDate: string;
  readonly scopeRegion: string;
  readonly scopeService: string;
  readonly scopeTerminator: string;
  readonly signedHeaders: readonly string[];
  readonly signature: string;
}

/** What the headers alone establish: a well-formed, current claim by a known access key. */
export interface SignatureClaim {
  readonly head: RequestHead;
  readonly auth: ParsedAuthorization;
  readonly amzDate: string;
  readonly query: readonly [string, string][];
  readonly credential: ServerCredential;
}

/**
 * Every check of the request's SigV4 signature that needs no body: run before the body is read,
 * so that a client without a known access key id is answered from its headers and never makes
 * the server hold a body. `verifySignature` finishes the check once the body is in.
 * @throws ProtocolError: MissingAuthenticationTokenException (no Authorization header),
 *   IncompleteSignatureException (malformed header, missing X-Amz-Date, presigned URL),
 *   UnrecognizedClientException (unknown access key id, any X-Amz-Security-Token),
 *   InvalidSignatureException (wrong scope, unsigned required header, a Host not in
 *   `allowedHosts`, stale or future date).
 */
export async function checkSignatureClaim(
  request: RequestHead,
  settings: VerifierSettings,
): Promise<SignatureClaim> {
  const { headers } = request;
  const query = parseQuery(request.rawQuery);
  if (query.some(([name]) => PRESIGN_PARAMETERS.includes(name.toLowerCase()))) {
    throw new ProtocolError(
      "IncompleteSignatureException",
      "query-string (presigned) authentication is not supported: sign the Authorization header",
    );
  }
  const authorization = headers.one("authorization");
  if (authorization === undefined) {
    throw new ProtocolError("MissingAuthenticationTokenException", MESSAGES.missingToken);
  }
  if (headers.has("x-amz-security-token")) {
    throw new ProtocolError(
      "UnrecognizedClientException",
      `${MESSAGES.unknownKey} This server does not accept session tokens (X-Amz-Security-Token).`,
    );
  }
  const auth = parseAuthorization(authorization);

  const amzDate = headers.one("x-amz-date");
  if (amzDate === undefined) {
    throw new ProtocolError(
      "IncompleteSignatureException",
      "Authorization header requires existence of an 'X-Amz-Date' header",
    );
  }
  const signedAt = parseAmzDate(amzDate);

  if (auth.scopeTerminator !== TERMINATOR) {
    throw new ProtocolError(
      "InvalidSignatureException",
      `Credential should be scoped with a valid terminator: '${TERMINATOR}'.`,
    );
  }
  if (auth.scopeService !== SERVICE) {
    throw new ProtocolError(
      "InvalidSignatureException",
      `Credential should be scoped to correct service: '${SERVICE}'.`,
    );
  }
  if (auth.scopeRegion !== settings.region) {
    throw new ProtocolError(
      "InvalidSignatureException",
      `Credential should be scoped to a valid region: '${settings.region}'.`,
    );
  }
  if (auth.scopeDate !== amzDate.slice(0, 8)) {
    throw new ProtocolError(
      "InvalidSignatureException",
      "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.",
    );
  }
  for (const name of REQUIRED_SIGNED_HEADERS) {
    if (!auth.signedHeaders.includes(name)) {
      throw new ProtocolError(
        "InvalidSignatureException",
        `'${name}' must be a SignedHeader in the AWS Authorization.`,
      );
    }
  }
  for (const name of auth.signedHeaders) {
    if (!headers.has(name)) {
      throw new ProtocolError(
        "InvalidSignatureException",
        `the signed header '${name}' is not in the request`,
      );
    }
  }
  // After the loops above, so that the Host compared is the one the signature covers; before the
  // lookup, so that a request meant for another server never reaches a credentials function.
  // InvalidSignatureException, as for a scope naming another region: the signature was made for
  // another endpoint. Not AccessDeniedException, which reads as a key policy's decision (and is
  // audited when core raises it); not UnrecognizedClientException, as the access key may be good.
  if (settings.allowedHosts !== undefined && !settings.allowedHosts.accepts(headers.one("host")!)) {
    throw new ProtocolError(
      "InvalidSignatureException",
      "The request is signed for a host this server does not answer to: its Host header is not " +
        "one of the server's allowedHosts.",
    );
  }

  const now = settings.now();
  // NaN compares false both ways: a clock that returns no number would admit any date.
  if (typeof now !== "number" || !Number.isFinite(now)) {
    throw new KmsInternalError("the server's clock (now) did not return milliseconds");
  }
  // X-Amz-Date is truncated to the second, so the clock is too: compared to the millisecond, a
  // request signed at 12:00:00.900 (dated 12:00:00) would begin 900 ms into its window.
  const second = Math.floor(now / 1000) * 1000;
  if (signedAt < second - settings.clockSkewMs) {
    throw new ProtocolError(
      "InvalidSignatureException",
      `Signature expired: ${amzDate} is now earlier than ${formatAmzDate(second - settings.clockSkewMs)} ` +
        `(${formatAmzDate(second)} - ${describeSkew(settings.clockSkewMs)})`,
    );
  }
  if (signedAt > second + settings.clockSkewMs) {
    throw new ProtocolError(
      "InvalidSignatureException",
      `Signature not yet current: ${amzDate} is still later than ` +
        `${formatAmzDate(second + settings.clockSkewMs)} (${formatAmzDate(second)} + ${describeSkew(settings.clockSkewMs)})`,
    );
  }

  const credential = await settings.lookup(auth.accessKeyId);
  if (credential === undefined) {
    throw new ProtocolError("UnrecognizedClientException", MESSAGES.unknownKey);
  }
  return { head: request, auth, amzDate, query, credential };
}

/**
 * Finishes what `checkSignatureClaim` began: the body's hash, then the signature, and returns who
 * signed the request.
 * @throws ProtocolError InvalidSignatureException (body hash mismatch, wrong signature).
 */
export function verifySignature(claim: SignatureClaim, body: Uint8Array): VerifiedCaller {
  const { head: request, auth, amzDate, query, credential } = claim;
  const { headers } = request;
  const payloadHash = sha256Hex(body);
  const declaredHash = headers.one("x-amz-content-sha256");
  if (declaredHash !== undefined && declaredHash !== payloadHash) {
    throw new ProtocolError(
      "InvalidSignatureException",
      "The provided 'x-amz-content-sha256' header does not match what was computed.",
    );
  }

  const canonical = canonicalRequest({
    method: request.method,
    canonicalUri: canonicalUri(request.rawPath),
    canonicalQuery: canonicalQuery(query),
    headers: auth.signedHeaders.map((name) => [name, canonicalHeaderValue(headers.all(name))]),
    payloadHash,
  });
  const scope = `${auth.scopeDate}/${auth.scopeRegion}/${auth.scopeService}/${TERMINATOR}`;
  const expected = hmac(
    signingKey(credential.secretAccessKey, auth.scopeDate, auth.scopeRegion, auth.scopeService),
    stringToSign(amzDate, scope, canonical),
  );
  // Both sides are 32 bytes: parseAuthorization admits only 64 hex digits.
  if (!timingSafeEqual(expected, Buffer.from(auth.signature, "hex"))) {
    throw new ProtocolError("InvalidSignatureException", MESSAGES.badSignature);
  }
  return { accessKeyId: auth.accessKeyId, principal: credential.principal };
}

function incomplete(detail: string): ProtocolError {
  return new ProtocolError("IncompleteSignatureException", `Authorization header: ${detail}`);
}

/** `AWS4-HMAC-SHA256 Credential=<akid>/<date>/<region>/<service>/aws4_request, SignedHeaders=…, Signature=…` */
export function parseAuthorization(value: string): ParsedAuthorization {
  const space = value.indexOf(" ");
  const algorithm = space < 0 ? value : value.slice(0, space);
  if (algorithm !== ALGORITHM) {
    throw incomplete(`the algorithm must be ${ALGORITHM}`);
  }
  const params = new Map<string, string>();
  for (const part of value.slice(space + 1).split(",")) {
    const item = part.trim();
    const eq = item.indexOf("=");
    const name = eq < 0 ? item : item.slice(0, eq);
    if (name !== "Credential" && name !== "SignedHeaders" && name !== "Signature") {
      throw incomplete("expected exactly the parameters Credential, SignedHeaders and Signature");
    }
    if (eq < 0 || params.has(name)) {
      throw incomplete(`the '${name}' parameter must appear once, with a value`);
    }
    params.set(name, item.slice(eq + 1));
  }
  const credential = params.get("Credential");
  const signedHeaders = params.get("SignedHeaders");
  const signature = params.get("Signature");
  if (credential === undefined || signedHeaders === undefined || signature === undefined) {
    throw incomplete("requires the 'Credential', 'SignedHeaders' and 'Signature' parameters");
  }
  const scope = credential.split("/");
  if (
    scope.length !== 5 ||
    scope.some((s) => s.length === 0) ||
    scope[0]!.length > MAX_ACCESS_KEY_ID_LENGTH
  ) {
    throw incomplete(
      "'Credential' must be <access key id>/<yyyymmdd>/<region>/<service>/aws4_request",
    );
  }
  const names = signedHeaders.split(";");
  for (let i = 0; i < names.length; i++) {
    if (!/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(names[i]!) || (i > 0 && names[i - 1]! >= names[i]!)) {
      throw incomplete("'SignedHeaders' must be lowercase header names, sorted, each once");
    }
  }
  if (!/^[0-9a-f]{64}$/.test(signature)) {
    throw incomplete("'Signature' must be 64 lowercase hexadecimal digits");
  }
  return {
    accessKeyId: scope[0]!,
    scopeDate: scope[1]!,
    scopeRegion: scope[2]!,
    scopeService: scope[3]!,
    scopeTerminator: scope[4]!,
    signedHeaders: names,
    signature,
  };
}

/** `YYYYMMDDTHHMMSSZ` → epoch milliseconds. */
export function parseAmzDate(value: string): number {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  const time = m ? Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!) : Number.NaN;
  if (!m || Number.isNaN(time) || formatAmzDate(time) !== value) {
    throw new ProtocolError(
      "IncompleteSignatureException",
      "X-Amz-Date must be an ISO-8601 basic date and time in UTC (YYYYMMDD'T'HHMMSS'Z')",
    );
  }
  return time;
}

export function formatAmzDate(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
}

function describeSkew(ms: number): string {
  const seconds = Math.round(ms / 1000);
  return seconds % 60 === 0 ? `${seconds / 60} min.` : `${seconds} s`;
}

/** RFC 3986 unreserved characters stay; everything else is percent-encoded (as the AWS SDK). */
export function uriEscape(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * The canonical URI of a non-S3 request: empty, `.` and `..` segments normalized away, then each
 * segment URI-encoded once more (the path arrives already encoded, so this is SigV4's "encode
 * twice").
 */
export function canonicalUri(rawPath: string): string {
  const segments: string[] = [];
  for (const segment of rawPath.split("/")) {
    if (segment.length === 0 || segment === ".") continue;
    if (segment === "..") segments.pop();
    else segments.push(segment);
  }
  const trailing = segments.length > 0 && rawPath.endsWith("/") ? "/" : "";
  const path = `${rawPath.startsWith("/") ? "/" : ""}${segments.join("/")}${trailing}`;
  return uriEscape(path).replace(/%2F/g, "/");
}

/** Name/value pairs of a raw query string, percent-decoded. */
export function parseQuery(rawQuery: string): [string, string][] {
  const pairs: [string, string][] = [];
  for (const part of rawQuery.split("&")) {
    if (part.length === 0) continue;
    const eq = part.indexOf("=");
    try {
      pairs.push(
        eq < 0
          ? [decodeURIComponent(part), ""]
          : [decodeURIComponent(part.slice(0, eq)), decodeURIComponent(part.slice(eq + 1))],
      );
    } catch {
      throw new ProtocolError(
        "IncompleteSignatureException",
        "the query string has a malformed percent-encoding",
      );
    }
  }
  return pairs;
}

/** Encoded `name=value` pairs sorted by name, then value, joined with `&`. */
export function canonicalQuery(pairs: readonly (readonly [string, string])[]): string {
  return pairs
    .map(([name, value]) => [uriEscape(name), uriEscape(value)] as const)
    .sort(([an, av], [bn, bv]) => (an < bn ? -1 : an > bn ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join("&");
}

/** Each value trimmed with inner whitespace runs collapsed to one space; repeats joined by `,`. */
export function canonicalHeaderValue(values: readonly string[]): string {
  return values.map((v) => v.trim().replace(/\s+/g, " ")).join(",");
}

export function canonicalRequest(parts: {
  readonly method: string;
  readonly canonicalUri: string;
  readonly canonicalQuery: string;
  /** Lowercased names, sorted, with canonical values. */
  readonly headers: readonly (readonly [string, string])[];
  readonly payloadHash: string;
}): string {
  return [
    parts.method,
    parts.canonicalUri,
    parts.canonicalQuery,
    ...parts.headers.map(([name, value]) => `${name}:${value}`),
    "",
    parts.headers.map(([name]) => name).join(";"),
    parts.payloadHash,
  ].join("\n");
}

export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return [ALGORITHM, amzDate, scope, sha256Hex(canonical)].join("\n");
}

/**
 * Derived signing keys by secret, date, region and service. Deriving one is four HMACs with
 * Buffer keys (about 30 µs on Node 24, an eighth of the server's time per request) and it
 * changes once a day per secret, so it is kept, as the AWS SDK's signer keeps it on its side.
 * Keyed by the secret itself, so a rotated secret simply misses; bounded, oldest dropped first.
 */
const signingKeys = new Map<string, KeyObject>();
const SIGNING_KEY_CACHE_SIZE = 256;

export function signingKey(
  secret: string,
  date: string,
  region: string,
  service: string,
): KeyObject {
  const id = `${date}\n${region}\n${service}\n${secret}`;
  let key = signingKeys.get(id);
  if (key === undefined) {
    const kDate = hmac(`AWS4${secret}`, date);
    const kRegion = hmac(kDate, region);
    const kService = hmac(kRegion, service);
    key = createSecretKey(hmac(kService, TERMINATOR));
    if (signingKeys.size >= SIGNING_KEY_CACHE_SIZE) {
      signingKeys.delete(signingKeys.keys().next().value as string);
    }
    signingKeys.set(id, key);
  }
  return key;
}

export function hmac(key: string | Uint8Array | KeyObject, data: string): Buffer {
  return createHmac("sha256", key).update(data, "utf8").digest();
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
