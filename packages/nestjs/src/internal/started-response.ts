/**
 * What an exception filter can still do with a response an error reached after its head left
 * (a handler that wrote through `@Res()`, flushed its head, or ended the response): no status
 * or header can be set any more, and `reply()` would throw "Cannot set headers after they are
 * sent" from inside the filter.
 */

/** The Node response (HTTP/1 or HTTP/2 compatibility) as far as this module uses it. */
interface NodeResponse {
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  destroy(): unknown;
}

/**
 * - `unsent`: nothing left yet; the filter answers as usual.
 * - `aborted`: the head (and maybe part of the body) left; the exchange was cut off.
 * - `complete`: the handler ended the response before it threw; it was left as it was.
 */
export type LateOutcome = "unsent" | "aborted" | "complete";

/**
 * Cuts off a started response so the client sees a failed exchange rather than a whole one,
 * as Node and Express (finalhandler) do for an error after the head was sent: ending it would
 * close a chunked body with its terminating chunk and make a truncated body look complete.
 * Destroying the Node response closes the HTTP/1 connection without that chunk (a short
 * Content-Length body stays short) and resets an HTTP/2 stream. A response the handler had
 * already ended is whole, and destroying it could only drop bytes still in the socket's
 * buffer, so it is left alone. Express's response is Node's own; Fastify's wraps it in `.raw`.
 */
export function abortStartedResponse(response: unknown): LateOutcome {
  const node = nodeResponse(response);
  if (node === undefined || !node.headersSent) return "unsent";
  if (node.writableEnded) return "complete";
  node.destroy();
  return "aborted";
}

/** The log line's lead for an error that reached a filter after the response started. */
export function lateErrorNote(outcome: Exclude<LateOutcome, "unsent">): string {
  return outcome === "aborted"
    ? "Error thrown after the response had started: connection aborted, the client got a truncated response"
    : "Error thrown after the response had been sent: the client got the response as sent";
}

function nodeResponse(response: unknown): NodeResponse | undefined {
  if (typeof response !== "object" || response === null) return undefined;
  const raw: unknown = (response as { raw?: unknown }).raw;
  const node = typeof raw === "object" && raw !== null ? raw : response;
  return isNodeResponse(node) ? node : undefined;
}

function isNodeResponse(value: object): value is NodeResponse {
  const candidate = value as Partial<Record<keyof NodeResponse, unknown>>;
  return (
    typeof candidate.headersSent === "boolean" &&
    typeof candidate.writableEnded === "boolean" &&
    typeof candidate.destroy === "function"
  );
}
