/**
 * Node `http` request/response ⇄ message view, and response signing by buffering a Node
 * `ServerResponse`. Express and Nest (on Express or Fastify) all sit on these objects, so the
 * framework layers share this code instead of each rebuilding it.
 */
import type { ServerResponse } from "node:http";
import type { Http2ServerResponse } from "node:http2";
import { currentRequestId, runWithRequestId, ValidationError } from "@kms/core";
import { computeContentDigest, type DigestAlgorithm } from "./content-digest.ts";
import { BoundedCache } from "./internal/bounded-cache.ts";
import { detachedString } from "./internal/detached-string.ts";
import { receivedTarget } from "./internal/request-target.ts";
import { cachedFields, type RequestMessage } from "./message.ts";
import { PROBLEM_CONTENT_TYPE, responseSigningProblem } from "./problem.ts";
import {
  type CoveredComponents,
  coveredComponents,
  type SignatureFields,
  type SignOptions,
  signMessageEagerly,
} from "./sign.ts";
import { type ComponentSpec, hasUnknownAuthority, recordTarget } from "./signature-base.ts";

/** The parts of a Node / Express / Fastify request that the target URI and fields come from. */
export interface NodeRequestLike {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  /** Express: the URL before mounting stripped a prefix. Preferred over `url`. */
  readonly originalUrl?: string | undefined;
  /** Express / Fastify: `http` or `https`, honouring their trust-proxy setting. */
  readonly protocol?: string | undefined;
  readonly headers: Readonly<Record<string, string | readonly string[] | undefined>>;
  /** Node ≥ 18.3: one array entry per field line (needed for `;bs`). */
  readonly headersDistinct?: Readonly<Record<string, readonly string[] | undefined>>;
  /** A TLS socket has `encrypted: true`; used when `protocol` is absent. */
  readonly socket?: object | null | undefined;
}

/**
 * The neutral message view of an incoming request. For an origin-form target (`/orders/42`)
 * the target URI is rebuilt from the protocol, the authority and the original URL (behind a
 * proxy that rewrites them, configure the framework's trust-proxy setting, or the signer's
 * `@target-uri` will not match); an absolute-form target (`http://a.example/orders/42`) is the
 * target URI itself, and must agree with Host and the protocol. The authority is the Host field,
 * or over HTTP/2 (`node:http2` and its compatibility API) the `:authority` pseudo-header; one
 * that names another authority than Host (RFC 9113 §8.3.1) makes the target unverifiable. A
 * target the router could see differently from the URL parser (dot segments, backslashes, a
 * Host with a path, a fragment, a non-canonical host…) is recorded as unverifiable: every
 * derived component then fails. Without either (HTTP/1.0) the authority is unknown:
 * `@authority` and `@target-uri` fail, and `url` names a placeholder host that only the path
 * and query are read from. Which authorities the server answers to is the verification
 * policy's `authorities`.
 */
export function nodeRequestMessage(req: NodeRequestLike, body?: Uint8Array): RequestMessage {
  const tls = (req.socket as { encrypted?: unknown } | null | undefined)?.encrypted === true;
  const protocol = req.protocol ?? (tls ? "https" : "http");
  const { host, conflict } = requestAuthority(req.headers);
  const received = receivedTarget(protocol, host, req.originalUrl ?? req.url ?? "/");
  const message: RequestMessage = {
    method: req.method ?? "GET",
    url: received.url,
    headers: req.headersDistinct ?? req.headers,
    body,
  };
  recordTarget(
    message,
    conflict ?? received.parsed,
    received.absoluteForm,
    received.authorityProblem,
  );
  return message;
}

const CONFLICTING_AUTHORITY =
  "the Host header differs from the :authority pseudo-header (RFC 9113 §8.3.1)";

/**
 * The request's authority: its Host field or, over HTTP/2, its `:authority` (RFC 9113 §8.3.1:
 * clients send that instead of Host). Node answers `:authority` first, Fastify Host first: when
 * both are sent and differ, the target is refused rather than signed as either.
 * @internal
 */
export function requestAuthority(headers: NodeRequestLike["headers"]): {
  readonly host: string | undefined;
  readonly conflict?: string;
} {
  const field = headers.host;
  const host = typeof field === "string" ? field : field?.[0];
  const pseudo = headers[":authority"];
  const authority = typeof pseudo === "string" ? pseudo : pseudo?.[0];
  if (authority === undefined) return { host };
  if (host === undefined) return { host: authority };
  return host.toLowerCase() === authority.toLowerCase()
    ? { host }
    : { host, conflict: CONFLICTING_AUTHORITY };
}

export interface ResponseSigningOptions extends Omit<SignOptions, "components" | "request"> {
  /**
   * Covered components. Default: `@status`, `content-type` and `content-digest` when present,
   * the request's `@method` and `@target-uri` (`;req`), and the request's verified signature
   * (`"signature";key="<label>";req`) when one was accepted. A request received without an
   * authority (HTTP/1.0 without Host, as load balancers' health checks send it) has no
   * `@target-uri`: the response is then bound to its `@method`, `@path` and `@query` (`;req`).
   */
  readonly components?: readonly ComponentSpec[];
  /** Content-Digest algorithms for the response body; false for none. Default sha-256. */
  readonly digest?: readonly DigestAlgorithm[] | false;
  /**
   * The most body bytes held for signing; default `DEFAULT_MAX_BUFFERED_BYTES` (8 MiB),
   * `Infinity` for no limit. A response whose body grows past it is not signed: it is answered
   * 500 problem+json at once (the head is still held, so nothing of it has been sent), and what
   * the application writes afterwards is dropped. Without a bound, a route that streams a large
   * file or an export through a signed response would be held in memory whole, once per request
   * in flight.
   */
  readonly maxBufferedBytes?: number;
}

/** `ResponseSigningOptions.maxBufferedBytes` when not set: 8 MiB. */
export const DEFAULT_MAX_BUFFERED_BYTES = 8 * 1024 * 1024;

/** What the response is bound to; read when the response ends. */
export interface ResponseBinding {
  readonly request: RequestMessage;
  /** Label of the request signature that verification accepted, if any. */
  readonly verifiedLabel?: string | undefined;
  /**
   * The request's id: the response is signed inside `runWithRequestId(requestId, …)` from
   * @kms/core, so a KMS signer's call is audited under the request it answers even when the
   * response ends outside the request's scope (Nest writes its reply there). Default: the
   * ambient request id where the response ends, if any. A signer with `signSync` (a key in
   * this process, which makes no KMS call) signs in whatever scope the response ends in.
   */
  readonly requestId?: string | undefined;
}

type Chunk = string | Uint8Array;
type Callback = (error?: Error | null) => void;

/** Per-response state, kept on the response so the replaced methods are shared functions. */
interface Pending {
  readonly options: ResponseSigningOptions;
  readonly binding: () => ResponseBinding;
  /** The response's own `end`, called once the signature headers are set. */
  readonly end: (this: ServerResponse, chunk: Buffer | string, callback?: Callback) => void;
  readonly chunks: Buffer[];
  /** Bytes in `chunks`. */
  buffered: number;
  readonly maxBufferedBytes: number;
  /** The body outgrew `maxBufferedBytes`: the 500 is sent, later writes are dropped. */
  overflowed: boolean;
  ending: boolean;
  /** Set just before the response's own `end` runs: from then on Node may write the head. */
  sending: boolean;
  /** HEAD, 204 or 304: the buffered body is empty by definition, not by length. */
  noBody: boolean;
  /** The Content-Encoding signed (lower case, "" for none); null while there is none to hold. */
  signedCoding: string | null;
  /**
   * The response's own `write`. HTTP/2's compatibility response writes its `end` chunk through
   * `this.write`: once sending, writes go to it, or the signed body would be buffered again.
   */
  readonly write: ServerResponse["write"];
  readonly writeHead: ServerResponse["writeHead"];
  readonly flushHeaders: ServerResponse["flushHeaders"];
}

const PENDING = Symbol("kms.responseSigning");
type SigningResponse = ServerResponse & { [PENDING]?: Pending };

const EMPTY_BODY = Buffer.alloc(0);
const DEFAULT_DIGEST: readonly DigestAlgorithm[] = ["sha-256"];
const METHOD_OF_REQUEST: ComponentSpec = { component: "@method", req: true };
const TARGET_OF_REQUEST: ComponentSpec = { component: "@target-uri", req: true };
const PATH_OF_REQUEST: ComponentSpec = { component: "@path", req: true };
const QUERY_OF_REQUEST: ComponentSpec = { component: "@query", req: true };
/** A default component list, resolved once: it is frozen and its specs are constants. */
interface DefaultList {
  readonly specs: readonly ComponentSpec[];
  readonly covered: CoveredComponents;
}

interface LabelSpecs {
  readonly spec: ComponentSpec;
  /** Default lists ending in `spec`, by `defaultListIndex`. */
  readonly lists: (DefaultList | undefined)[];
}

// One spec object per label, so the identifier memo in signMessage hits, with the default
// component lists that end in it (eight at most). The label is the client's choice: the oldest
// is evicted rather than the cache frozen once full, and the label is copied, since it was cut
// from the request's whole Signature-Input field.
const requestSignatureSpecs = new BoundedCache<string, LabelSpecs>(64);

function labelSpecs(label: string): LabelSpecs {
  let entry = requestSignatureSpecs.get(label);
  if (entry === undefined) {
    const own = detachedString(label);
    entry = { spec: { component: "signature", key: own, req: true }, lists: [] };
    requestSignatureSpecs.set(own, entry);
  }
  return entry;
}

/**
 * The component naming the request's signature under `label` (`"signature";key=…;req`), the
 * same object for the same label while it is cached.
 * @internal
 */
export function requestSignatureSpec(label: string): ComponentSpec {
  return labelSpecs(label).spec;
}

// Default lists without a request signature, by `defaultListIndex`: eight at most, made once.
const unlabelledLists: (DefaultList | undefined)[] = [];

const defaultListIndex = (type: boolean, digest: boolean, noAuthority: boolean): number =>
  (type ? 1 : 0) | (digest ? 2 : 0) | (noAuthority ? 4 : 0);

/**
 * `ResponseSigningOptions.components`' default for a response with or without Content-Type and
 * Content-Digest, to a request with or without an authority, bound to the request's signature
 * under `label` when one was verified. The same list for the same inputs, resolved once, so
 * no list is built or resolved per response.
 */
function defaultComponents(
  type: boolean,
  digest: boolean,
  noAuthority: boolean,
  label: LabelSpecs | undefined,
): DefaultList {
  const lists = label === undefined ? unlabelledLists : label.lists;
  const index = defaultListIndex(type, digest, noAuthority);
  let list = lists[index];
  if (list === undefined) {
    const specs: ComponentSpec[] = ["@status"];
    if (type) specs.push("content-type");
    if (digest) specs.push("content-digest");
    // Without an authority there is no target URI to bind to; the path and query still name
    // what was asked, and no authority is made up for it.
    specs.push(METHOD_OF_REQUEST);
    if (noAuthority) specs.push(PATH_OF_REQUEST, QUERY_OF_REQUEST);
    else specs.push(TARGET_OF_REQUEST);
    if (label !== undefined) specs.push(label.spec);
    list = { specs: Object.freeze(specs), covered: coveredComponents(specs) };
    lists[index] = list;
  }
  return list;
}

type OutgoingFields = Record<string, string | string[] | number>;

/** Sets `name` in `fields` when the response has that header. */
function copyHeader(res: ServerResponse, fields: OutgoingFields, name: string): void {
  const value = res.getHeader(name);
  if (value !== undefined) fields[name] = value;
}

/**
 * The response's header fields that signing reads: the ones `covered` names (not the `;req`
 * ones, which are the request's), and Signature-Input and Signature, which a new signature is
 * added to. Signing reads no other field, so the rest of the head is not copied.
 */
function signedFields(res: ServerResponse, covered: CoveredComponents): OutgoingFields {
  // No prototype: a covered field may be named `__proto__`.
  const fields = Object.create(null) as OutgoingFields;
  for (const item of covered.items) {
    const name = item.value;
    if (typeof name !== "string" || name.charCodeAt(0) === 0x40 /* @ */) continue;
    if (item.params.get("req") === true) continue;
    copyHeader(res, fields, name);
  }
  copyHeader(res, fields, "signature-input");
  copyHeader(res, fields, "signature");
  return fields;
}

/** Buffers and strings as bytes, without copying what already is a Buffer. */
function toBuffer(chunk: Chunk, encoding?: BufferEncoding): Buffer {
  if (typeof chunk === "string") return Buffer.from(chunk, encoding);
  if (Buffer.isBuffer(chunk)) return chunk;
  return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

function bufferedWrite(
  this: SigningResponse,
  chunk: Chunk,
  encoding?: BufferEncoding | Callback,
  cb?: Callback,
): boolean {
  return write(this, this[PENDING] as Pending, chunk, encoding, cb);
}

/**
 * `writeHead` would send the status line and headers before the signature exists: its status,
 * message and headers are applied to the response instead, and sent with the signed head.
 */
function heldWriteHead(
  this: SigningResponse,
  statusCode: number,
  ...rest: unknown[]
): SigningResponse {
  return holdHead(this, this[PENDING] as Pending, statusCode, rest);
}

function heldFlushHeaders(this: SigningResponse): void {
  flushHeld(this, this[PENDING] as Pending);
}

function holdHead(
  res: ServerResponse,
  pending: Pending,
  statusCode: number,
  rest: unknown[],
): SigningResponse {
  if (pending.sending) {
    const sent = (pending.writeHead as (...args: unknown[]) => SigningResponse).call(
      res,
      statusCode,
      ...rest,
    );
    // A layer under this one may code the body as the head goes out: a compression middleware
    // that the framework ran before the signer wrapped the response (any middleware under a
    // Nest interceptor) sets Content-Encoding here. The head is stored but not yet written.
    if (pending.signedCoding !== null && codingOf(res) !== pending.signedCoding) {
      refuseRecoded(res, pending.signedCoding);
    }
    return sent;
  }
  res.statusCode = statusCode;
  let headers = rest[0];
  if (typeof headers === "string") {
    res.statusMessage = headers;
    headers = rest[1];
  }
  if (Array.isArray(headers)) {
    holdHeaderList(res, headers);
  } else if (headers !== null && typeof headers === "object") {
    for (const [name, value] of Object.entries(headers)) {
      if (value !== undefined) res.setHeader(name, value as string | string[] | number);
    }
  }
  return res as SigningResponse;
}

/**
 * Node's flat form, `[name, value, name, value, …]`, applied as Node's own `writeHead` applies
 * it: each name replaces what was set before, but a name given twice (two Set-Cookie) keeps
 * both values, so every name is removed first and then each value appended.
 */
function holdHeaderList(res: ServerResponse, list: readonly unknown[]): void {
  if (list.length % 2 !== 0) {
    throw new TypeError("writeHead: a flat header array must have an even length (name, value…)");
  }
  // Node skips an empty name too.
  for (let i = 0; i < list.length; i += 2) if (list[i]) res.removeHeader(String(list[i]));
  for (let i = 0; i < list.length; i += 2) {
    // Node ≥ 20.12 (the engines floor is 22.12) has appendHeader on HTTP/2's response too.
    if (list[i]) res.appendHeader(String(list[i]), list[i + 1] as string | readonly string[]);
  }
}

function flushHeld(res: ServerResponse, pending: Pending): void {
  // Nothing may leave before the signature: the head goes out with the signed response.
  if (pending.sending) pending.flushHeaders.call(res);
}

function bufferedEnd(
  this: SigningResponse,
  chunk?: Chunk | Callback,
  encoding?: BufferEncoding | Callback,
  cb?: Callback,
): SigningResponse {
  return end(this, this[PENDING] as Pending, chunk, encoding, cb);
}

function write(
  res: ServerResponse,
  pending: Pending,
  chunk: Chunk,
  encoding?: BufferEncoding | Callback,
  cb?: Callback,
): boolean {
  const callback = typeof encoding === "function" ? encoding : cb;
  if (pending.overflowed) {
    // The 500 is out. False tells a writer to stop (a pipe pauses; Node's 'finish' then unpipes
    // it), and no 'drain' will come.
    callback?.();
    return false;
  }
  if (pending.sending) {
    return (pending.write as (...args: unknown[]) => boolean).call(res, chunk, encoding, cb);
  }
  if (pending.ending) {
    // After `end`, while an async signer works: not part of the body being signed.
    callback?.();
    return false;
  }
  const bytes = toBuffer(chunk, typeof encoding === "string" ? encoding : undefined);
  if (!hold(res, pending, bytes)) {
    callback?.();
    return false;
  }
  callback?.();
  // Buffering takes every chunk at once, so there is no backpressure to signal: a false here
  // would wait for a 'drain' that only the end of the body could bring.
  return true;
}

/**
 * Adds `bytes` to the held body, or, past `maxBufferedBytes`, drops what is held and answers
 * 500 instead. Whether the bytes were taken.
 */
function hold(res: ServerResponse, pending: Pending, bytes: Buffer): boolean {
  const total = pending.buffered + bytes.length;
  if (total <= pending.maxBufferedBytes) {
    pending.chunks.push(bytes);
    pending.buffered = total;
    return true;
  }
  pending.ending = true;
  pending.chunks.length = 0;
  pending.buffered = 0;
  answerUnsigned(res, pending, tooLarge(pending.maxBufferedBytes));
  // Only now: HTTP/2's compatibility response writes the problem through `this.write`.
  pending.overflowed = true;
  return false;
}

let tooLargeWarned = false;

/**
 * The error a response past `maxBufferedBytes` is answered with (its message is the problem's
 * detail). Warned once: the response never reaches the framework's error handling, so the
 * application's logs would not otherwise say why such a route answers 500.
 */
function tooLarge(limit: number): ValidationError {
  const message =
    `the response body is larger than "maxBufferedBytes" (${limit} bytes), the most held for ` +
    "signing; it was answered 500 instead of being sent unsigned";
  if (!tooLargeWarned) {
    tooLargeWarned = true;
    process.emitWarning(message, { code: "KMS_SIGNED_RESPONSE_TOO_LARGE" });
  }
  return new ValidationError(message);
}

function end(
  res: ServerResponse,
  pending: Pending,
  chunk?: Chunk | Callback,
  encoding?: BufferEncoding | Callback,
  cb?: Callback,
): ServerResponse {
  if (pending.ending) return res;
  if (chunk !== undefined && chunk !== null && typeof chunk !== "function") {
    const bytes = toBuffer(chunk, typeof encoding === "string" ? encoding : undefined);
    if (!hold(res, pending, bytes)) return res;
  }
  pending.ending = true;
  const chunks = pending.chunks;
  const callback =
    typeof chunk === "function" ? chunk : typeof encoding === "function" ? encoding : cb;
  // res.send / res.json end with one chunk and no writes: that chunk is the body, no copy.
  const body =
    chunks.length === 0
      ? EMPTY_BODY
      : chunks.length === 1
        ? (chunks[0] as Buffer)
        : Buffer.concat(chunks);
  finish(res, pending, body, callback);
  return res;
}

/**
 * Signs and sends. A local signer (`signSync`) finishes before `end` returns, as an unsigned
 * response would; a KMS signer finishes when its promise settles.
 */
function finish(
  res: ServerResponse,
  pending: Pending,
  body: Buffer,
  callback: Callback | undefined,
): void {
  let signed: SignatureFields | Promise<SignatureFields>;
  try {
    signed = sign(res, pending, body);
  } catch (error) {
    answerUnsigned(res, pending, error);
    return;
  }
  if ("then" in signed) {
    signed.then(
      (fields) => send(res, pending, body, callback, fields),
      (error: unknown) => answerUnsigned(res, pending, error),
    );
  } else {
    send(res, pending, body, callback, signed);
  }
}

function send(
  res: ServerResponse,
  pending: Pending,
  body: Buffer,
  callback: Callback | undefined,
  fields: SignatureFields,
): void {
  try {
    res.setHeader("signature-input", fields.signatureInput);
    res.setHeader("signature", fields.signature);
    // Express has set it already (as a string) for the same bytes: only a stale value is rewritten.
    // A HEAD (or 204/304) response keeps the length the handler set (RFC 9110 §8.6).
    const length = res.getHeader("content-length");
    if (
      !pending.noBody &&
      length !== undefined &&
      length !== body.length &&
      length !== String(body.length)
    ) {
      res.setHeader("content-length", body.length);
    }
    pending.signedCoding = codingOf(res);
    pending.sending = true;
    pending.end.call(res, body, callback);
  } catch (error) {
    answerUnsigned(res, pending, error);
  }
}

/** The response's Content-Encoding, lower case; "" for none or identity. */
function codingOf(res: ServerResponse): string {
  const value = res.getHeader("content-encoding");
  if (value === undefined) return "";
  const coding = (Array.isArray(value) ? value.join(", ") : String(value)).toLowerCase();
  return coding === "identity" ? "" : coding;
}

let recodedWarned = false;

/**
 * The signature and Content-Digest cover the body before this coding, so the response would
 * fail every verification: the connection is closed instead, before anything is written, as
 * when a signer fails after the head has left. The body is in the coding layer's hands by now,
 * so no 500 can be sent in its place. Warned once, since the cause is the application's setup.
 */
function refuseRecoded(res: ServerResponse, signed: string): void {
  const message =
    `a signed response was given Content-Encoding "${codingOf(res)}" after signing ` +
    `(signed with ${signed === "" ? "none" : `"${signed}"`}): a compression layer runs after ` +
    "the response signer; the connection was closed rather than send a signature that cannot " +
    "verify";
  if (!recodedWarned) {
    recodedWarned = true;
    process.emitWarning(message, { code: "KMS_SIGNED_RESPONSE_RECODED" });
  }
  res.destroy(new ValidationError(message));
}

function answerUnsigned(res: ServerResponse, pending: Pending, error: unknown): void {
  // Once the head is out nothing can be corrected: close the connection rather than throw
  // (in a promise callback a throw would be an unhandled rejection, fatal to the process).
  if (res.headersSent) {
    res.destroy(error instanceof Error ? error : undefined);
    return;
  }
  pending.sending = true;
  // The problem is not signed: a compression layer may code it.
  pending.signedCoding = null;
  res.removeHeader("content-digest");
  res.removeHeader("signature-input");
  res.removeHeader("signature");
  res.statusCode = 500;
  res.setHeader("content-type", PROBLEM_CONTENT_TYPE);
  const problem = JSON.stringify(responseSigningProblem(error));
  res.setHeader("content-length", Buffer.byteLength(problem));
  pending.end.call(res, problem);
}

function sign(
  res: ServerResponse,
  pending: Pending,
  body: Buffer,
): SignatureFields | Promise<SignatureFields> {
  const { options } = pending;
  const { request, verifiedLabel, requestId } = pending.binding();
  const digest = options.digest ?? DEFAULT_DIGEST;
  const noBody = request.method === "HEAD" || res.statusCode === 204 || res.statusCode === 304;
  pending.noBody = noBody;
  if (digest !== false && !noBody && !res.hasHeader("content-digest")) {
    res.setHeader("content-digest", computeContentDigest(body, digest));
  }
  let components = options.components;
  let covered: CoveredComponents;
  if (components === undefined) {
    const label =
      verifiedLabel !== undefined && cachedFields(request.headers).lines.has("signature")
        ? labelSpecs(verifiedLabel)
        : undefined;
    const defaults = defaultComponents(
      res.hasHeader("content-type"),
      res.hasHeader("content-digest"),
      hasUnknownAuthority(request),
      label,
    );
    components = defaults.specs;
    covered = defaults.covered;
  } else {
    covered = coveredComponents(components);
  }
  const headers = signedFields(res, covered);
  // The request as verified: its fields (and parsed Signature) are still cached.
  const response = { status: res.statusCode, headers, body };
  // The scope is for a KMS signer's call: a local key (`signSync`) makes none. Already inside
  // the request's scope (kmsContext's, around the handler), entering it again would cost a scope
  // per response and change nothing.
  if (
    requestId === undefined ||
    options.signer.signSync !== undefined ||
    currentRequestId() === requestId
  ) {
    return signMessageEagerly(response, options, components, request, true, covered);
  }
  return runWithRequestId(requestId, () =>
    signMessageEagerly(response, options, components, request, true, covered),
  );
}

/**
 * Signs what is sent on `response` (RFC 9421), bound to the request it answers: a `node:http`
 * response or a `node:http2` compatibility one. Writes are buffered until `end` so the
 * Content-Digest and signature cover exactly the bytes sent; streamed responses are therefore
 * held in memory, up to `maxBufferedBytes` (past it, 500 problem+json). A signing failure (e.g. KMS unavailable) answers 500 problem+json rather than
 * sending an unsigned success. `binding` is called at `end`, so verification that runs after
 * this is installed is still seen; its `requestId`, when given, is the ambient request id of
 * the signing (a KMS signer's audit events).
 * @throws ValidationException when `maxBufferedBytes` is not a non-negative integer or
 * `Infinity`.
 */
export function signNodeResponse(
  response: ServerResponse | Http2ServerResponse,
  options: ResponseSigningOptions,
  binding: () => ResponseBinding,
): void {
  const maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
  if (
    typeof maxBufferedBytes !== "number" ||
    !(Number.isSafeInteger(maxBufferedBytes) || maxBufferedBytes === Number.POSITIVE_INFINITY) ||
    maxBufferedBytes < 0
  ) {
    throw new ValidationError(
      `"maxBufferedBytes" must be a non-negative integer or Infinity, got ${String(maxBufferedBytes)}`,
    );
  }
  // HTTP/2's compatibility response has the same methods this replaces and calls.
  const res = response as ServerResponse;
  const target = res as SigningResponse;
  const pending: Pending = {
    options,
    binding,
    end: res.end as Pending["end"],
    write: res.write,
    writeHead: res.writeHead,
    flushHeaders: res.flushHeaders,
    chunks: [],
    buffered: 0,
    maxBufferedBytes,
    overflowed: false,
    ending: false,
    sending: false,
    noBody: false,
    signedCoding: null,
  };
  if (target[PENDING] === undefined) {
    // Shared functions rather than per-response closures; the state rides on the response.
    target[PENDING] = pending;
    res.write = bufferedWrite as typeof res.write;
    res.end = bufferedEnd as typeof res.end;
    res.writeHead = heldWriteHead as typeof res.writeHead;
    res.flushHeaders = heldFlushHeaders;
    return;
  }
  // A second signer on the same response wraps the first one's methods with its own state.
  res.write = ((chunk: Chunk, encoding?: BufferEncoding | Callback, cb?: Callback) =>
    write(res, pending, chunk, encoding, cb)) as typeof res.write;
  res.end = ((chunk?: Chunk | Callback, encoding?: BufferEncoding | Callback, cb?: Callback) =>
    end(res, pending, chunk, encoding, cb)) as typeof res.end;
  res.writeHead = ((statusCode: number, ...rest: unknown[]) =>
    holdHead(res, pending, statusCode, rest)) as typeof res.writeHead;
  res.flushHeaders = () => flushHeld(res, pending);
}
