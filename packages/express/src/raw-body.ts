/**
 * Raw request body capture. Signature verification needs the body bytes exactly as sent, which
 * body parsers throw away; their `verify` hook is the one place they show them.
 */
import type { IncomingMessage } from "node:http";
import { ValidationError } from "@kms/core";
import { existingRequestState, requestState } from "./request-state.ts";

const EMPTY = new Uint8Array(0);

/**
 * Pass as the `verify` option of `express.json()`, `express.raw()`, `express.text()` or
 * `express.urlencoded()` so `verifySignature` sees the bytes the parser consumed:
 * `app.use(express.json({ verify: captureRawBody }))`. A body sent with a Content-Encoding is
 * not captured: the parser shows it decoded, and Content-Digest covers the encoded bytes.
 */
export function captureRawBody(req: IncomingMessage, _res: unknown, buffer: Buffer): void {
  const state = requestState(req);
  // body-parser reads a missing or empty Content-Encoding as identity and refuses codings it
  // cannot undo, so any other value here means `buffer` is the decoded content (RFC 9530 §2).
  const coding = req.headers["content-encoding"];
  if (coding !== undefined && coding !== "" && coding.toLowerCase() !== "identity") {
    state.bodyDecoded = true;
    return;
  }
  state.rawBody = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}

/** Whether a body parser decoded the body's Content-Encoding, so its raw bytes are gone. */
export function bodyDecoded(req: IncomingMessage): boolean {
  return existingRequestState(req)?.bodyDecoded === true;
}

/** The captured raw body of `req`, or undefined when nothing captured it. */
export function rawBodyOf(req: IncomingMessage): Uint8Array | undefined {
  return existingRequestState(req)?.rawBody;
}

/**
 * The raw body when it is known without reading the stream: the captured one, or empty for a
 * request that has no body (RFC 9112 §6.3). Undefined when the stream must be read.
 */
export function knownRawBody(req: IncomingMessage): Uint8Array | undefined {
  const captured = existingRequestState(req)?.rawBody;
  if (captured !== undefined) return captured;
  if (
    !req.readableDidRead &&
    req.headers["content-length"] === undefined &&
    req.headers["transfer-encoding"] === undefined
  ) {
    return EMPTY;
  }
  return undefined;
}

/**
 * The raw body: the captured one, or — when no parser has consumed the stream — read from the
 * stream now (and remembered). A body parser placed after this will then see an empty stream.
 * @throws ValidationException when the body exceeds `limit` bytes or the stream was consumed
 * by a parser that did not capture it or that decoded its Content-Encoding.
 */
export async function readRawBody(req: IncomingMessage, limit: number): Promise<Uint8Array> {
  const captured = existingRequestState(req)?.rawBody;
  if (captured !== undefined) return captured;
  if (bodyDecoded(req)) {
    throw new ValidationError(
      '"body" was decoded from its Content-Encoding by the body parser; the bytes as sent are gone',
    );
  }
  if (req.readableDidRead) {
    throw new ValidationError(
      '"body" was consumed without captureRawBody; pass { verify: captureRawBody } to the body parser',
    );
  }
  // RFC 9112 §6.3: a request with neither Content-Length nor Transfer-Encoding has no body.
  if (
    req.headers["content-length"] === undefined &&
    req.headers["transfer-encoding"] === undefined
  ) {
    return EMPTY;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = typeof chunk === "string" ? Buffer.from(chunk) : (chunk as Buffer);
    size += buf.length;
    if (size > limit) throw new ValidationError(`"body" exceeds the ${limit}-byte limit`);
    chunks.push(buf);
  }
  const body = new Uint8Array(Buffer.concat(chunks));
  requestState(req).rawBody = body;
  return body;
}
