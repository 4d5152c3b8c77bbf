import { createHash, randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Server as NetServer, type Socket } from "node:net";
import {
  type CallOptions,
  isKmsError,
  type Kms,
  KmsInternalError,
  ValidationError,
} from "@kms/core";
import { type AllowedHosts, parseAllowedHosts } from "./internal/allowed-hosts.ts";
import { readBody } from "./internal/body.ts";
import { takeTurn } from "./internal/connection-turns.ts";
import { parseJsonBody } from "./internal/json-body.ts";
import { isLoopback } from "./internal/loopback.ts";
import { OPERATIONS, UNSUPPORTED_OPERATIONS } from "./internal/operations.ts";
import { ProtocolError } from "./internal/protocol-error.ts";
import { RequestHeaders } from "./internal/request-headers.ts";
import { decode, encode } from "./internal/shapes.ts";
import {
  checkSignatureClaim,
  MAX_ACCESS_KEY_ID_LENGTH,
  parseAuthorization,
  verifySignature,
} from "./internal/sigv4.ts";
import type {
  CredentialLookup,
  KmsServerOptions,
  RefusedRequest,
  ServerCredential,
} from "./options.ts";

/** A node:http request listener; also usable as Express middleware (it never calls `next`). */
export type KmsRequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * 256 KiB. The largest legitimate request is a CreateKey or PutKeyPolicy whose 32 KiB policy is
 * written entirely in JSON `\uXXXX` escapes (6 bytes per character, 192 KiB), plus tags; a
 * Decrypt with ten 8 KiB grant tokens, a 6 KiB ciphertext and an 8 KiB context stays below
 * 150 KiB. ImportKeyMaterial, the one AWS operation with larger bodies, is not served.
 */
export const DEFAULT_MAX_BODY_BYTES = 256 * 1024;
/** AWS's tolerance for X-Amz-Date. */
export const DEFAULT_CLOCK_SKEW_SECONDS = 300;
const MAX_CLOCK_SKEW_SECONDS = 3600;

const CONTENT_TYPE = "application/x-amz-json-1.1";
const UNREAD_BODY_GRACE_MS = 2000;
const TARGET_PREFIX = "TrentService.";
/** What @kms/core accepts as `CallOptions.principal`. */
const MAX_PRINCIPAL_LENGTH = 2048;
/**
 * Shortest `secretAccessKey` accepted, in characters: SigV4 is only as strong as the shared
 * secret (AWS issues 40 characters). `kms serve` applies the same bound to its credentials file.
 */
export const MIN_SECRET_ACCESS_KEY_LENGTH = 20;

interface Settings {
  readonly kms: Kms;
  readonly lookup: (accessKeyId: string) => Promise<ServerCredential | undefined>;
  readonly region: string;
  readonly maxBodyBytes: number;
  readonly clockSkewMs: number;
  readonly now: () => number;
  readonly insecureHttp: boolean;
  readonly allowedHosts: AllowedHosts | undefined;
  readonly onRefused: KmsServerOptions["onRefused"];
}

/** How far one request got, for the report of a refusal. */
interface Progress {
  /**
   * "kms" while the Kms runs the call: a failure then is in its audit trail and is not reported
   * again. Before, nothing recorded the request; after (encoding the answer), the trail says the
   * call succeeded although the client got an error.
   */
  stage: "request" | "kms" | "response";
  principal?: string;
}

function assertCredential(where: string, value: unknown): ServerCredential {
  const c = value as Partial<ServerCredential> | null;
  if (
    typeof c !== "object" ||
    c === null ||
    typeof c.secretAccessKey !== "string" ||
    c.secretAccessKey.length < MIN_SECRET_ACCESS_KEY_LENGTH ||
    typeof c.principal !== "string" ||
    c.principal.length === 0 ||
    // Core refuses a longer principal on every call, as the caller's ValidationException (400):
    // the operator's mistake would read as each client's.
    c.principal.length > MAX_PRINCIPAL_LENGTH
  ) {
    // Names the access key id, never the secret.
    throw new ValidationError(
      `${where} must be { secretAccessKey, principal }: a secretAccessKey of at least ` +
        `${MIN_SECRET_ACCESS_KEY_LENGTH} characters and a principal of 1–${MAX_PRINCIPAL_LENGTH} characters`,
    );
  }
  return { secretAccessKey: c.secretAccessKey, principal: c.principal };
}

function lookupOf(credentials: KmsServerOptions["credentials"]): Settings["lookup"] {
  if (typeof credentials === "function") {
    const find: CredentialLookup = credentials;
    return async (accessKeyId) => {
      let found: ServerCredential | undefined;
      try {
        found = await find(accessKeyId);
      } catch (error) {
        // Whatever the lookup throws is the operator's failure, never the client's: a KmsError
        // with a client fault (a ValidationError from the directory it reads, say) would
        // otherwise answer 400 with the lookup's own message.
        throw new KmsInternalError("the credentials lookup failed", { cause: error });
      }
      if (found === undefined) return undefined;
      try {
        return assertCredential("a looked-up credential", found);
      } catch (error) {
        // The operator's lookup is at fault, not the client: an internal error (500).
        throw new KmsInternalError("the credentials lookup returned a malformed credential", {
          cause: error,
        });
      }
    };
  }
  // A Map (or an array) has no entries Object.entries can see: the server would start with no
  // access keys at all and refuse every caller as unknown, rather than fail here.
  const proto =
    typeof credentials === "object" && credentials !== null
      ? Object.getPrototypeOf(credentials)
      : undefined;
  if (proto !== Object.prototype && proto !== null) {
    throw new ValidationError(
      `"credentials" expected a plain object of access key id → credential (not a Map), or a lookup function`,
    );
  }
  // A Map of copies: later edits to the caller's object change nothing, and access key ids
  // such as "constructor" or "__proto__" can never resolve to something inherited.
  const table = new Map<string, ServerCredential>();
  for (const [accessKeyId, credential] of Object.entries(credentials)) {
    // No request can name such an id (the Authorization header splits on "/" and ",", and longer
    // ids are refused unread): the key would be configured yet never work.
    if (
      accessKeyId.length === 0 ||
      accessKeyId.length > MAX_ACCESS_KEY_ID_LENGTH ||
      /[/,]/.test(accessKeyId)
    ) {
      throw new ValidationError(
        `"credentials" has an access key id that is empty, longer than ${MAX_ACCESS_KEY_ID_LENGTH} ` +
          `characters, or holds "/" or ","`,
      );
    }
    table.set(accessKeyId, assertCredential(`"credentials.${accessKeyId}"`, credential));
  }
  assertOwnSecrets(table);
  return async (accessKeyId) => table.get(accessKeyId);
}

/**
 * Refuses access key ids that share a secret. SigV4 signs the scope's date, region and service
 * but not the access key id, so a request signed under one id verifies unchanged under any other
 * id with the same secret: whoever sees a request in transit (a proxy, a log of headers) could
 * send it again as the other principal, and the audit trail would name that principal. Secrets
 * are compared by the SHA-256 of their UTF-8 bytes, which is what SigV4 keys with: two strings
 * that differ only in lone surrogates encode alike. The message names the ids, never a secret.
 */
function assertOwnSecrets(table: ReadonlyMap<string, ServerCredential>): void {
  const owners = new Map<string, string[]>();
  for (const [accessKeyId, { secretAccessKey }] of table) {
    const digest = createHash("sha256").update(secretAccessKey, "utf8").digest("base64");
    const ids = owners.get(digest);
    if (ids === undefined) owners.set(digest, [accessKeyId]);
    else ids.push(accessKeyId);
  }
  const shared = [...owners.values()].filter((ids) => ids.length > 1);
  if (shared.length > 0) {
    // JSON-quoted: an id may hold any character but "/" and ",".
    const groups = shared.map((ids) => ids.map((id) => JSON.stringify(id)).join(", "));
    throw new ValidationError(
      `"credentials" gives more than one access key id the same secretAccessKey ` +
        `(${groups.join("; ")}): SigV4 does not sign the access key id, so a request signed ` +
        `for one would be accepted as the other's. Give each access key its own secret`,
    );
  }
}

function positive(name: string, value: number | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value > max) {
    // `${value}` itself throws for a Symbol: name the type of anything that is not a number.
    const got = typeof value === "number" ? String(value) : typeof value;
    throw new ValidationError(`"${name}" must be a number between 0 and ${max}, got ${got}`);
  }
  return value;
}

/** @throws ValidationError for a malformed option. */
export function resolveSettings(options: KmsServerOptions): Settings {
  if (typeof options !== "object" || options === null) {
    throw new ValidationError(`"options" expected an object`);
  }
  const { kms } = options;
  if (typeof kms !== "object" || kms === null || typeof kms.encrypt !== "function") {
    throw new ValidationError(`"kms" expected a Kms (createKms)`);
  }
  const region = options.region ?? (kms.identity as Kms["identity"] | undefined)?.region;
  if (typeof region !== "string" || !/^[a-z0-9-]{1,64}$/.test(region)) {
    throw new ValidationError(`"region" must be 1–64 lowercase letters, digits and "-"`);
  }
  const maxBodyBytes = positive(
    "maxBodyBytes",
    options.maxBodyBytes,
    DEFAULT_MAX_BODY_BYTES,
    2 ** 26,
  );
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 2) {
    throw new ValidationError(`"maxBodyBytes" must be an integer of at least 2`);
  }
  const clockSkewSeconds: unknown = options.clockSkewSeconds ?? DEFAULT_CLOCK_SKEW_SECONDS;
  // X-Amz-Date counts whole seconds: a window below one second refuses requests signed a moment
  // ago, and a fraction of a second beyond a whole one means nothing.
  if (
    typeof clockSkewSeconds !== "number" ||
    !Number.isInteger(clockSkewSeconds) ||
    clockSkewSeconds < 1 ||
    clockSkewSeconds > MAX_CLOCK_SKEW_SECONDS
  ) {
    const got =
      typeof clockSkewSeconds === "number" ? String(clockSkewSeconds) : typeof clockSkewSeconds;
    throw new ValidationError(
      `"clockSkewSeconds" must be an integer from 1 to ${MAX_CLOCK_SKEW_SECONDS}, got ${got}`,
    );
  }
  if (options.now !== undefined && typeof options.now !== "function") {
    throw new ValidationError(`"now" expected a function returning milliseconds`);
  }
  if (options.insecureHttp !== undefined && typeof options.insecureHttp !== "boolean") {
    throw new ValidationError(`"insecureHttp" expected a boolean`);
  }
  const allowedHosts =
    options.allowedHosts === undefined ? undefined : parseAllowedHosts(options.allowedHosts);
  if (options.onRefused !== undefined && typeof options.onRefused !== "function") {
    throw new ValidationError(`"onRefused" expected a function`);
  }
  return {
    kms,
    lookup: lookupOf(options.credentials),
    region,
    maxBodyBytes,
    clockSkewMs: clockSkewSeconds * 1000,
    now: options.now ?? Date.now,
    insecureHttp: options.insecureHttp === true,
    allowedHosts,
    onRefused: options.onRefused,
  };
}

/**
 * A request listener that serves the AWS KMS JSON 1.1 protocol on `POST /`: the AWS SDK
 * (`new KMSClient({ endpoint, region, credentials })`) and the AWS CLI talk to it unchanged.
 * Every request must carry a SigV4 Authorization header made with one of `credentials`; the call
 * then runs on `kms` as that credential's principal, with the client's address as source IP and
 * the response's x-amzn-RequestId as request id, so policies, grants and the audit trail see it.
 * @throws ValidationError for a malformed option.
 */
export function createKmsRequestHandler(options: KmsServerOptions): KmsRequestHandler {
  const settings = resolveSettings(options);
  return (req, res) => {
    void handle(settings, req, res);
  };
}

async function handle(s: Settings, req: IncomingMessage, res: ServerResponse): Promise<void> {
  // One request of a connection at a time: pipelined requests wait here (see connection-turns).
  const turn = await takeTurn(req.socket);
  if (turn === undefined) return;
  const requestId = randomUUID();
  const progress: Progress = { stage: "request" };
  try {
    const body = await serve(s, req, requestId, progress);
    send(res, requestId, 200, body);
  } catch (error) {
    const answer = sendError(res, req, requestId, error);
    if (progress.stage !== "kms") reportRefusal(s, req, progress, { requestId, ...answer }, error);
  } finally {
    turn.end(res);
  }
}

async function serve(
  s: Settings,
  req: IncomingMessage,
  requestId: string,
  progress: Progress,
): Promise<string> {
  if (req.socket.destroyed) {
    // Gone while middleware ran or while the request waited its turn: no one reads the answer,
    // and a socket without its addresses cannot tell where it came from.
    throw new ProtocolError(
      "SerializationException",
      "the connection closed before the request was served",
    );
  }
  if (!s.insecureHttp && !isSecureTransport(req.socket)) {
    throw new ProtocolError(
      "InsecureTransportException",
      "plain HTTP is served on loopback addresses and unix sockets only: use TLS, or set " +
        "insecureHttp on the server",
    );
  }
  const headers = new RequestHeaders(req.rawHeaders);
  // Express strips its mount path from req.url and keeps the original, which is what was signed.
  const url = req.url ?? "";
  const signedUrl = (req as { originalUrl?: unknown }).originalUrl;
  const rawUrl = typeof signedUrl === "string" ? signedUrl : url;
  const path = url.split("?", 1)[0];
  if (req.method !== "POST" || path !== "/") {
    throw new ProtocolError(
      "UnknownOperationException",
      "the AWS KMS JSON protocol is served on POST / only",
    );
  }
  const [mediaType = "", ...parameters] = (headers.one("content-type") ?? "").split(";");
  if (mediaType.trim().toLowerCase() !== CONTENT_TYPE || !parameters.every(isUtf8OrNotCharset)) {
    throw new ProtocolError(
      "UnknownOperationException",
      `the Content-Type must be ${CONTENT_TYPE}, with no charset but utf-8`,
    );
  }
  if (!headers.all("content-encoding").every(isIdentityCoding)) {
    throw new ProtocolError(
      "SerializationException",
      "the request body is read as sent: a Content-Encoding other than identity is not supported",
    );
  }
  const target = headers.one("x-amz-target") ?? "";
  const name = target.startsWith(TARGET_PREFIX) ? target.slice(TARGET_PREFIX.length) : "";
  const operation = OPERATIONS.get(name);
  if (operation === undefined) {
    if (UNSUPPORTED_OPERATIONS.has(name)) {
      throw new ProtocolError(
        "UnsupportedOperationException",
        `${name} is not supported by this server`,
      );
    }
    throw new ProtocolError(
      "UnknownOperationException",
      "X-Amz-Target does not name an operation of TrentService",
    );
  }

  const query = rawUrl.indexOf("?");
  // Before the body: a client that cannot name a known access key is answered from its headers,
  // and only callers with a known key id can make the server hold up to maxBodyBytes.
  const claim = await checkSignatureClaim(
    {
      method: req.method,
      rawPath: query < 0 ? rawUrl : rawUrl.slice(0, query),
      rawQuery: query < 0 ? "" : rawUrl.slice(query + 1),
      headers,
    },
    {
      region: s.region,
      clockSkewMs: s.clockSkewMs,
      now: s.now,
      lookup: s.lookup,
      allowedHosts: s.allowedHosts,
    },
  );
  const body = await readBody(req, s.maxBodyBytes);
  try {
    const caller = verifySignature(claim, body);
    progress.principal = caller.principal;

    const request = decode(operation.input, parseJsonBody(body));
    const options: CallOptions = {
      principal: caller.principal,
      accessKeyId: claim.auth.accessKeyId,
      requestId,
      ...sourceIpOf(req),
    };
    let response: unknown;
    progress.stage = "kms";
    try {
      response = await operation.call(s.kms, request, options);
    } finally {
      wipe(request);
    }
    progress.stage = "response";
    if (operation.output === undefined) return "{}";
    try {
      return JSON.stringify(encode(operation.output, response));
    } finally {
      // Plaintext, data keys, private keys and shared secrets: their bytes go no further.
      wipe(response);
    }
  } finally {
    body.fill(0);
  }
}

/**
 * The body is read as UTF-8 whatever the request says. A proxy, a firewall or a log pipeline that
 * honours `charset=utf-16` would read other members than the server acts on, so any charset but
 * UTF-8 is refused rather than ignored.
 */
function isUtf8OrNotCharset(parameter: string): boolean {
  const eq = parameter.indexOf("=");
  if (eq < 0 || parameter.slice(0, eq).trim().toLowerCase() !== "charset") return true;
  const value = parameter
    .slice(eq + 1)
    .trim()
    .toLowerCase()
    .replace(/^"(.*)"$/, "$1");
  return value === "utf-8" || value === "utf8";
}

/**
 * The body is hashed and parsed as the bytes received. An inspecting proxy, a firewall or a log
 * pipeline that honours `Content-Encoding: gzip` would decode them, fail, and may pass the body on
 * uninspected (or read a different body) while the server acts on the raw JSON: a coding other
 * than identity is refused rather than ignored, as a charset other than UTF-8 is.
 */
function isIdentityCoding(value: string): boolean {
  return value.split(",").every((coding) => coding.trim().toLowerCase() === "identity");
}

// Node's dual-stack sockets report an IPv4 peer as ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
const IPV4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/**
 * The peer's address as AWS records it: an IPv4 client of a dual-stack listener (`listen(port)`,
 * `::`) as `a.b.c.d`, not `::ffff:a.b.c.d`, so that the audit trail's `sourceIPAddress`, a search
 * by address and a string condition on `aws:SourceIp` read the same address whichever socket the
 * server listens on.
 */
function sourceIpOf(req: IncomingMessage): { sourceIp?: string } {
  const address = req.socket.remoteAddress;
  if (address === undefined) return {};
  return { sourceIp: IPV4_MAPPED.exec(address)?.[1] ?? address };
}

/** Zeroes the top-level byte arrays of a request or response once they have been used. */
function wipe(value: unknown): void {
  if (typeof value !== "object" || value === null) return;
  for (const v of Object.values(value)) if (v instanceof Uint8Array) v.fill(0);
}

/** TLS, a loopback address, or a unix socket; the caller has refused a closed socket already. */
function isSecureTransport(socket: Socket): boolean {
  if ((socket as { encrypted?: unknown }).encrypted === true) return true;
  const local = socket.localAddress;
  if (local !== undefined && local !== "") return isLoopback(local);
  // An open unix socket (or Windows pipe) has no local IP address, but neither has a TCP socket
  // whose handle is gone: the listener node accepted it on (`socket.server`) tells them apart.
  // Its address is null once it is closed; a socket with no listener was handed to the server
  // in-process (`server.emit("connection", duplex)`).
  const server = (socket as { server?: unknown }).server;
  const listening = server instanceof NetServer ? server.address() : null;
  return listening === null || typeof listening === "string";
}

function send(
  res: ServerResponse,
  requestId: string,
  status: number,
  body: string,
  extra: Readonly<Record<string, string>> = {},
): void {
  if (res.headersSent || res.writableEnded) return;
  res.writeHead(status, {
    "Content-Type": CONTENT_TYPE,
    "Content-Length": Buffer.byteLength(body),
    "x-amzn-RequestId": requestId,
    // Responses carry plaintext and data keys: no cache along the way may keep one.
    "Cache-Control": "no-store",
    ...extra,
  });
  res.end(body);
}

interface ErrorAnswer {
  readonly code: string;
  readonly status: number;
  readonly message: string;
}

function sendError(
  res: ServerResponse,
  req: IncomingMessage,
  requestId: string,
  error: unknown,
): ErrorAnswer {
  let code: string;
  let status: number;
  let message: string;
  if (error instanceof ProtocolError) {
    ({ code, status, message } = error);
  } else if (isKmsError(error) && error.clientFault) {
    code = error.code;
    status = 400;
    message = error.message;
  } else {
    // Internal failures (store down, root key problems, bugs) say nothing about the server's
    // insides; the request id finds the call in the audit trail.
    code = "KMSInternalException";
    status = 500;
    message = `The request was rejected because of an internal error (request ${requestId}).`;
  }
  // Refused before all of the body arrived (by routing, the headers' signature checks or the size
  // limit), or the client went away.
  if (!req.complete) {
    // The rest of the body is discarded as it arrives (never stored), so that the client, still
    // sending, reads this answer instead of a reset connection. One that is still sending two
    // seconds later is cut off.
    req.resume();
    res.once("finish", () => {
      setTimeout(() => {
        if (!req.complete) req.socket.destroy();
      }, UNREAD_BODY_GRACE_MS).unref();
    });
  }
  send(res, requestId, status, JSON.stringify({ __type: code, message }), {
    "x-amzn-ErrorType": code,
  });
  return { code, status, message };
}

/**
 * Tells `onRefused` about a request the audit trail does not hold. What it needs of the headers is
 * read again here, on the error path only, so that a served request pays nothing for it.
 */
function reportRefusal(
  s: Settings,
  req: IncomingMessage,
  progress: Progress,
  answer: ErrorAnswer & { readonly requestId: string },
  error: unknown,
): void {
  const onRefused = s.onRefused;
  if (onRefused === undefined) return;
  const operation = knownOperation(req.headers["x-amz-target"]);
  const accessKeyId = claimedAccessKeyId(req.headers.authorization);
  const refusal: RefusedRequest = {
    ...answer,
    ...(operation !== undefined ? { operation } : {}),
    ...(accessKeyId !== undefined ? { accessKeyId } : {}),
    ...(progress.principal !== undefined ? { principal: progress.principal } : {}),
    ...sourceIpOf(req),
    ...(answer.status >= 500 ? { cause: error } : {}),
  };
  try {
    const result: unknown = onRefused(refusal);
    // An async hook that rejects would otherwise be an unhandled rejection, which ends the process.
    if (typeof (result as { then?: unknown } | null)?.then === "function") {
      Promise.resolve(result).catch(() => {});
    }
  } catch {
    // The operator's hook; the answer has been sent and stays as it is.
  }
}

/** The operation an X-Amz-Target names, only when it is one of AWS KMS's: never arbitrary text. */
function knownOperation(target: string | string[] | undefined): string | undefined {
  if (typeof target !== "string" || !target.startsWith(TARGET_PREFIX)) return undefined;
  const name = target.slice(TARGET_PREFIX.length);
  return OPERATIONS.has(name) || UNSUPPORTED_OPERATIONS.has(name) ? name : undefined;
}

function claimedAccessKeyId(authorization: string | undefined): string | undefined {
  if (authorization === undefined) return undefined;
  try {
    return parseAuthorization(authorization).accessKeyId;
  } catch {
    return undefined;
  }
}
