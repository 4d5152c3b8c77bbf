import type { IncomingMessage } from "node:http";
import { ProtocolError } from "./protocol-error.ts";

function tooLarge(maxBytes: number): ProtocolError {
  return new ProtocolError(
    "RequestEntityTooLargeException",
    `the request body exceeds the limit of ${maxBytes} bytes`,
  );
}

/**
 * Reads the whole body, holding at most `maxBytes`. A declared Content-Length above the limit is
 * refused before any byte is read; a chunked body is refused as soon as it passes the limit, and
 * what the client still sends is discarded, not kept. How long a slow client may take is the
 * server's `requestTimeout` (createKmsServer sets 30 s).
 * @throws ProtocolError RequestEntityTooLargeException, SerializationException (the client
 *   went away or sent a malformed body).
 */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  if (req.readableEnded) {
    // Waiting would hang until the server's timeout; the operator needs to know why instead.
    return Promise.reject(
      new ProtocolError(
        "KMSInternalException",
        "the request body was consumed before the KMS handler ran: mount it before body parsers",
      ),
    );
  }
  if (req.destroyed) {
    // The client went away while the headers were checked: "close" has already been emitted and
    // would never settle the promise below.
    return Promise.reject(
      new ProtocolError("SerializationException", "the request body could not be read"),
    );
  }
  const declared = req.headers["content-length"];
  if (declared !== undefined && Number(declared) > maxBytes) {
    req.resume();
    return Promise.reject(tooLarge(maxBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const cleanup = (): void => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    const onData = (chunk: Buffer): void => {
      total += chunk.length;
      if (total > maxBytes) {
        cleanup();
        for (const c of chunks) c.fill(0);
        chunks.length = 0;
        // Keep draining so the response can be delivered; nothing more is stored.
        req.resume();
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      const body = Buffer.concat(chunks, total);
      for (const c of chunks) c.fill(0);
      resolve(body);
    };
    const onError = (): void => {
      cleanup();
      reject(new ProtocolError("SerializationException", "the request body could not be read"));
    };
    // A client that goes away mid-body: the response has nowhere to go, but the promise settles.
    const onClose = onError;
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("error", onError);
    req.on("close", onClose);
  });
}
