/**
 * The Node objects under Nest's request and response: Express's are Node's own; Fastify's wrap
 * them in `.raw`. Signing and raw-body reading work on the Node objects so both platforms share
 * one path.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { ValidationError } from "@kms/core";
import { nodeRequestMessage, platformRequest, type RequestMessage } from "@kms/http-signatures";
import type { ExecutionContext } from "@nestjs/common";

/** The platform request as the layers read it (Express fields; Fastify has most of them). */
export interface PlatformRequest {
  readonly method?: string;
  readonly url?: string;
  readonly originalUrl?: string;
  /** `http` or `https`; a trusted X-Forwarded-Proto under the platform's trust-proxy setting. */
  readonly protocol?: string;
  /** Express 5 / Fastify: `host[:port]`; a trusted X-Forwarded-Host likewise. */
  readonly host?: string;
  readonly path?: string;
  readonly headers: IncomingMessage["headers"];
  /** Express: the matched route (`route.path` is its pattern). */
  readonly route?: { readonly path?: unknown };
  /** Fastify: the matched route's options (`routeOptions.url` is its pattern). */
  readonly routeOptions?: { readonly url?: unknown };
  readonly user?: unknown;
  /** Set by Nest when the app is created with `{ rawBody: true }`, or by the guard. */
  rawBody?: unknown;
  readonly raw?: IncomingMessage;
}

export function httpObjects(execution: ExecutionContext): {
  request: PlatformRequest;
  incoming: IncomingMessage;
  response: ServerResponse;
} {
  const http = execution.switchToHttp();
  const request = http.getRequest<PlatformRequest>();
  const response = http.getResponse<ServerResponse & { raw?: ServerResponse }>();
  return {
    request,
    incoming: request.raw ?? (request as unknown as IncomingMessage),
    response: response.raw ?? response,
  };
}

/**
 * The neutral message view of the request: target URI from the scheme and host the platform
 * answers (its trust-proxy setting decides whether X-Forwarded-* count) and the original URL.
 */
export function platformRequestMessage(
  request: PlatformRequest,
  incoming: IncomingMessage,
  body: Uint8Array | undefined,
): RequestMessage {
  // The guard and the response-signing interceptor share one view (as @kms/express does), so
  // the target is rebuilt and its URL parsed once per request.
  const known = messages.get(request);
  if (known !== undefined && known.body === body) return known;
  const message = nodeRequestMessage(platformRequest(request, incoming), body);
  messages.set(request, message);
  return message;
}

const messages = new WeakMap<PlatformRequest, RequestMessage>();

const EMPTY = new Uint8Array(0);

// Bodies the guard read from the stream itself: the bytes as sent, whatever their coding.
const readFromStream = new WeakMap<PlatformRequest, Uint8Array>();

/**
 * Whether the request's content is coded (gzip, deflate, br…). Nest's parsers (body-parser under
 * Express) undo the coding before they keep `rawBody`, while Content-Digest covers the coded
 * bytes (RFC 9530 §2): what they kept is then not the body as sent. body-parser reads a missing
 * or empty field as identity, as @kms/express's `captureRawBody` does.
 */
function contentCoded(request: PlatformRequest): boolean {
  const coding = request.headers["content-encoding"];
  return coding !== undefined && coding !== "" && coding.toLowerCase() !== "identity";
}

/**
 * The raw body as sent, when known: read by the guard, or kept by Nest (`rawBody: true`) for a
 * body without a content coding (a coded one Nest keeps decoded, which no digest covers).
 */
export function keptRawBody(request: PlatformRequest): Uint8Array | undefined {
  const read = readFromStream.get(request);
  if (read !== undefined) return read;
  if (!(request.rawBody instanceof Uint8Array) || contentCoded(request)) return undefined;
  return request.rawBody;
}

/**
 * The raw request body: the one Nest kept (`rawBody: true`), or — when no parser consumed the
 * stream (e.g. text/plain, which Nest does not parse) — read from the stream now and left in
 * `request.rawBody`. Undefined when a parser decoded a Content-Encoding: the bytes as sent are
 * gone, so only a signature whose digest needs them fails (401 `content-digest`), as in
 * @kms/express.
 * @throws ValidationException when the body exceeds `limit` bytes or a parser consumed it
 * without keeping a raw copy.
 */
export async function readRawBody(
  request: PlatformRequest,
  incoming: IncomingMessage,
  limit: number,
): Promise<Uint8Array | undefined> {
  const kept = keptRawBody(request);
  if (kept !== undefined) return kept;
  if (incoming.readableDidRead) {
    if (contentCoded(request)) return undefined;
    throw new ValidationError(
      '"body" was consumed by a body parser that kept no raw copy; create the app with ' +
        "{ rawBody: true }: NestFactory.create(AppModule, { rawBody: true }), or " +
        "NestFactory.create(AppModule, new FastifyAdapter(), { rawBody: true }) and " +
        "app.useBodyParser(type) for each signed type other than JSON and forms",
    );
  }
  // RFC 9112 §6.3: a request with neither Content-Length nor Transfer-Encoding has no body.
  if (
    incoming.headers["content-length"] === undefined &&
    incoming.headers["transfer-encoding"] === undefined
  ) {
    return EMPTY;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of incoming) {
    const buf = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
    size += buf.length;
    if (size > limit) throw new ValidationError(`"body" exceeds the ${limit}-byte limit`);
    chunks.push(buf);
  }
  const body = Buffer.concat(chunks);
  request.rawBody = body;
  readFromStream.set(request, body);
  return body;
}
